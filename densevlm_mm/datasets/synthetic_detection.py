"""A tiny generated open-vocabulary detection set (COCO instances format) for tests and the demo.

The images are those of :func:`make_synthetic_panoptic` (two textured stuff regions, 1–3 coloured
thing shapes), so a student aligned on the demo's panoptic images has seen these objects. The four
thing classes are split into base (boxes used for training) and novel (only evaluated)::

    root/train/images/*.jpg, root/train/instances.json   all boxes (OVCocoDataset drops novel)
    root/val/images/*.jpg,   root/val/instances.json     all boxes
    root/classes.json                                    {"classes", "base_classes", "novel_classes"}
    root/vocabulary.json                                 [{"name", "isthing"}] (text embeddings)
"""
import json
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

from .synthetic_panoptic import DEFAULT_CATEGORIES, make_synthetic_panoptic

#: the thing classes of the panoptic fixture, in category-id order, and the default split
CLASSES: Tuple[str, ...] = tuple(c['name'] for c in sorted(DEFAULT_CATEGORIES, key=lambda c: c['id'])
                                 if c['isthing'])
BASE_CLASSES: Tuple[str, ...] = ('person', 'car')
NOVEL_CLASSES: Tuple[str, ...] = ('dog', 'bottle')


def make_synthetic_detection(root: str, num_train: int = 16, num_val: int = 8,
                             image_size: Tuple[int, int] = (128, 128), seed: int = 0,
                             base_classes: Sequence[str] = BASE_CLASSES) -> Dict[str, object]:
    """Write train/val detection images and annotations under ``root`` (deterministic per seed).

    Returns:
        dict with ``train_ann`` / ``val_ann`` (instances json), ``train_img`` / ``val_img`` (image
        folders), ``classes`` / ``base_classes`` / ``novel_classes`` (tuples), ``classes_json``,
        ``vocabulary_json`` (the classes as a vocabulary file for text embeddings).
    """
    base = tuple(base_classes)
    unknown = [n for n in base if n not in CLASSES]
    if unknown:
        raise ValueError(f'base classes {unknown} are not among the fixture classes {CLASSES}')
    novel = tuple(n for n in CLASSES if n not in base)
    out: Dict[str, object] = dict(classes=CLASSES, base_classes=base, novel_classes=novel)
    for split, num, offset in (('train', num_train, 0), ('val', num_val, 1000)):
        folder = osp.join(root, split)
        ann = osp.join(folder, 'instances.json')
        if not osp.isfile(ann):
            make_synthetic_panoptic(folder, num_images=num, image_size=image_size,
                                    seed=seed + offset)
            with open(ann) as f:
                data = json.load(f)
            for a in data['annotations']:  # fields mmdet's CocoDataset / pycocotools expect
                a.setdefault('iscrowd', 0)
            with open(ann, 'w') as f:
                json.dump(data, f)
        out[f'{split}_ann'] = ann
        out[f'{split}_img'] = osp.join(folder, 'images')
    classes_json = osp.join(root, 'classes.json')
    os.makedirs(root, exist_ok=True)
    with open(classes_json, 'w') as f:
        json.dump(dict(classes=list(CLASSES), base_classes=list(base), novel_classes=list(novel)),
                  f)
    vocabulary_json = osp.join(root, 'vocabulary.json')
    with open(vocabulary_json, 'w') as f:
        json.dump([dict(name=n, isthing=1) for n in CLASSES], f)
    out['classes_json'] = classes_json
    out['vocabulary_json'] = vocabulary_json
    return out
