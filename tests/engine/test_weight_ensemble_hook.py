"""WeightEnsembleHook in a real mmengine Runner on a toy model (spec §5.4, §10.14)."""
import copy
import logging
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from densevlm_mm.engine.hooks.weight_ensemble_hook import CKPT_KEY, WeightEnsembleHook

ALPHA = 0.7


class ToyModel(BaseModel):
    """``backbone`` (Linear + BatchNorm: float and integer buffers) and a ``head``."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.head = nn.Linear(4, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        out = self.head(self.backbone(torch.stack(inputs))).squeeze(1)
        if mode == 'loss':
            return dict(loss=((out - torch.stack(targets)) ** 2).mean())
        # what validation sees: the backbone weights at that moment
        return [dict(weight=self.backbone[0].weight.detach().clone(),
                     running_mean=self.backbone[1].running_mean.clone())]


class ToyDataset(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, generator=g)
        self.y = torch.randn(n, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], targets=self.y[i])


class RecordWeights(BaseMetric):
    seen: list = []

    def process(self, data_batch, data_samples):
        if not self.results:
            self.results.append(data_samples[0])

    def compute_metrics(self, results):
        RecordWeights.seen.append(results[0])
        return dict(recorded=1.0)


def _runner(work_dir, hook, **kw):
    loader = dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=4, num_workers=0)
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=loader, val_dataloader=dict(loader, batch_size=8),
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1), val_cfg=dict(),
        val_evaluator=[RecordWeights()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[hook], randomness=dict(seed=0), default_scope='densevlm_mm',
        experiment_name=f'weight_ensemble_{osp.basename(str(work_dir))}_{id(hook)}', **kw)


def _allow_mmengine_checkpoints(monkeypatch):
    """Resume as tools/train.py does (weights_only=True plus mmengine's message-hub types)."""
    from densevlm_mm.utils.checkpoint import allow_mmengine_checkpoint_meta
    allow_mmengine_checkpoint_meta()


def _blend(student, original):
    return {k: (ALPHA * v + (1 - ALPHA) * original[k]) if v.is_floating_point() else v
            for k, v in student.items()}


def _backbone(state):
    return {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}


def _assert_close(a, b, exact_int=True):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


def test_saved_and_validated_weights_are_the_blend_and_resume_continues_the_student(
        tmp_path, monkeypatch):
    RecordWeights.seen = []
    runner = _runner(tmp_path / 'run', WeightEnsembleHook(alpha=ALPHA))
    original = copy.deepcopy(runner.model.backbone.state_dict())
    runner.train()
    live = runner.model.backbone.state_dict()
    ckpt1 = torch.load(osp.join(runner.work_dir, 'epoch_1.pth'), weights_only=True)
    ckpt2 = torch.load(osp.join(runner.work_dir, 'epoch_2.pth'), weights_only=True)

    # epoch 2: saved backbone = alpha·student + (1-alpha)·original; the live model is the student
    _assert_close(_backbone(ckpt2['state_dict']), _blend(live, original))
    assert ckpt2['state_dict']['backbone.1.num_batches_tracked'].item() == 4  # student's, 2 × 2
    assert not torch.allclose(live['0.weight'], ckpt2['state_dict']['backbone.0.weight'])
    torch.testing.assert_close(ckpt2['state_dict']['head.weight'], runner.model.head.weight.data)
    record = ckpt2[CKPT_KEY]
    assert record['ensembled'] and record['alpha'] == ALPHA and record['module'] == 'backbone'
    _assert_close(record['student'], {k: v for k, v in live.items() if v.is_floating_point()})
    _assert_close(record['original'], {k: v for k, v in original.items()
                                       if v.is_floating_point()})

    # epoch 1: the blend of the student after epoch 1 (kept in the checkpoint for resuming)
    student1 = dict(ckpt1[CKPT_KEY]['student'], **{'1.num_batches_tracked': torch.tensor(2)})
    _assert_close(_backbone(ckpt1['state_dict']), _blend(student1, original))

    # validation ran on the blend, after each epoch
    assert len(RecordWeights.seen) == 2
    for seen, ckpt in zip(RecordWeights.seen, (ckpt1, ckpt2)):
        torch.testing.assert_close(seen['weight'], ckpt['state_dict']['backbone.0.weight'])
        torch.testing.assert_close(seen['running_mean'],
                                   ckpt['state_dict']['backbone.1.running_mean'])

    # the record is readable with weights_only=True
    torch.save(ckpt2[CKPT_KEY], str(tmp_path / 'record.pth'))
    torch.load(str(tmp_path / 'record.pth'), weights_only=True)

    # resuming from epoch 1 continues from the un-ensembled student and gives the same result
    _allow_mmengine_checkpoints(monkeypatch)
    resumed = _runner(tmp_path / 'resumed', WeightEnsembleHook(alpha=ALPHA),
                      resume=True, load_from=osp.join(runner.work_dir, 'epoch_1.pth'))
    resumed.train()
    _assert_close(resumed.model.backbone.state_dict(), live)
    again = torch.load(osp.join(resumed.work_dir, 'epoch_2.pth'), weights_only=True)
    _assert_close(_backbone(again['state_dict']), _backbone(ckpt2['state_dict']))


def test_alpha_one_is_off_and_original_file(tmp_path):
    runner = _runner(tmp_path / 'off', WeightEnsembleHook(alpha=1.0))
    runner.train()
    ckpt = torch.load(osp.join(runner.work_dir, 'epoch_2.pth'), weights_only=True)
    assert CKPT_KEY not in ckpt
    _assert_close(_backbone(ckpt['state_dict']), runner.model.backbone.state_dict())

    # the original from a file: an mmengine checkpoint of the whole model
    model = ToyModel(seed=3)
    path = str(tmp_path / 'orig.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    hook = WeightEnsembleHook(alpha=0.5, original=path)
    fake = SimpleNamespace(model=ToyModel(seed=4), epoch=0,
                           logger=MMLogger.get_instance('weight_ensemble_test'), _resume=False)
    student = copy.deepcopy(fake.model.backbone.state_dict())
    hook.before_train(fake)
    hook.after_train_epoch(fake)
    expected = {k: (0.5 * v + 0.5 * model.backbone.state_dict()[k])
                if v.is_floating_point() else v for k, v in student.items()}
    _assert_close(fake.model.backbone.state_dict(), expected)
    checkpoint = {}
    hook.before_save_checkpoint(fake, checkpoint)
    assert checkpoint[CKPT_KEY]['original'] is None  # it comes from the file
    hook.before_train_epoch(fake)
    _assert_close(fake.model.backbone.state_dict(), student)


def test_bad_configuration_is_reported(tmp_path):
    with pytest.raises(ValueError, match='alpha'):
        WeightEnsembleHook(alpha=-0.1)
    fake = SimpleNamespace(model=ToyModel(), logger=logging.getLogger('x'), _resume=False)
    with pytest.raises(AttributeError, match="no submodule 'student'.*backbone"):
        WeightEnsembleHook(alpha=0.5, module='student').before_train(fake)
    path = str(tmp_path / 'partial.pth')
    torch.save({'0.weight': torch.zeros(4, 3)}, path)  # a backbone state dict missing keys
    with pytest.raises(KeyError, match='partial.pth.*missing'):
        WeightEnsembleHook(alpha=0.5, original=path).before_train(fake)
