"""Weight-space ensembling of the trained student with its initial weights (spec §5.4).

After each training epoch the reference saves and evaluates ``alpha·student + (1−alpha)·original``
(DenseVLM: alpha 0.9; CLIPSelf / RegionCLIP: 0.7 for ViT-B, 0.95 for ViT-L) while training goes
on with the un-ensembled student. Unlike the reference, integer tensors (BN ``num_batches_tracked``)
are taken from the student instead of being blended (spec §10.14).
"""
from typing import Dict, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from densevlm_mm.registry import HOOKS
from densevlm_mm.utils.checkpoint import load_checkpoint_file
from densevlm_mm.utils.checks import check_number

CKPT_KEY = 'weight_ensemble'


@HOOKS.register_module()
class WeightEnsembleHook(Hook):
    """Save and validate ``alpha·student + (1−alpha)·original`` after every epoch.

    Sequence per epoch (priority ``NORMAL``, so it runs before ``CheckpointHook``, ``VERY_LOW``):

    * ``after_train_epoch``: the floating-point parameters and buffers of ``module`` are replaced
      in place by the blend; the student's own values are kept (on ``backup_device``). The
      checkpoint of this epoch and the validation that follows see the blend (a ``save_best``
      checkpoint too, as it is written during validation).
    * ``before_train_epoch`` / ``after_train``: the student's values are put back, so training
      continues from them and ``runner.train()`` returns the un-ensembled student.

    ``original`` is the student at the start of training (after ``load_from``), copied to the CPU
    in ``before_train``, or the weights in the file ``original``. Checkpoints carry, under
    ``'weight_ensemble'``, the student's own values (when the blend was saved) and the original
    (unless it comes from a file), so that resuming continues from the un-ensembled student and
    blends with the same original. Loading a checkpoint with ``load_from`` (not resuming) starts
    from the blend that the checkpoint holds.

    Works for epoch-based training only (the blend is made at epoch ends).

    Args:
        alpha: weight of the student; ``alpha >= 1`` switches the hook off (reference default 2.0).
        original: checkpoint file of the original weights: an mmengine checkpoint of the whole
            model (keys ``<module>.*`` are taken) or a state dict of ``module`` itself.
        module: dotted name of the submodule to blend in the (unwrapped) model; ``''`` or
            ``None`` for the whole model.
        backup_device: where the student's values wait while the blend is loaded.
    """

    priority = 'NORMAL'

    def __init__(self,
                 alpha: float = 1.0,
                 original: Optional[str] = None,
                 module: Optional[str] = 'backbone',
                 backup_device: str = 'cpu') -> None:
        self.alpha = check_number(alpha, 'alpha', 'WeightEnsembleHook', low=0, example=0.9)
        self.enabled = self.alpha < 1
        self.original_path = original
        self.module = module or ''
        self.backup_device = backup_device
        self._original: Optional[Dict[str, torch.Tensor]] = None
        self._student: Optional[Dict[str, torch.Tensor]] = None  # set while the blend is loaded

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        if not self.enabled:
            return
        target = self._target(runner)
        if self.original_path:
            source = repr(self.original_path)
            if self._original is None:
                self._original = self._load_original(target)
        elif self._original is not None:
            source = 'the resumed checkpoint'
        else:
            if getattr(runner, '_resume', False):
                runner.logger.warning(
                    'WeightEnsembleHook: the resumed checkpoint has no original weights '
                    f'(key "{CKPT_KEY}"); the resumed weights are used as the original')
            self._original = {k: t.detach().to('cpu', copy=True)
                              for k, t in self._float_tensors(target).items()}
            source = 'the weights at the start of training'
        self._check_original(target)
        runner.logger.info(f'WeightEnsembleHook: after each epoch, saving and validating '
                           f'{self.alpha:g}·student + {1 - self.alpha:g}·original for '
                           f'{self._name()} (original: {source})')

    def before_train_epoch(self, runner) -> None:
        self._restore_student(runner)

    def after_train_epoch(self, runner) -> None:
        if not self.enabled or self._student is not None:
            return
        target = self._target(runner)
        student = {}
        with torch.no_grad():
            for key, tensor in self._float_tensors(target).items():
                student[key] = tensor.detach().to(self.backup_device, copy=True)
                original = self._original[key].to(tensor.device, torch.float32)
                tensor.copy_(tensor.to(torch.float32) * self.alpha + original * (1 - self.alpha))
        self._student = student
        runner.logger.info(f'WeightEnsembleHook: epoch {runner.epoch + 1}: {self._name()} holds '
                           f'{self.alpha:g}·student + {1 - self.alpha:g}·original until the next '
                           'epoch starts')

    def after_train(self, runner) -> None:
        self._restore_student(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.enabled:
            return
        checkpoint[CKPT_KEY] = dict(
            alpha=self.alpha,
            module=self.module,
            ensembled=self._student is not None,
            student=({k: v.cpu() for k, v in self._student.items()}
                     if self._student is not None else None),
            original=self._original if not self.original_path else None,
            original_path=self.original_path)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume, put the student's own values into the state dict about to be loaded
        (mmengine calls this hook before loading the weights) and take the original back."""
        if not self.enabled or not getattr(runner, '_resume', False):
            return
        record = checkpoint.get(CKPT_KEY)
        if record is None:
            return  # warned in before_train when it matters
        if record.get('alpha') != self.alpha:
            runner.logger.warning(f'WeightEnsembleHook: alpha {self.alpha} differs from the '
                                  f'resumed checkpoint\'s {record.get("alpha")}')
        if record.get('ensembled') and record.get('student') is not None:
            prefix = f'{record.get("module") or ""}.'.lstrip('.')
            state = checkpoint['state_dict']
            for key, value in record['student'].items():
                state[prefix + key] = value
        if record.get('original') is not None and not self.original_path:
            self._original = {k: v.to('cpu') for k, v in record['original'].items()}

    # ------------------------------------------------------------------ helpers
    def _restore_student(self, runner) -> None:
        if self._student is None:
            return
        with torch.no_grad():
            for key, tensor in self._float_tensors(self._target(runner)).items():
                tensor.copy_(self._student[key])
        self._student = None

    def _name(self) -> str:
        return f'"{self.module}"' if self.module else 'the model'

    def _target(self, runner) -> nn.Module:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not self.module:
            return model
        try:
            return model.get_submodule(self.module)
        except AttributeError:
            children = [name for name, _ in model.named_children()]
            raise AttributeError(f'WeightEnsembleHook: {type(model).__name__} has no submodule '
                                 f'{self.module!r} (children: {children})') from None

    @staticmethod
    def _float_tensors(module: nn.Module) -> Dict[str, torch.Tensor]:
        """The live floating-point tensors of the state dict (tied ones once)."""
        keys = set(module.state_dict().keys())
        named = dict(module.named_parameters())
        named.update(module.named_buffers())
        return {k: t for k, t in named.items() if k in keys and t.is_floating_point()}

    def _load_original(self, target: nn.Module) -> Dict[str, torch.Tensor]:
        state = load_checkpoint_file(self.original_path)
        prefix = f'{self.module}.' if self.module else ''
        if prefix and any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        return {k: v.detach().to('cpu') for k, v in state.items() if torch.is_tensor(v)}

    def _check_original(self, target: nn.Module) -> None:
        live = self._float_tensors(target)
        missing = [k for k in live if k not in self._original]
        wrong = [k for k in live if k in self._original
                 and tuple(self._original[k].shape) != tuple(live[k].shape)]
        if missing or wrong:
            where = repr(self.original_path) if self.original_path else 'the saved original'
            raise KeyError(f'WeightEnsembleHook: {where} does not match {self._name()}: '
                           f'{len(missing)} missing (first: {missing[:5]}), {len(wrong)} of '
                           f'another shape (first: {wrong[:5]})')
