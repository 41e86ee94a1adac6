"""Thing/stuff confusion figure (paper Figs. 6–9) from saved region predictions.

    python tools/analysis/confusion_matrix.py PRED.npz OUT.png [--source mask|box]
        [--mode stuff_as_thing|full] [--top-n 20] [--size 1000 900] [--title TEXT]

``PRED.npz`` is written by ``RegionClassificationMetric(save_predictions='PRED.npz')``: per region
``labels`` [N], ``box_topk`` / ``mask_topk`` [N, k] (column 0 = top-1 prediction), and the vocabulary
``class_names`` [C] / ``class_is_thing`` [C]. Any npz with ``labels``, ``pred`` [N] (or the top-k
arrays), ``class_names`` and ``class_is_thing`` works.
"""
import argparse
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('predictions', help='npz of RegionClassificationMetric(save_predictions=)')
    parser.add_argument('out', help='output PNG')
    parser.add_argument('--source', choices=['mask', 'box'], default='mask',
                        help='which prediction to use (default: mask pooling)')
    parser.add_argument('--mode', choices=['stuff_as_thing', 'full'], default='stuff_as_thing')
    parser.add_argument('--top-n', type=int, default=20, help='most confused classes; 0 = all')
    parser.add_argument('--size', type=int, nargs=2, default=(1000, 900), metavar=('W', 'H'))
    parser.add_argument('--title', default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from densevlm_mm.visualization import draw_confusion_matrix
    data = np.load(args.predictions, allow_pickle=False)
    if 'pred' in data:
        pred = data['pred']
    elif f'{args.source}_topk' in data:
        pred = data[f'{args.source}_topk'][:, 0]
    else:
        sys.exit(f'{args.predictions}: no "{args.source}_topk" or "pred" array '
                 f'(has {sorted(data.files)})')
    for key in ('labels', 'class_names', 'class_is_thing'):
        if key not in data:
            sys.exit(f'{args.predictions}: missing "{key}" (has {sorted(data.files)})')
    labels = data['labels']
    scored = pred >= 0  # the metric stores -1 for a region whose mask is empty (no feature)
    if not scored.all():
        print(f'skipped {int((~scored).sum())} of {scored.size} regions without a prediction '
              f'(-1: empty masks; the metric counts them as misclassified)')
        labels, pred = labels[scored], pred[scored]
    draw_confusion_matrix(labels, pred, [str(n) for n in data['class_names']],
                          data['class_is_thing'], mode=args.mode, top_n=args.top_n or None,
                          out_file=args.out, size=tuple(args.size), title=args.title)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
