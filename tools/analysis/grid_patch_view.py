"""Grid-patch classification view (paper Fig. 10).

    python tools/analysis/grid_patch_view.py INPUT.npz OUT.png [--image IMG] [--grid M N]
        [--theta 0.3] [--classes VOCAB] [--size W H]

``INPUT.npz`` holds:

* ``image`` uint8 [H, W, 3] (or pass ``--image`` with a file);
* the cells: ``boxes`` [K, 4] xyxy pixels, or none and ``--grid M N`` (rows, columns);
* the retrieval: ``labels`` [K] + ``confidences`` [K], or ``probs`` [K, C] (class probabilities;
  label = argmax, confidence = max);
* class names: ``class_names`` [C], or ``--classes`` (a vocabulary name or file accepted by
  ``densevlm_mm.vocabulary.load_vocabulary``).

Cells with confidence ``<= theta`` are hatched and greyed out.
"""
import argparse
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('input', help='npz with image / boxes / labels+confidences or probs')
    parser.add_argument('out', help='output PNG')
    parser.add_argument('--image', help='image file (instead of the npz "image")')
    parser.add_argument('--grid', type=int, nargs=2, metavar=('M', 'N'),
                        help='rows and columns when the npz has no "boxes"')
    parser.add_argument('--theta', type=float, default=0.3, help='confidence threshold')
    parser.add_argument('--classes', help='vocabulary name or file for the class names')
    parser.add_argument('--size', type=int, nargs=2, metavar=('W', 'H'), default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from densevlm_mm.apis import load_image
    from densevlm_mm.visualization import draw_grid_patch_view, grid_boxes
    data = np.load(args.input, allow_pickle=False)
    if args.image:
        image = load_image(args.image)  # EXIF orientation, 16-bit and grayscale handled
    elif 'image' in data:
        image = data['image'].astype(np.uint8)
    else:
        sys.exit(f'{args.input}: no "image" array; pass --image')
    if 'boxes' in data:
        boxes = data['boxes']
    elif args.grid:
        boxes = grid_boxes(image.shape[0], image.shape[1], *args.grid)
    else:
        sys.exit(f'{args.input}: no "boxes" array; pass --grid M N')
    if 'probs' in data:
        probs = data['probs']
        labels, conf = probs.argmax(1), probs.max(1)
    elif 'labels' in data and 'confidences' in data:
        labels, conf = data['labels'], data['confidences']
    else:
        sys.exit(f'{args.input}: needs "labels" + "confidences" or "probs"')
    if args.classes:
        from densevlm_mm.vocabulary import load_vocabulary
        names = list(load_vocabulary(args.classes).names)
    elif 'class_names' in data:
        names = [str(n) for n in data['class_names']]
    else:
        names = None
    draw_grid_patch_view(image, boxes, labels, conf, names, theta=args.theta, out_file=args.out,
                         size=tuple(args.size) if args.size else None)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
