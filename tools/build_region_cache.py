"""Compute the P-VLM region cache of a config's training set once (issue 20).

    python tools/build_region_cache.py CONFIG [--out DIR] [--mode exact|compact] [--topk K]
        [--batch-size B] [--num-workers W] [--max-images N] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm|mpi]

Several processes: ``bash tools/dist_build_region_cache.sh CONFIG NPROC [args]`` (torchrun; NCCL
on GPUs, gloo on CPU; multi-node with NNODES / NODE_RANK / MASTER_ADDR / PORT as for
``tools/dist_train.sh``). The cache folder is ``--out``, else the config's ``region_cache``
(the ``*_cached.py`` configs set it). Interrupted: run the same command again; finished images are
kept. At the end the storage per image, the COCO / SA-1B estimates and the generation rate are
printed. Train from the cache with the config's ``_cached`` variant (docs/en/user_guides/
region_cache.md).
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Build the P-VLM region cache of a config')
    parser.add_argument('config', help='a DenseVLM config (plain or _cached)')
    parser.add_argument('--out', help='cache folder (default: the config\'s region_cache)')
    parser.add_argument('--mode', choices=['exact', 'compact'], default=None,
                        help='exact: float32 logits; compact: top-k + rest mass per group '
                        '(default: the config\'s region_cache_mode, else exact)')
    parser.add_argument('--topk', type=int, default=None,
                        help='compact: classes kept per cell (default: region_cache_topk or 32)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per P-VLM forward (default: the train dataloader\'s)')
    parser.add_argument('--num-workers', type=int, default=None,
                        help='dataloader workers (default: the train dataloader\'s)')
    parser.add_argument('--max-images', type=int, default=None,
                        help='only the first N images (a timing run)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    for name in ('topk', 'batch_size', 'max_images'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f'--num-workers must be >= 0, got {args.num_workers}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def fail(message: str) -> None:
    sys.exit(f'build_region_cache.py: error: {message}')


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        fail(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    out = args.out or cfg.get('region_cache')
    if not out:
        fail(f'{args.config} sets no `region_cache` folder: pass --out DIR')
    mode = args.mode or cfg.get('region_cache_mode', 'exact')
    topk = args.topk or cfg.get('region_cache_topk', 32)

    from mmengine.dist import get_dist_info, init_dist
    from mmengine.logging import MMLogger

    from densevlm_mm.apis.region_cache import build_region_cache
    from densevlm_mm.engine import finish_distributed, setup_distributed
    from densevlm_mm.region_cache import RegionCacheMismatch, format_report
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    if args.launcher != 'none':
        import torch
        try:
            setup_distributed(cfg, args.launcher)  # gloo on a machine without CUDA
        except ValueError as exc:
            fail(str(exc))
        if torch.cuda.is_available():
            init_dist(args.launcher, **dict(cfg.get('env_cfg', {}).get('dist_cfg', {}) or {}))
    MMLogger.get_instance('region_cache', log_level='INFO')
    try:
        result = build_region_cache(cfg, out, mode=mode, topk=topk, batch_size=args.batch_size,
                                    num_workers=args.num_workers, max_images=args.max_images)
    except (RegionCacheMismatch, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rank, world = get_dist_info()
    print(f'process {rank}: {result["written"]} images in {result["seconds"]:.1f} s '
          f'({result["seconds_per_image"]:.3f} s/image)', flush=True)
    if rank == 0:
        print(format_report(result, mode), flush=True)
    finish_distributed()


if __name__ == '__main__':
    main()
