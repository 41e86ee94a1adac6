"""Test (and evaluate) a checkpoint of a densevlm_mm model with mmengine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show-dir DIR]
        [--no-strict] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

The arguments are those of mmdet 3.x's ``tools/test.py``, plus ``--no-strict``: the checkpoint is
loaded strictly, and a key mismatch (a checkpoint of another backbone, a raw open_clip state dict)
stops with the key accounting instead of evaluating an untrained model. Several processes:
``tools/dist_test.sh`` (NCCL on GPUs, gloo without CUDA); Slurm: ``tools/slurm_test.sh``. The
console shows the progress and the result table; the environment, the full config and the hook
order are in the log file of the work dir. ``--cfg-options`` keys that would change nothing
(misspelt, or a variable of the config file) are refused (docs/en/faq.md).
"""
import argparse
import inspect
import os
import os.path as osp
import sys

from mmengine.config import Config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a densevlm_mm model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out', type=str, help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved (relative to work_dir/timestamp for '
        'mmdet-style visualization hooks); needs `default_hooks.visualization` in the config')
    parser.add_argument(
        '--no-strict',
        action='store_true',
        help='load the matching keys of the checkpoint and only log the missing / unexpected ones '
        '(default: stop with the key accounting; the config option `load_strict = False` does the '
        'same)')
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
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out must name a .pkl or .pickle file, got {args.out}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def fail(message: str) -> None:
    """Exit with status 1 and ``message`` on stderr (no traceback: the user's input is wrong)."""
    sys.exit(f'{osp.basename(sys.argv[0]) or "test.py"}: error: {message}')


def enable_visualization(cfg: Config, show_dir: str) -> bool:
    """Make the config's visualization hook draw and save to ``show_dir``.

    Where the images go depends on the hook's arguments: ``test_out_dir`` (mmdet's
    ``DetVisualizationHook``, relative to ``work_dir/<timestamp>``), ``out_dir`` with ``enable``
    (mmpretrain's ``VisualizationHook``), or else the visualizer's ``save_dir`` (mmseg's
    ``SegVisualizationHook``). A config without ``default_hooks.visualization`` is left unchanged
    and a message says so (returns False).
    """
    vis_hook = (cfg.get('default_hooks') or {}).get('visualization')
    if not vis_hook:
        print(f'--show-dir is ignored: this config has no visualizer (no '
              f'`default_hooks.visualization` hook), so nothing is drawn to {show_dir}.',
              file=sys.stderr)
        return False
    params = _init_params(vis_hook.get('type'), cfg.get('default_scope', None))
    if params is None or 'test_out_dir' in params:  # unresolved: mmdet's convention
        vis_hook['test_out_dir'] = show_dir
    elif 'out_dir' in params:
        vis_hook['out_dir'] = show_dir
    elif cfg.get('visualizer'):
        cfg.visualizer['save_dir'] = show_dir
    else:
        print(f'--show-dir is ignored: the hook {vis_hook.get("type")} takes no output folder and '
              'the config has no `visualizer` whose save_dir could be set.', file=sys.stderr)
        return False
    for switch in ('draw', 'enable'):
        if params is None and switch == 'draw' or params is not None and switch in params:
            vis_hook[switch] = True
    return True


def _init_params(hook_type, default_scope=None):
    """Parameters of the hook class's ``__init__``, or None when it cannot be resolved here."""
    from mmengine.registry import HOOKS, DefaultScope
    if inspect.isclass(hook_type):
        cls = hook_type
    else:
        try:
            with DefaultScope.overwrite_default_scope(default_scope):
                cls = HOOKS.get(hook_type)
        except Exception:  # a scope whose package is absent: leave the check to the Runner
            cls = None
    if cls is None:
        return None
    return inspect.signature(cls.__init__).parameters


def write_metrics_json(cfg, checkpoint: str) -> None:
    """Region-classification metrics also go to ``<work_dir>/region_cls_results.json``
    (unless the config names another ``out_file``); the table row is named after the checkpoint."""
    evaluators = cfg.get('test_evaluator')
    for metric in evaluators if isinstance(evaluators, list) else [evaluators]:
        if not (isinstance(metric, dict) and
                metric.get('type', '').split('.')[-1] == 'RegionClassificationMetric'):
            continue
        metric.setdefault('model_name', osp.basename(checkpoint))
        if not metric.get('out_file'):
            metric['out_file'] = osp.join(cfg.work_dir, 'region_cls_results.json')
            print(f'region-classification results will be written to {metric["out_file"]}')


def main(argv=None):
    args = parse_args(argv)

    if not osp.isfile(args.config):
        fail(f'config file not found: {args.config}')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        fail(f'checkpoint file not found: {args.checkpoint}')
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

    # loaded below, strictly (mmengine's Runner would load `load_from` with strict=False and only
    # log the mismatching keys: an untrained model would be evaluated under the checkpoint's name)
    cfg.load_from = None
    strict = not args.no_strict and cfg.get('load_strict', True)

    # imported after the checks of the arguments so that `--help` and argument errors are fast
    from mmengine.evaluator import DumpResults
    from mmengine.runner import Runner

    from densevlm_mm.registry import RUNNERS
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=False)  # also allows mmengine's checkpoint meta
    from densevlm_mm.engine import concise_runner_class, finish_distributed, setup_distributed

    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    write_metrics_json(cfg, args.checkpoint)

    try:
        setup_distributed(cfg, args.launcher)
    except ValueError as exc:
        fail(str(exc))
    if 'runner_type' not in cfg:
        runner = concise_runner_class(Runner).from_cfg(cfg)
    else:
        # a customized runner from the registry if `runner_type` is set in the config
        runner = RUNNERS.build(cfg)
    from densevlm_mm.utils.checkpoint import CheckpointError, load_weights_strictly
    try:
        load_weights_strictly(runner.model, args.checkpoint, strict)
    except CheckpointError as exc:  # a missing or unreadable file, other keys or shapes
        fail(str(exc))

    # add the `DumpResults` metric, which writes the predictions to `--out`
    if args.out is not None:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))

    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
