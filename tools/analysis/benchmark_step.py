"""Deprecated: use ``tools/analysis/benchmark.py`` (config-driven, phases, spread, FLOPs).

    python tools/analysis/benchmark_step.py train [--student EVA02-B-16] [--teacher EVA02-L-14-336]
        [--size 512] [--batch 16] [--iters 5] [--amp] [--device cuda]
    python tools/analysis/benchmark_step.py eval [--student EVA02-B-16] [--size 512] [--batch 8]
        [--regions 20] [--iters 5] [--device cuda]

Kept for old command lines: the arguments are mapped onto ``benchmark.py`` running the reference
recipe config (``configs/densevlm/densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py``) with
random weights, synthetic data and the given model names.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'densevlm', 'densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py')


def to_benchmark_args(argv: Optional[Sequence[str]] = None) -> List[str]:
    """The ``benchmark.py`` command line equivalent to an old ``benchmark_step.py`` one."""
    import torch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=['train', 'eval'])
    parser.add_argument('--student', default='EVA02-B-16')
    parser.add_argument('--teacher', default='EVA02-L-14-336')
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--regions', type=int, default=20, help='eval regions per image')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--amp', action='store_true', help='fp16 autocast (bf16 on CPU)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    out = [CONFIG, '--mode', args.mode, '--random-weights', '--data', 'synthetic',
           '--image-size', str(args.size), '--batch-size', str(args.batch),
           '--regions', str(args.regions), '--iters', str(args.iters),
           '--warmup', str(args.warmup), '--device', args.device,
           '--amp', ('fp16' if args.device == 'cuda' else 'bf16') if args.amp else 'none',
           '--cfg-options', f'model.backbone.model_name={args.student}',
           f'model.target_generator.backbone.model_name={args.teacher}']
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    import benchmark
    benchmark.run(to_benchmark_args(argv))


if __name__ == '__main__':
    main()
