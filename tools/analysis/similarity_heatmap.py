"""Text-to-dense similarity heat maps (paper Fig. 4).

    python tools/analysis/similarity_heatmap.py INPUT.npz OUT.png [--image IMG]
        [--embeddings EMB.pt --queries NAME ...] [--valid-hw H W] [--size W H]
        [--normalize per_query|shared]

``INPUT.npz`` holds ``dense`` [D, h, w] (dense features in the joint embedding space, covering the
whole image) and ``image`` uint8 [H, W, 3] (or pass ``--image``); optional ``valid_hw`` [2] (the
unpadded part of a padded image). Text: ``text`` [Q, D] + ``names`` [Q] in the npz, or
``--embeddings`` (a text-embedding file of ``tools/text_embeddings.py``; ``.npy`` needs
``--vocabulary``) with ``--queries`` picking the rows by class name (default: all).
"""
import argparse
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('input', help='npz with "dense", "image", optionally "text"/"names"')
    parser.add_argument('out', help='output PNG')
    parser.add_argument('--image', help='image file (instead of the npz "image")')
    parser.add_argument('--embeddings', help='text embedding file (.pt, or .npy with --vocabulary)')
    parser.add_argument('--vocabulary', help='vocabulary of a .npy embedding file')
    parser.add_argument('--queries', nargs='+', help='class names to show (default: all)')
    parser.add_argument('--valid-hw', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--size', type=int, nargs=2, metavar=('W', 'H'))
    parser.add_argument('--normalize', choices=['per_query', 'shared'], default='per_query')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from densevlm_mm.apis import load_image
    from densevlm_mm.visualization import draw_similarity_heatmaps
    data = np.load(args.input, allow_pickle=False)
    if 'dense' not in data:
        sys.exit(f'{args.input}: no "dense" array (has {sorted(data.files)})')
    if args.image:
        image = load_image(args.image)  # EXIF orientation, 16-bit and grayscale handled
    elif 'image' in data:
        image = data['image'].astype(np.uint8)
    else:
        sys.exit(f'{args.input}: no "image" array; pass --image')
    if args.embeddings:
        from densevlm_mm.text_embeddings import load_text_embeddings
        te = load_text_embeddings(args.embeddings, vocabulary=args.vocabulary)
        names = list(te.class_names)
        rows = list(range(len(names)))
        if args.queries:
            unknown = [q for q in args.queries if q not in names]
            if unknown:
                sys.exit(f'{args.embeddings}: no class named {unknown}')
            rows = [names.index(q) for q in args.queries]
        text, names = te.embeddings[rows], [names[i] for i in rows]
    elif 'text' in data and 'names' in data:
        text, names = torch.from_numpy(data['text']), [str(n) for n in data['names']]
    else:
        sys.exit(f'{args.input}: needs "text" + "names", or pass --embeddings')
    valid_hw = args.valid_hw or (tuple(int(v) for v in data['valid_hw'])
                                 if 'valid_hw' in data else None)
    draw_similarity_heatmaps(image, torch.from_numpy(data['dense']), text, names,
                             out_file=args.out, valid_hw=valid_hw,
                             size=tuple(args.size) if args.size else None,
                             normalize=args.normalize)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
