"""Speed and memory of a DenseVLM training step and of region-classification inference.

    python tools/analysis/benchmark_step.py train [--student EVA02-B-16] [--teacher EVA02-L-14-336]
        [--size 512] [--batch 16] [--iters 5] [--amp] [--device cuda]
    python tools/analysis/benchmark_step.py eval [--student EVA02-B-16] [--size 512] [--batch 8]
        [--regions 20] [--iters 5] [--device cuda]

Models are random-initialised (speed does not depend on the weights), inputs random, 36 grid
regions per image for training. Prints seconds per step, images/s and peak GPU memory.
"""
import argparse
import os.path as osp
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mode', choices=['train', 'eval'])
    parser.add_argument('--student', default='EVA02-B-16')
    parser.add_argument('--teacher', default='EVA02-L-14-336')
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--regions', type=int, default=20, help='eval regions per image')
    parser.add_argument('--classes', type=int, default=316)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--amp', action='store_true', help='fp16 autocast (bf16 on CPU)')
    parser.add_argument('--device', default='cuda' if _cuda() else 'cpu')
    args = parser.parse_args(argv)

    import torch
    from mmpretrain.structures import DataSample

    from densevlm_mm.models.region_sampler import GridRegionSampler
    from densevlm_mm.registry import MODELS
    from densevlm_mm.text_embeddings import TextEmbeddings
    from densevlm_mm.utils import register_all_modules
    register_all_modules()

    tmp = tempfile.mkdtemp()
    is_thing = torch.arange(args.classes) < args.classes * 2 // 3

    def text_file(name: str, dim: int) -> str:
        path = osp.join(tmp, f'{name}.pt')
        TextEmbeddings(torch.randn(args.classes, dim), [f'c{i}' for i in range(args.classes)],
                       is_thing, model_name=name).save(path)
        return path

    student = MODELS.build(dict(type='DenseVLMBackbone', model_name=args.student,
                                unlocked_groups=None))
    cfg = dict(type='DenseVLM', backbone=student,
               eval_text_embeddings=text_file('eval', student.embed_dim))
    if args.mode == 'train':
        teacher = MODELS.build(dict(type='DenseVLMBackbone', model_name=args.teacher))
        cfg.update(
            target_generator=dict(type='RegionRetriever', backbone=teacher,
                                  text_embeddings=text_file('teacher', teacher.embed_dim),
                                  precision='fp16' if args.amp and args.device == 'cuda'
                                  else 'fp32'),
            head=dict(type='DenseVLMHead', loss=dict(type='DecoupledAlignLoss'),
                      text_embeddings=text_file('student', student.embed_dim)))
    model = MODELS.build(cfg).to(args.device)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    sampler = GridRegionSampler()
    dtype = torch.float16 if args.device == 'cuda' else torch.bfloat16

    def make_batch():
        inputs = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
        samples = []
        for _ in range(args.batch):
            s = DataSample()
            if args.mode == 'train':
                s.grid_boxes = sampler.grid_boxes((args.size, args.size), 6, 6).to(args.device)
            else:
                xy = torch.rand(args.regions, 2, device=args.device) * args.size / 2
                s.region_boxes = torch.cat([xy, xy + args.size / 4], 1)
                s.region_masks = torch.rand(args.regions, args.size, args.size,
                                            device=args.device) > 0.5
            samples.append(s)
        return inputs, samples

    def step():
        inputs, samples = make_batch()
        with torch.autocast(args.device, dtype=dtype, enabled=args.amp):
            if args.mode == 'train':
                loss = model.loss(inputs, samples)['loss_align']
            else:
                model.predict(inputs, samples)
        if args.mode == 'train':
            optim.zero_grad()
            loss.backward()
            optim.step()

    model.train(args.mode == 'train')
    for _ in range(args.warmup):
        step()
    if args.device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    if args.device == 'cuda':
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / args.iters
    mem = (f', peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB'
           if args.device == 'cuda' else '')
    what = f'{args.student} + P-VLM {args.teacher}' if args.mode == 'train' else args.student
    print(f'{args.mode} {what} {args.size}px batch {args.batch} on {args.device}'
          f'{" amp" if args.amp else ""}: {per_step:.3f} s/step, '
          f'{args.batch / per_step:.2f} images/s{mem}')


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == '__main__':
    main()
