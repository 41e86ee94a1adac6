"""Measure the training data loader's throughput (images/s).

    python tools/analysis/benchmark_dataloader.py {folder,coco,sa1b} [--data PATH] [--ann-file F]
        [--num-images N] [--size WxH] [--workers 2] [--batch-size 16] [--pipeline full|load]
        [--draft-size 512]
    python tools/analysis/benchmark_dataloader.py CONFIG.py [--workers 2] [--batch-size 16]

Without ``--data`` the script writes synthetic JPEGs into a temporary folder first: an image folder,
a COCO json + ``train2017/``, or SA-1B-style tar shards (``sa_N.jpg`` + ``sa_N.json``; default
size 2250×1500 like SA-1B, 640×480 for the others). ``--pipeline full`` (default) is the DenseVLM
training pipeline (``LoadImageSafe → ResizeLongestPad(512) → SampleGridRegions →
PackDenseVLMInputs``); ``load`` decodes only. The first batch (worker start-up) is timed separately.
"""
import argparse
import io
import json
import os
import os.path as osp
import sys
import tarfile
import tempfile
import time

import numpy as np
from PIL import Image

KINDS = ('folder', 'coco', 'sa1b')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Benchmark the training data loader')
    parser.add_argument('kind', help=f'a dataset kind {KINDS} or a config file (.py)')
    parser.add_argument('--data', help='existing data: image folder, COCO image folder, or SA-1B '
                        'shards (glob / folder); synthetic data is written when omitted')
    parser.add_argument('--ann-file', help='COCO json (with kind coco and --data)')
    parser.add_argument('--num-images', type=int, default=256, help='synthetic images')
    parser.add_argument('--size', help='synthetic image size WxH (default 640x480, sa1b '
                        '2250x1500)')
    parser.add_argument('--shards', type=int, default=4, help='synthetic SA-1B shards')
    parser.add_argument('--corrupt', type=int, default=0, help='synthetic unreadable images')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--max-batches', type=int, default=0, help='stop after N batches (0: all)')
    parser.add_argument('--pipeline', choices=('full', 'load'), default='full')
    parser.add_argument('--image-size', type=int, default=512, help='ResizeLongestPad size')
    parser.add_argument('--draft-size', type=int, default=0,
                        help='LoadImageSafe(draft_size=...): reduced-scale JPEG decoding')
    return parser.parse_args(argv)


def synthetic_jpeg(w: int, h: int, seed: int) -> bytes:
    """A smooth random picture with mild noise (compresses like a photo, ~0.5 bit/px)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=90)
    return buf.getvalue()


def make_synthetic(kind: str, root: str, n: int, size, shards: int, corrupt: int) -> dict:
    """Write synthetic data and return the dataset config (without pipeline)."""
    w, h = size
    bad = set(range(0, n, max(1, n // corrupt))[:corrupt]) if corrupt else set()

    def image(i):
        return b'\xff\xd8 broken' if i in bad else synthetic_jpeg(w, h, i)

    if kind == 'sa1b':
        per = -(-n // shards)
        for s in range(shards):
            with tarfile.open(osp.join(root, f'sa_{s:06d}.tar'), 'w') as tar:
                for i in range(s * per, min(n, (s + 1) * per)):
                    ann = json.dumps(dict(image=dict(image_id=i, width=w, height=h),
                                          annotations=[])).encode()
                    for name, data in ((f'sa_{i}.jpg', image(i)), (f'sa_{i}.json', ann)):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        return dict(type='SA1BShardDataset', shards=osp.join(root, 'sa_*.tar'))
    img_dir = osp.join(root, 'train2017')
    os.makedirs(img_dir)
    images = []
    for i in range(n):
        name = f'{i:012d}.jpg'
        with open(osp.join(img_dir, name), 'wb') as f:
            f.write(image(i))
        images.append(dict(id=i, file_name=name, width=w, height=h))
    if kind == 'folder':
        return dict(type='ImageFolderDataset', data_root=img_dir)
    ann_file = osp.join(root, 'instances_train2017.json')
    with open(ann_file, 'w') as f:
        json.dump(dict(images=images, annotations=[], categories=[]), f)
    return dict(type='CocoImageDataset', ann_file=ann_file, data_prefix=dict(img=img_dir))


def existing_data(kind: str, args) -> dict:
    if kind == 'sa1b':
        return dict(type='SA1BShardDataset', shards=args.data)
    if kind == 'folder':
        return dict(type='ImageFolderDataset', data_root=args.data)
    if not args.ann_file:
        sys.exit('benchmark_dataloader.py: coco with --data needs --ann-file')
    return dict(type='CocoImageDataset', ann_file=args.ann_file, data_prefix=dict(img=args.data))


def build_pipeline(kind: str, image_size: int, draft_size: int = 0) -> list:
    pipeline = [dict(type='LoadImageSafe', draft_size=draft_size or None)]
    if kind == 'load':
        return pipeline
    try:  # the lead's transforms register themselves on import
        import densevlm_mm.datasets.transforms as transforms
        for name in ('ResizeLongestPad', 'SampleGridRegions', 'PackDenseVLMInputs'):
            getattr(transforms, name)
    except (ImportError, AttributeError) as exc:
        print(f'full pipeline unavailable ({exc}); timing LoadImageSafe only', file=sys.stderr)
        return pipeline
    return pipeline + [dict(type='ResizeLongestPad', size=image_size),
                       dict(type='SampleGridRegions'), dict(type='PackDenseVLMInputs')]


def run(loader_cfg: dict, max_batches: int) -> dict:
    from mmengine.runner import Runner

    from densevlm_mm.datasets.transforms.loading import get_skipped_images
    skipped_before = get_skipped_images().count
    t0 = time.perf_counter()
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    t_build = time.perf_counter() - t0
    images = batches = 0
    t_first = None
    t_start = time.perf_counter()
    for batch in loader:
        n = len(batch['inputs']) if isinstance(batch, dict) and 'inputs' in batch else \
            len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        if t_first is None:
            t_first = time.perf_counter() - t_start
            t_steady = time.perf_counter()
        else:
            images += n
        batches += 1
        if max_batches and batches >= max_batches:
            break
    t_total = time.perf_counter() - t_start
    steady = time.perf_counter() - t_steady if batches > 1 else float('nan')
    return dict(build_s=t_build, first_batch_s=t_first or float('nan'), batches=batches,
                steady_images=images, steady_s=steady,
                images_per_s=images / steady if batches > 1 else float('nan'),
                total_s=t_total, skipped=get_skipped_images().count - skipped_before)


def main(argv=None):
    args = parse_args(argv)
    from mmengine.registry import DefaultScope

    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('densevlm_mm'), \
            tempfile.TemporaryDirectory(prefix='dataloader_bench_') as tmp:
        if args.kind.endswith('.py'):
            from mmengine.config import Config
            loader_cfg = Config.fromfile(args.kind).train_dataloader.to_dict()
            what = args.kind
        elif args.kind in KINDS:
            if args.data:
                dataset = existing_data(args.kind, args)
            else:
                default = '2250x1500' if args.kind == 'sa1b' else '640x480'
                size = tuple(int(v) for v in (args.size or default).lower().split('x'))
                t0 = time.perf_counter()
                dataset = make_synthetic(args.kind, tmp, args.num_images, size, args.shards,
                                         args.corrupt)
                print(f'wrote {args.num_images} synthetic {size[0]}x{size[1]} images '
                      f'({args.kind}) in {time.perf_counter() - t0:.1f} s', file=sys.stderr)
            dataset['pipeline'] = build_pipeline(args.pipeline, args.image_size, args.draft_size)
            sampler = None if args.kind == 'sa1b' else dict(type='DefaultSampler', shuffle=True)
            loader_cfg = dict(dataset=dataset, sampler=sampler,
                              collate_fn=dict(type='pseudo_collate'))
            what = f'{args.kind} ({args.pipeline} pipeline' + (
                f', draft_size {args.draft_size})' if args.draft_size else ')')
        else:
            sys.exit(f'benchmark_dataloader.py: kind must be one of {KINDS} or a .py config, '
                     f'got {args.kind!r}')
        loader_cfg.update(batch_size=args.batch_size, num_workers=args.workers,
                          persistent_workers=False)
        r = run(loader_cfg, args.max_batches)
    print(f'{what}: {args.workers} workers, batch {args.batch_size}, {r["batches"]} batches')
    print(f'  build {r["build_s"]:.2f} s, first batch {r["first_batch_s"]:.2f} s, skipped images '
          f'{r["skipped"]}')
    print(f'  steady state: {r["steady_images"]} images in {r["steady_s"]:.2f} s = '
          f'{r["images_per_s"]:.1f} images/s')
    return r


if __name__ == '__main__':
    main()
