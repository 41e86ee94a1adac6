"""The embedded default: the whole DenseVLM pipeline on tiny random-initialised models and generated
data, on CPU, in about three minutes.

    python tools/run_tiny_demo.py [--work-dir work_dirs/tiny_demo] [--resume] [--num-images 32]
                                  [--stages align,detect,segment,picture] [--skip detect,...]

Stages (each reuses what an earlier run wrote under ``--work-dir``):

``align``    writes a synthetic panoptic image set (4 thing + 4 stuff classes), a tiny student and a
             tiny P-VLM (random init, bundled open_clip configs) and their class text embeddings;
             evaluates the student's region classification (Boxes / Masks-T / Masks-S), trains
             ``configs/densevlm/densevlm_tiny_demo.py`` with mmengine's Runner, evaluates again and
             writes the similarity heat-maps and the grid-patch retrieval view under ``figures/``;
``detect``   drops the aligned student into a tiny F-ViT (``configs/fvit/fvit_tiny_demo.py``), trains
             it on generated COCO-style images with a base/novel split and prints the OV-COCO table;
``segment``  drops the aligned student into a tiny CAT-Seg (``configs/catseg/catseg_tiny_demo.py``),
             trains it on generated segmentation images and prints mIoU;
``picture``  runs ``tools/demo.py --mode seg`` with the aligned student on a generated image.
"""
import argparse
import os
import os.path as osp
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
DEFAULT_ROOT = 'work_dirs/tiny_demo'


def figures(runner, out_dir: str) -> list:
    """Similarity heat-maps (paper Fig. 4) and the grid-patch retrieval view (Fig. 10)."""
    import numpy as np
    import torch

    from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler
    from densevlm_mm.visualization import draw_grid_patch_view, draw_similarity_heatmaps

    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    model.eval()
    dataset = runner.val_dataloader.dataset
    sample = dataset[0]
    data = model.data_preprocessor(dict(inputs=[sample['inputs']],
                                        data_samples=[sample['data_samples']]), False)
    h, w = sample['data_samples'].valid_hw
    image = sample['inputs'].permute(1, 2, 0).numpy()[:h, :w]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    with torch.no_grad():
        dense = model.backbone.dense_features(data['inputs'])[0]
        names = model.eval_class_names
        heat = osp.join(out_dir, 'similarity_heatmaps.png')
        draw_similarity_heatmaps(np.ascontiguousarray(image), dense, model.eval_text, names,
                                 out_file=heat, valid_hw=(h, w))
        written.append(heat)
        boxes = GridRegionSampler().grid_boxes((h, w), 3, 4)
        targets = model.target_generator(data['inputs'], [boxes])
        grid = osp.join(out_dir, 'grid_patch_view.png')
        draw_grid_patch_view(np.ascontiguousarray(image), boxes.numpy(),
                             [names[i] for i in targets['labels'].tolist()],
                             targets['conf'].numpy(), theta=0.3, out_file=grid)
        written.append(grid)
    return written


STAGES = ('align', 'detect', 'segment', 'picture')


def align(args, root: str) -> dict:
    """Stage 1: DenseVLM on the tiny student and P-VLM; returns the student checkpoint."""
    from mmengine.hooks import Hook

    from demo_stages import demo_runner_class

    from densevlm_mm.engine import DataEpochHook
    from densevlm_mm.utils import register_all_modules
    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config, prepare_tiny_demo
    prepare_tiny_demo(root, args.num_images, teach_steps=args.teach_steps)
    register_all_modules(init_default_scope=False)
    cfg = load_tiny_demo_config(root)
    cfg.work_dir = osp.join(root, 'train')
    cfg.resume = args.resume
    if args.max_epochs:
        cfg.train_cfg.max_epochs = args.max_epochs
        cfg.train_cfg.val_interval = args.max_epochs
    runner = demo_runner_class().from_cfg(cfg)
    runner.register_hook(DataEpochHook(), priority='VERY_HIGH')  # exact --resume

    class KeepMetrics(Hook):
        history: list = []

        def after_val_epoch(self, runner, metrics=None) -> None:
            self.history.append(dict(metrics or {}))

    keep = KeepMetrics()
    runner.register_hook(keep, priority='LOWEST')
    print('[demo] region classification of the student BEFORE training:')
    runner.val()
    print('[demo] training (loss_align and the retrieval counts num_kept / num_thing / '
          'num_stuff are logged)')
    runner.train()
    if len(keep.history) < 2:
        runner.val()
    written = figures(runner, osp.join(root, 'figures'))
    before, after = keep.history[0], keep.history[-1]
    print('\n[demo] student region classification, mean per-class accuracy (%):')
    print(f'{"":8s}' + ''.join(f'{k:>22s}' for k in before if not k.startswith('_')))
    for tag, m in (('before', before), ('after', after)):
        print(f'{tag:8s}' + ''.join(f'{v:22.1f}' for k, v in m.items() if not k.startswith('_')))
    ckpt = osp.join(cfg.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    print(f'[demo] checkpoints: {cfg.work_dir}; figures: {", ".join(written)}')
    return dict(checkpoint=ckpt, figures=written, before=before, after=after)


def aligned_checkpoint(root: str) -> str:
    """The newest epoch checkpoint of the align stage (it must have run)."""
    import glob
    import re
    ckpts = glob.glob(osp.join(root, 'train', 'epoch_*.pth'))
    if not ckpts:
        raise SystemExit(f'[demo] no aligned student under {root}/train: run the align stage first '
                         f'(drop it from --skip)')
    return max(ckpts, key=lambda p: int(re.search(r'epoch_(\d+)', p).group(1)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=DEFAULT_ROOT)
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run')
    parser.add_argument('--num-images', type=int, default=32)
    parser.add_argument('--max-epochs', type=int, default=None)
    parser.add_argument('--teach-steps', type=int, default=150,
                        help='supervised steps that make the random P-VLM know the synthetic '
                             'classes (0: keep it random)')
    parser.add_argument('--stages', default=','.join(STAGES),
                        help=f'comma-separated stages to run, in order (default: all of {STAGES})')
    parser.add_argument('--skip', default='', help='comma-separated stages to leave out')
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(',') if s]
    skip = {s for s in args.skip.split(',') if s}
    for s in stages + sorted(skip):
        if s not in STAGES:
            parser.error(f'unknown stage {s!r}; choose from {", ".join(STAGES)}')
    stages = [s for s in STAGES if s in stages and s not in skip]

    t0 = time.time()
    root = args.work_dir.rstrip('/')
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # tools/demo_stages
    timings = {}
    for stage in stages:
        t = time.time()
        print(f'\n[demo] ===== stage {stage} =====')
        if stage == 'align':
            align(args, root)
        else:
            import importlib
            module = importlib.import_module(f'demo_stages.{STAGE_MODULES[stage]}')
            kwargs = dict(work_dir=root, student_checkpoint=aligned_checkpoint(root))
            if stage == 'picture':
                kwargs['config'] = osp.join(REPO, 'configs', 'densevlm', 'densevlm_tiny_demo.py')
            module.run(**kwargs)
        timings[stage] = time.time() - t
    print('\n[demo] stage times: ' + ', '.join(f'{k} {v:.0f} s' for k, v in timings.items()))
    print(f'[demo] done in {time.time() - t0:.0f} s')


STAGE_MODULES = dict(detect='detect', segment='segment', picture='picture')


if __name__ == '__main__':
    main()
