"""Demo stage ``picture``: the user-facing open-vocabulary label map of the aligned tiny student.

Runs the ``seg`` mode of ``tools/demo.py`` in-process on the first generated image of the align
stage (``<work_dir>/data/images``) with the student of ``configs/densevlm/densevlm_tiny_demo.py``
and its last checkpoint, the vocabulary of the synthetic data encoded by the student's own text
tower, and writes ``<work_dir>/figures/<image>_seg.png`` (the label map blended over the image with
a legend of the classes present, 4x the 128x96 image) and ``<image>_labels.png`` (class indices).
The label map is then compared with the generated ground truth of that image (pixel accuracy, and
per class present), so the log says how much of the picture is right.
"""
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List

TOOLS = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run(work_dir: str, student_checkpoint: str, config: str, log: Callable = print) -> List[str]:
    """Write the seg picture; returns the PNG paths."""
    t0 = time.time()
    images = osp.join(work_dir, 'data', 'images')
    if not osp.isdir(images):
        raise SystemExit(f'[demo] no generated images under {images}: run the align stage first')
    names = sorted(n for n in os.listdir(images) if n.endswith(('.jpg', '.png')))
    if not names:
        raise SystemExit(f'[demo] {images} holds no image')
    image = osp.join(images, names[0])
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    import demo  # tools/demo.py

    out = osp.join(work_dir, 'figures')
    argv = [image, '--config', config, '--checkpoint', student_checkpoint,
            '--cfg-options', f'model.backbone.pretrained={work_dir}/checkpoints/student.pt',
            '--custom-vocabulary', osp.join(work_dir, 'data', 'vocabulary.json'),
            '--mode', 'seg', '--scale', '4', '--out', out, '--no-cache']
    log(f'[demo] open-vocabulary label map: python tools/demo.py {" ".join(argv)}')
    written = [p for p in demo.main(argv) if p.endswith('.png')]
    accuracy = ground_truth_accuracy(work_dir, names[0], osp.join(out, 'classes.txt'),
                                     next(p for p in written if p.endswith('_labels.png')))
    if accuracy:
        log('[demo] label map vs the generated ground truth: pixel accuracy '
            f'{100 * accuracy["all"]:.0f}% (' + ', '.join(
                f'{k} {100 * v:.0f}%' for k, v in accuracy.items() if k != 'all') + ')')
    log(f'[demo] picture: {", ".join(written)} ({time.time() - t0:.1f} s)')
    return written


def ground_truth_accuracy(work_dir: str, image_name: str, classes_txt: str,
                          labels_png: str) -> Dict[str, float]:
    """Share of pixels whose predicted class name equals the generated panoptic ground truth:
    ``{'all': acc, <class>: acc of that class's pixels}`` (empty when there is no ground truth)."""
    import json

    import numpy as np
    from PIL import Image

    from densevlm_mm.datasets.transforms.panoptic import rgb2id
    ann_file = osp.join(work_dir, 'data', 'panoptic.json')
    if not osp.isfile(ann_file):
        return {}
    with open(ann_file) as f:
        panoptic = json.load(f)
    stem = osp.splitext(image_name)[0]
    ann = next((a for a in panoptic['annotations']
                if osp.splitext(a['file_name'])[0] == stem), None)
    if ann is None:
        return {}
    category = {c['id']: c['name'] for c in panoptic['categories']}
    segment = {s['id']: category[s['category_id']] for s in ann['segments_info']}
    with Image.open(osp.join(work_dir, 'data', 'panoptic', ann['file_name'])) as im:
        ids = rgb2id(np.asarray(im.convert('RGB')))
    with open(classes_txt) as f:
        vocab = [line.rstrip('\n').split('\t', 1)[1] for line in f if line.strip()]
    with Image.open(labels_png) as im:
        pred = np.asarray(im).astype(np.int64)
    truth = np.vectorize(lambda i: segment.get(int(i), ''), otypes=[object])(ids)
    predicted = np.asarray(vocab, dtype=object)[pred]
    known = truth != ''
    result = {'all': float((predicted == truth)[known].mean())}
    for name in sorted(set(truth[known]), key=lambda n: -(truth == n).sum()):
        result[name] = float((predicted == truth)[truth == name].mean())
    return result
