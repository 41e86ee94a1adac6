"""Train a model of densevlm_mm with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr] [--resume [CKPT]]
                                 [--no-strict] [--cfg-options k=v ...]
                                 [--launcher none|pytorch|slurm|mpi]

The arguments are those of mmdet 3.x's ``tools/train.py``, plus ``--no-strict`` (a ``load_from``
checkpoint is loaded strictly: a key mismatch stops the run with the key accounting). Several
processes: ``tools/dist_train.sh`` (NCCL on GPUs, gloo on a machine without CUDA); Slurm:
``tools/slurm_train.sh``. The console shows the training log; the environment, the full config
and the hook order are in the log file of the work dir. A work dir is held by one training at a
time (rank 0 locks ``<work_dir>/.train.lock``; the lock ends with its process, so a crashed run
can be resumed). ``--cfg-options`` keys that would change nothing (misspelt, or a variable of the
config file) are refused.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a densevlm_mm model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (fp16 with dynamic loss scaling on a GPU, '
        'bfloat16 autocast on a machine without an accelerator)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR by '
        '(total batch size) / auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto resume '
        'from the latest checkpoint in the work directory.')
    parser.add_argument(
        '--no-strict',
        action='store_true',
        help='with `load_from` in the config: load the checkpoint\'s matching keys and only log '
        'the missing / unexpected ones (default: stop with the key accounting; the config option '
        '`load_strict = False` does the same)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action='extend',
        help='override some settings in the used config, the key-value pair in xxx=yyy format will '
        'be merged into config file. If the value to be overwritten is a list, it should be like '
        'key="[a,b]" or key=a,b It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]" Note that the quotation marks are necessary. A single value may hold '
        'spaces (quote the pair: \'data_root=/my data\'); list elements may not. Keys that the '
        'config does not have (misspelt) are refused, see docs/en/faq.md.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch / torchrun of PyTorch >= 2.0 pass `--local-rank`; older ones
    # `--local_rank`.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def fail(message: str) -> None:
    """Exit with status 1 and ``message`` on stderr (no traceback: the user's input is wrong)."""
    sys.exit(f'{osp.basename(sys.argv[0]) or "train.py"}: error: {message}')


def load_before_training(runner, checkpoint: str, strict: bool) -> None:
    """Load ``load_from`` where mmengine would (after the weight initialisation, which may load
    ``init_cfg`` weights, and before the first hook of training), but strictly."""
    from mmengine.hooks import Hook

    from densevlm_mm.utils.checkpoint import load_weights_strictly

    class LoadCheckpointStrictly(Hook):
        priority = 'HIGHEST'

        def before_train(self, runner) -> None:
            load_weights_strictly(runner.model, checkpoint, strict)

    runner.register_hook(LoadCheckpointStrictly(), priority='HIGHEST')


def check_train_dataloader(runner, config: str) -> None:
    """A training set smaller than one batch (``drop_last``) gives no iteration; say so here
    rather than let mmengine's LR scheduler fail on an empty epoch."""
    loader = runner.train_loop.dataloader
    try:
        if len(loader) > 0:
            return
    except TypeError:  # an iterable dataset without a length
        return
    dataset = loader.dataset
    source = getattr(dataset, 'ann_file', None) or getattr(dataset, 'data_root', None) or \
        type(dataset).__name__
    fail(f'the training set {source!r} has {len(dataset)} samples per process, fewer than one '
         f'batch (train_dataloader.batch_size={loader.batch_size}, drop_last=True), so an epoch '
         f'has no iteration. Use more images, or a smaller batch: --cfg-options '
         f'train_dataloader.batch_size={max(1, len(dataset))} (config {config}).')


def setup_dynamo_cache_size_limit() -> None:
    """``DYNAMO_CACHE_SIZE_LIMIT=N`` sets ``torch._dynamo.config.cache_size_limit`` (as mmdet)."""
    if 'DYNAMO_CACHE_SIZE_LIMIT' in os.environ:
        import torch._dynamo
        torch._dynamo.config.cache_size_limit = int(os.environ['DYNAMO_CACHE_SIZE_LIMIT'])
        print(f'torch._dynamo.config.cache_size_limit is set to '
              f'{torch._dynamo.config.cache_size_limit}', file=sys.stderr)


def enable_amp(cfg: Config) -> None:
    """Switch ``cfg.optim_wrapper`` to automatic mixed precision.

    With CUDA (or NPU/MLU/MUSA) this is mmdet's ``AmpOptimWrapper`` with ``loss_scale='dynamic'``.
    mmengine's ``AmpOptimWrapper`` refuses to be built without an accelerator (an assertion in its
    ``__init__``), while mmengine's ``autocast`` supports CPU with bfloat16 only; so on CPU the
    wrapper is :class:`CPUAmpOptimWrapper`: bfloat16 autocast, no loss scaling (bf16 has the fp32
    exponent range, so it is not needed).
    """
    from mmengine.device import get_device
    if cfg.get('optim_wrapper') is None:
        fail('--amp needs an `optim_wrapper` in the config.')
    if get_device() in ('cuda', 'npu', 'mlu', 'musa'):
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')  # a config's own scale is kept
        return
    cfg.optim_wrapper.type = 'densevlm_mm.CPUAmpOptimWrapper'
    cfg.optim_wrapper.pop('loss_scale', None)
    dtype = cfg.optim_wrapper.get('dtype', None)
    if dtype not in (None, 'bfloat16'):
        print(f'note: --amp on CPU: optim_wrapper.dtype={dtype!r} is replaced by bfloat16, the '
              'only dtype of CPU autocast.', file=sys.stderr)
    cfg.optim_wrapper.dtype = 'bfloat16'
    print('note: --amp without CUDA: mmengine\'s AmpOptimWrapper needs an accelerator; training '
          'uses CPUAmpOptimWrapper (bfloat16 autocast, no loss scaling).', file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    setup_dynamo_cache_size_limit()

    if not osp.isfile(args.config):
        fail(f'config file not found: {args.config}')
    if args.resume not in (None, 'auto') and '://' not in args.resume \
            and not osp.isfile(args.resume):
        fail(f'--resume checkpoint file not found: {args.resume}')
    cfg = Config.fromfile(args.config)

    cfg.launcher = args.launcher
    from densevlm_mm.utils.cfg_options import merge_cfg_options
    try:
        merge_cfg_options(cfg, args.cfg_options)  # refuses keys that would change nothing
    except ValueError as exc:
        fail(str(exc))

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.auto_scale_lr:
        scale_cfg = cfg.get('auto_scale_lr', None)
        if not scale_cfg or scale_cfg.get('base_batch_size', None) is None:
            fail('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, base_batch_size=N)` in '
                 f'the config ({args.config} has no auto_scale_lr.base_batch_size), where N is the '
                 'total batch size (GPUs x samples per GPU) the learning rate of the config is '
                 'for.')
        cfg.auto_scale_lr.enable = True

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    # `load_from` without resume: loaded here, strictly (mmengine's Runner would load it with
    # strict=False and only log the mismatching keys)
    load_from = None
    if cfg.get('load_from') and not cfg.get('resume', False):
        load_from, cfg.load_from = cfg.load_from, None
        if '://' not in load_from and not osp.isfile(load_from):
            fail(f'load_from checkpoint file not found: {load_from}')
    strict = not args.no_strict and cfg.get('load_strict', True)

    # imported after the checks of the arguments so that `--help` and argument errors are fast
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=False)  # also allows mmengine's checkpoint meta
    from densevlm_mm.engine import WorkDirInUseError, hold_work_dir

    config_amp = str(cfg.get('optim_wrapper', {}).get('type', '')).split('.')[-1] == \
        'AmpOptimWrapper'
    if args.amp or config_amp:
        # the reference configs name AmpOptimWrapper: on a machine without a GPU it becomes the
        # CPU bf16 wrapper instead of failing mmengine's accelerator assertion
        enable_amp(cfg)

    try:
        with hold_work_dir(cfg.work_dir, args.launcher):  # rank 0: one training per work dir
            train(cfg, args, load_from, strict)
    except WorkDirInUseError as exc:
        fail(str(exc))


def train(cfg: Config, args, load_from, strict: bool) -> None:
    """Build the Runner (distributed set-up first) and train."""
    from mmengine.runner import Runner

    from densevlm_mm.engine import (DataEpochHook, concise_runner_class, finish_distributed,
                                    setup_distributed)
    from densevlm_mm.registry import RUNNERS
    from densevlm_mm.utils.checkpoint import CheckpointError
    try:
        setup_distributed(cfg, args.launcher)
    except ValueError as exc:
        fail(str(exc))
    if 'runner_type' not in cfg:
        runner = concise_runner_class(Runner).from_cfg(cfg)
    else:
        # a customized runner from the registry if `runner_type` is set in the config
        runner = RUNNERS.build(cfg)

    runner.register_hook(DataEpochHook(), priority='VERY_HIGH')  # exact resume
    check_train_dataloader(runner, args.config)
    if load_from is not None:
        load_before_training(runner, load_from, strict)
    try:
        runner.train()
    except CheckpointError as exc:  # load_from: a missing or unreadable file, other keys
        fail(str(exc))
    finish_distributed()

if __name__ == '__main__':
    main()
