"""The embedded default: DenseVLM on tiny random-initialised models and generated data, on CPU.

    python tools/run_tiny_demo.py [--work-dir work_dirs/tiny_demo] [--resume] [--num-images 32]

1. writes a synthetic panoptic image set (4 thing + 4 stuff classes), a tiny student and a tiny
   P-VLM (random init, bundled open_clip configs) and their class text embeddings;
2. evaluates the student's region classification (Boxes / Masks-T / Masks-S) before training;
3. trains ``configs/densevlm/densevlm_tiny_demo.py`` with mmengine's Runner (loss and retrieval
   statistics — regions kept / thing / stuff — are logged every 4 iterations), saves checkpoints;
4. evaluates again and writes PNG figures (text-to-dense similarity heat-maps, the grid-patch
   retrieval view) under ``<work-dir>/figures``.
Everything is created once and reused; ``--resume`` continues an interrupted run.
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

    from densevlm_mm.models.region_sampler import GridRegionSampler
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', default=DEFAULT_ROOT)
    parser.add_argument('--resume', action='store_true', help='continue an interrupted run')
    parser.add_argument('--num-images', type=int, default=32)
    parser.add_argument('--max-epochs', type=int, default=None)
    parser.add_argument('--teach-steps', type=int, default=150,
                        help='supervised steps that make the random P-VLM know the synthetic '
                             'classes (0: keep it random)')
    args = parser.parse_args(argv)

    t0 = time.time()
    root = args.work_dir.rstrip('/')
    from densevlm_mm.utils.tiny_demo import load_tiny_demo_config, prepare_tiny_demo
    prepare_tiny_demo(root, args.num_images, teach_steps=args.teach_steps)

    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    cfg = load_tiny_demo_config(root)
    cfg.work_dir = osp.join(root, 'train')
    cfg.resume = args.resume
    if args.max_epochs:
        cfg.train_cfg.max_epochs = args.max_epochs
        cfg.train_cfg.val_interval = args.max_epochs
    runner = Runner.from_cfg(cfg)

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
    print(f'[demo] checkpoints: {cfg.work_dir}; figures: {", ".join(written)}')
    print(f'[demo] done in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
