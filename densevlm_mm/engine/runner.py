"""mmengine's Runner with a console that shows progress, losses and results, and multi-process
runs that work with and without GPUs."""
import logging
import re
import sys
from typing import Optional, Sequence, Type, Union

from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from densevlm_mm.registry import RUNNERS

# Records of the framework's own workings that belong in the log file, not on the console: the
# start-up dumps (hundreds of lines: environment, the whole config, the hook order per stage), the
# optimizer's per-parameter settings, and bookkeeping / deprecation notices of mmengine, mmdet and
# mmseg. Progress, losses and results stay on the console.
_FILE_ONLY = ('\n' + '-' * 60 + '\nSystem environment', 'Config:\n',
              'Hooks will be executed in the following order', 'paramwise_options -- ',
              'Exp name: ', 'Checkpoints will be saved to ', 'Saving checkpoint at ',
              'Distributed training is not used, all SyncBatchNorm',
              '"FileClient" will be deprecated', '"HardDiskBackend" is the alias',
              'The prefix is not set in metric class', 'Evaluating bbox...',
              'bbox_mAP_copypaste: ')


class _FileOnly(logging.Filter):
    """Drops records starting with :data:`_FILE_ONLY` or matching one of ``patterns``."""

    def __init__(self, patterns: Sequence[str] = ()) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith(_FILE_ONLY) or any(p.match(msg) for p in self.patterns))


def concise_runner_class(base: Type[Runner], file_only: Sequence[str] = ()) -> Type[Runner]:
    """A subclass of the Runner class ``base`` whose console leaves out the start-up dumps and
    the framework's bookkeeping, and also records matching the regular expressions ``file_only``
    (``re.match``); the log file in the work dir keeps them all, and the console names it."""

    class ConciseRunner(base):

        def build_logger(self, log_level: Union[int, str] = 'INFO',
                         log_file: Optional[str] = None, **kwargs) -> MMLogger:
            logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
            consoles = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
            for handler in consoles:
                if not any(isinstance(f, _FileOnly) for f in handler.filters):
                    handler.addFilter(_FileOnly(file_only))
            files = [h.baseFilename for h in logger.handlers
                     if isinstance(h, logging.FileHandler)]
            if consoles and files:
                logger.info(f'environment, config and hook order: {files[0]}')
            return logger

    ConciseRunner.__name__ = ConciseRunner.__qualname__ = base.__name__
    return ConciseRunner


DenseVLMRunner = RUNNERS.register_module(name='DenseVLMRunner',
                                         module=concise_runner_class(Runner))
DenseVLMRunner.__doc__ = (
    ':class:`mmengine.runner.Runner` whose console leaves out the start-up dumps (see '
    ':func:`concise_runner_class`). ``DenseVLMRunner.from_cfg(cfg)``, or ``runner_type = '
    '\'DenseVLMRunner\'`` in a config for entries that call ``RUNNERS.build(cfg)``.')


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Multi-process runs without a GPU: gloo, and DDP without ``device_ids``.

    mmengine's launchers call ``torch.cuda.set_device`` and its default DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``; both fail on a machine without CUDA. There the process group is
    initialised here with the gloo backend (mmengine then skips its own initialisation) and the
    model wrapper is built without ``device_ids``. With CUDA nothing changes (NCCL by default).

    Raises:
        ValueError: ``launcher`` is ``slurm`` / ``mpi`` on a machine without CUDA.
    """
    import torch
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ValueError(f'--launcher {launcher} needs CUDA; without a GPU use --launcher pytorch '
                         '(tools/dist_train.sh / dist_test.sh, torchrun), which runs on CPU with '
                         'gloo.')
    import torch.distributed as torch_dist
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}) or {})
    if dist_cfg.get('backend', 'gloo') != 'gloo':
        print(f'note: no CUDA: the distributed backend {dist_cfg["backend"]!r} of the config is '
              'replaced by gloo.', file=sys.stderr)
    dist_cfg['backend'] = 'gloo'
    cfg.setdefault('env_cfg', {})['dist_cfg'] = dist_cfg
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(**dist_cfg)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None  # mmengine's default [LOCAL_RANK] is for GPU modules only
    cfg.model_wrapper_cfg = wrapper


def finish_distributed() -> None:
    """Wait for every process, then shut the process group down (a gloo group left to the
    interpreter's exit can abort a process after its work is done)."""
    import torch.distributed as torch_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
