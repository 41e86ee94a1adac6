"""A tiny generated semantic-segmentation dataset in mmseg's folder layout, for tests and the demo.

:func:`make_synthetic_segmentation` draws images whose classes are visible: *region* classes
(``sky``, ``grass``, ``road``, ``wall``) fill the background with their own colour and texture,
*shape* classes (``car``, ``person``, ``dog``, ``boat``) are rectangles / ellipses / triangles in
their own colour. Pixels on the one-pixel outline of every shape are ``255`` (ignore), so the ignore
path of the loss and of :class:`mmseg.evaluation.IoUMetric` is exercised.

Layout written under ``root`` (that of mmseg's ``BaseSegDataset``)::

    images/train/000000.jpg ...        RGB images
    images/val/000000.jpg ...
    annotations/train/000000.png ...   uint8 label ids (0..num_classes-1, 255 = ignore)
    annotations/val/000000.png ...
    classes.json                       {"classes": [...], "palette": [[r, g, b], ...]}

:class:`SyntheticSegDataset` reads it (its metainfo comes from ``classes.json`` when the config
gives none).
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
from mmseg.datasets import BaseSegDataset
from PIL import Image

from densevlm_mm.registry import DATASETS

# (name, kind, colour, texture or shape). The order interleaves region and shape classes so that
# every prefix of length >= 2 holds both kinds.
CLASS_TABLE = (
    ('sky', 'region', (110, 170, 235), 'gradient'),
    ('car', 'shape', (20, 20, 150), 'rect'),
    ('grass', 'region', (60, 160, 50), 'noise'),
    ('person', 'shape', (220, 20, 60), 'ellipse'),
    ('road', 'region', (90, 90, 90), 'dashes'),
    ('dog', 'shape', (235, 170, 0), 'triangle'),
    ('wall', 'region', (190, 120, 80), 'bricks'),
    ('boat', 'shape', (150, 0, 200), 'ellipse'),
)
ALL_CLASSES = tuple(c[0] for c in CLASS_TABLE)
ALL_PALETTE = [list(c[2]) for c in CLASS_TABLE]
IGNORE_INDEX = 255


def _texture(kind: str, color, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """``[h, w, 3]`` float image of a region class: its colour with its texture."""
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = np.asarray(color, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 'gradient':
        img *= (0.8 + 0.35 * yy / max(h - 1, 1))[..., None]
    elif kind == 'noise':
        img += rng.normal(0, 20, (h, w, 1))
    elif kind == 'dashes':
        img[((yy // 3) % 6 == 0) & ((xx // 5) % 2 == 0)] = 240
    elif kind == 'bricks':
        img[(yy % 8 == 0) | (((xx + 8 * ((yy // 8) % 2)) % 16) == 0)] = 225
    return img + rng.normal(0, 4, (h, w, 1))


def _shape_mask(shape: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``[h, w]`` mask of one randomly placed shape (20-45 % of each side)."""
    bh, bw = int(rng.uniform(0.25, 0.45) * h), int(rng.uniform(0.2, 0.4) * w)
    y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    yy, xx = np.mgrid[0:h, 0:w]
    inside = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
    if shape == 'ellipse':
        cy, cx = y0 + (bh - 1) / 2, x0 + (bw - 1) / 2
        return ((yy - cy) / (bh / 2))**2 + ((xx - cx) / (bw / 2))**2 <= 1
    if shape == 'triangle':  # apex at the top centre
        rel = (yy - y0 + 1) / bh
        return inside & (np.abs(xx - (x0 + bw / 2)) <= rel * bw / 2)
    return inside


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (and outside pixels next to it)."""
    pad = np.pad(mask, 1, mode='edge')
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:] & mask
    grown = pad[:-2, 1:-1] | pad[2:, 1:-1] | pad[1:-1, :-2] | pad[1:-1, 2:] | mask
    return grown & ~inner


def _draw(num_classes: int, size: int, rng: np.random.Generator):
    """One ``(image uint8 [S, S, 3], label uint8 [S, S])`` pair."""
    table = CLASS_TABLE[:num_classes]
    regions = [i for i, c in enumerate(table) if c[1] == 'region']
    shapes = [i for i, c in enumerate(table) if c[1] == 'shape']
    image = np.zeros((size, size, 3), dtype=np.float32)
    label = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    picks = rng.choice(regions, size=min(2, len(regions)), replace=False)
    split = int(rng.uniform(0.3, 0.7) * size)
    coord = xx if rng.integers(2) else yy
    for k, cls in enumerate(picks):
        area = np.ones_like(label, dtype=bool) if len(picks) == 1 else (
            (coord < split) if k == 0 else (coord >= split))
        image[area] = _texture(table[cls][3], table[cls][2], size, size, rng)[area]
        label[area] = cls
    ignore = np.zeros_like(label, dtype=bool)
    for _ in range(int(rng.integers(1, 4)) if shapes else 0):
        cls = int(rng.choice(shapes))
        mask = _shape_mask(table[cls][3], size, size, rng)
        shade = np.asarray(table[cls][2], np.float32) * (0.8 + 0.2 * xx / size)[..., None]
        image[mask] = shade[mask] + rng.normal(0, 3, (int(mask.sum()), 1))
        label[mask] = cls
        ignore = (ignore & ~mask) | _outline(mask)
    label[ignore] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_synthetic_segmentation(root: str, num_images: int = 16, size: int = 96,
                                num_classes: int = 6, seed: int = 0,
                                num_val: Optional[int] = None) -> Dict[str, object]:
    """Write a small learnable segmentation dataset under ``root`` (layout in the module docstring).

    Args:
        root: output folder (created; existing files of the same names are overwritten).
        num_images: number of training images.
        size: side of the square images.
        num_classes: 2..8; the first ``num_classes`` names of :data:`ALL_CLASSES`
            (``sky, car, grass, person, road, dog`` for 6), region and shape classes alternating.
        seed: RNG seed; the files are identical for equal arguments.
        num_val: number of validation images (default ``max(2, num_images // 4)``).

    Returns:
        dict with ``data_root`` (= ``root``), ``img_dir`` / ``ann_dir`` (``'images'`` /
        ``'annotations'``, relative to ``data_root``; the splits are their ``train`` / ``val``
        sub-folders), ``train_prefix`` / ``val_prefix`` (ready ``data_prefix`` dicts of mmseg
        datasets), ``classes`` (names; label id = index), ``palette``, ``num_train``, ``num_val``.
    """
    if not 2 <= num_classes <= len(CLASS_TABLE):
        raise ValueError(f'make_synthetic_segmentation: num_classes={num_classes}; '
                         f'use 2..{len(CLASS_TABLE)}')
    if size < 16:
        raise ValueError(f'make_synthetic_segmentation: size={size} is too small; use >= 16')
    num_val = max(2, num_images // 4) if num_val is None else num_val
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_images), ('val', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(count):
            image, label = _draw(num_classes, size, rng)
            Image.fromarray(image).save(osp.join(root, 'images', split, f'{i:06d}.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(root, 'annotations', split, f'{i:06d}.png'))
    classes: List[str] = list(ALL_CLASSES[:num_classes])
    palette = ALL_PALETTE[:num_classes]
    with open(osp.join(root, 'classes.json'), 'w') as f:
        json.dump(dict(classes=classes, palette=palette), f)
    return dict(data_root=root, img_dir='images', ann_dir='annotations',
                train_prefix=dict(img_path='images/train', seg_map_path='annotations/train'),
                val_prefix=dict(img_path='images/val', seg_map_path='annotations/val'),
                classes=classes, palette=palette, num_train=num_images, num_val=num_val)


@DATASETS.register_module()
class SyntheticSegDataset(BaseSegDataset):
    """The dataset written by :func:`make_synthetic_segmentation` (mmseg ``BaseSegDataset``).

    ``metainfo`` defaults to ``data_root/classes.json``; ``data_prefix`` defaults to the training
    split. Labels are used as stored (no ``reduce_zero_label``), 255 is ignored.
    """
    METAINFO = dict(classes=ALL_CLASSES, palette=ALL_PALETTE)

    def __init__(self, data_root: str = '', metainfo: Optional[dict] = None,
                 data_prefix: dict = dict(img_path='images/train',
                                          seg_map_path='annotations/train'),
                 **kwargs) -> None:
        meta_file = osp.join(data_root or '', 'classes.json')
        if metainfo is None and osp.isfile(meta_file):
            with open(meta_file) as f:
                metainfo = json.load(f)
        super().__init__(data_root=data_root, metainfo=metainfo, data_prefix=data_prefix,
                         img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
                         **kwargs)
