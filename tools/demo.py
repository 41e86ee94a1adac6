"""Your image + your class names → text-to-dense similarity heat-maps and a grid-region view.

    python tools/demo.py IMAGE --model EVA02-B-16 --checkpoint CLIP.pt \
        --things "cat,dog,person" --stuff "grass,sky,road" [--aligned work_dirs/x/epoch_6.pth]
        [--size 512] [--grid 4x6] [--theta 0.3] [--out-dir demo_out] [--device cuda]

``--checkpoint`` is the open_clip checkpoint (its text tower encodes the class names);
``--aligned`` optionally replaces the image tower by a DenseVLM-trained student (an mmengine
checkpoint of a DenseVLM config). Writes ``<out-dir>/heatmaps.png`` (paper Fig. 4) and
``<out-dir>/grid.png`` (Fig. 10: each grid cell labelled with its retrieved class and
confidence; cells at or below θ hatched).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('image')
    parser.add_argument('--model', required=True, help='open_clip model name')
    parser.add_argument('--checkpoint', default=None,
                        help='local open_clip checkpoint (omit only for bundled tiny models)')
    parser.add_argument('--aligned', default=None, help='DenseVLM training checkpoint')
    parser.add_argument('--things', default='', help='comma-separated thing classes')
    parser.add_argument('--stuff', default='', help='comma-separated stuff classes')
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--grid', default='4x6', help='rows x columns of the grid view')
    parser.add_argument('--theta', type=float, default=0.3)
    parser.add_argument('--out-dir', default='demo_out')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    things = [c.strip() for c in args.things.split(',') if c.strip()]
    stuff = [c.strip() for c in args.stuff.split(',') if c.strip()]
    if not things + stuff:
        sys.exit('demo.py: error: give class names with --things and/or --stuff')
    if not osp.isfile(args.image):
        sys.exit(f'demo.py: error: image not found: {args.image}')
    try:
        rows, cols = (int(v) for v in args.grid.lower().split('x'))
    except ValueError:
        sys.exit(f'demo.py: error: --grid must look like 4x6, got {args.grid!r}')

    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from densevlm_mm.datasets.transforms import ResizeLongestPad
    from densevlm_mm.models import DenseVLMBackbone, GridRegionSampler
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.models.data_preprocessor import CLIP_MEAN, CLIP_STD
    from densevlm_mm.models.losses import retrieve
    from densevlm_mm.text_embeddings import build_text_embeddings
    from densevlm_mm.utils import load_checkpoint_file, load_state_dict_reported
    from densevlm_mm.visualization import draw_grid_patch_view, draw_similarity_heatmaps

    try:
        with Image.open(args.image) as im:
            image = np.array(im.convert('RGB'))
    except (UnidentifiedImageError, OSError) as exc:
        sys.exit(f'demo.py: error: cannot decode {args.image}: {exc}')
    clip, tokenizer = create_clip(args.model, pretrained=args.checkpoint, device=args.device)
    clip.eval()
    backbone = DenseVLMBackbone.from_open_clip(clip, model_name=args.model).eval()
    if args.aligned:
        sd = load_checkpoint_file(args.aligned)
        student = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
        if not student:
            sys.exit(f'demo.py: error: {args.aligned} has no "backbone.*" weights (not a '
                     'DenseVLM training checkpoint?)')
        load_state_dict_reported(backbone, student, strict=True, name='aligned image tower')
    names = things + stuff
    text = build_text_embeddings(clip, tokenizer, names, device=args.device)

    sample = ResizeLongestPad(args.size)(dict(img=image))
    h, w = sample['valid_hw']
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    x = ((torch.from_numpy(sample['img']).permute(2, 0, 1).float() - mean) / std)[None]
    with torch.no_grad():
        dense = backbone.dense_features(x.to(args.device))
        boxes = GridRegionSampler(max_split=max(rows, cols, 2), max_regions=rows * cols) \
            .grid_boxes((h, w), rows, cols).to(args.device)
        feats = backbone.roi_features(dense, [boxes])
        _, conf, labels = retrieve(feats, text.to(args.device))
    os.makedirs(args.out_dir, exist_ok=True)
    shown = np.ascontiguousarray(sample['img'][:h, :w])
    heat = osp.join(args.out_dir, 'heatmaps.png')
    draw_similarity_heatmaps(shown, dense[0].cpu(), text, names, out_file=heat, valid_hw=(h, w))
    grid = osp.join(args.out_dir, 'grid.png')
    draw_grid_patch_view(shown, boxes.cpu().numpy(), [names[i] for i in labels.tolist()],
                         conf.cpu().numpy(), theta=args.theta, out_file=grid)
    print(f'wrote {heat} and {grid}')


if __name__ == '__main__':
    main()
