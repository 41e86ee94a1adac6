"""A tiny synthetic dataset in COCO panoptic format, for tests and the demo.

:func:`make_synthetic_panoptic` draws images whose background is split into two textured *stuff*
regions and that hold a few *thing* shapes (rectangles / ellipses); every class has its own colour
and texture or shape, so a model can learn them. :func:`write_panoptic_dataset` writes any list of
(image, id map, segments) as a panoptic dataset and is what tests use for hand-made cases.

Layout written under ``root``::

    images/000000.jpg ...          RGB images
    panoptic/000000.png ...        segment ids as RGB (id = R + 256·G + 256²·B)
    panoptic.json                  categories / images / annotations (segments_info)
    instances.json                 COCO instances-style listing (images, thing annotations)
    vocabulary.json                [{name, isthing}] in sorted category-id order
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .transforms.panoptic import id2rgb

# Category ids are deliberately non-contiguous, and stuff ids exceed 65535 / 256 in segment ids, so
# the sorted-id label mapping and the 3-channel id decoding are both exercised.
DEFAULT_CATEGORIES: List[dict] = [
    dict(id=1, name='person', isthing=1, color=(220, 20, 60), shape='ellipse'),
    dict(id=3, name='car', isthing=1, color=(0, 0, 142), shape='rect'),
    dict(id=18, name='dog', isthing=1, color=(255, 170, 0), shape='ellipse'),
    dict(id=44, name='bottle', isthing=1, color=(140, 0, 200), shape='rect'),
    dict(id=149, name='road', isthing=0, color=(80, 80, 80), texture='dashes'),
    dict(id=187, name='sky', isthing=0, color=(110, 170, 235), texture='gradient'),
    dict(id=193, name='grass', isthing=0, color=(60, 160, 50), texture='noise'),
    dict(id=199, name='wall', isthing=0, color=(190, 120, 80), texture='bricks'),
]


def _mask_bbox(mask: np.ndarray) -> List[int]:
    """COCO panoptic bbox ``[x, y, w, h]`` of a mask (exclusive extent)."""
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major runs starting with background)."""
    flat = np.asfortranarray(mask).reshape(-1, order='F').astype(np.uint8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])) != 0)
    counts = np.diff(np.concatenate([[0], change]))
    return dict(counts=[int(c) for c in counts], size=list(mask.shape))


def write_panoptic_dataset(root: str, categories: Sequence[dict], samples: Sequence[dict],
                           img_dir: str = 'images', seg_dir: str = 'panoptic',
                           ann_name: str = 'panoptic.json') -> Dict[str, str]:
    """Write ``samples`` as a COCO-panoptic dataset under ``root``.

    Args:
        categories: dicts with ``id``, ``name``, ``isthing`` (other keys are dropped).
        samples: dicts with ``image`` (uint8 ``[H, W, 3]``), ``ids`` (int ``[H, W]`` segment-id map,
            0 = void) and ``segments`` (list of dicts with ``id``, ``category_id`` and optionally
            ``bbox`` / ``area`` / ``iscrowd``; missing ``bbox``/``area`` are computed from the map).
            Optional ``file_name`` (default ``%06d.jpg``) and ``image_id``.

    Returns:
        dict of paths: ``root``, ``img_dir``, ``seg_dir``, ``panoptic_json``, ``instances_json``,
        ``vocabulary_json``.
    """
    os.makedirs(osp.join(root, img_dir), exist_ok=True)
    os.makedirs(osp.join(root, seg_dir), exist_ok=True)
    cats = [dict(id=int(c['id']), name=str(c['name']), isthing=int(bool(c['isthing'])),
                 supercategory=c.get('supercategory', 'thing' if c['isthing'] else 'stuff'))
            for c in categories]
    thing_ids = {c['id'] for c in cats if c['isthing']}
    images, annotations, instances = [], [], []
    for i, sample in enumerate(samples):
        image = np.asarray(sample['image'], dtype=np.uint8)
        ids = np.asarray(sample['ids'])
        if image.shape[:2] != ids.shape:
            raise ValueError(f'sample {i}: image {image.shape[:2]} and id map {ids.shape} differ')
        h, w = ids.shape
        image_id = int(sample.get('image_id', i + 1))
        file_name = sample.get('file_name', f'{i:06d}.jpg')
        png_name = osp.splitext(file_name)[0] + '.png'
        Image.fromarray(image).save(osp.join(root, img_dir, file_name), quality=95)
        Image.fromarray(id2rgb(ids)).save(osp.join(root, seg_dir, png_name))
        segments_info = []
        for seg in sample['segments']:
            mask = ids == seg['id']
            info = dict(id=int(seg['id']), category_id=int(seg['category_id']),
                        iscrowd=int(seg.get('iscrowd', 0)))
            info['bbox'] = list(seg['bbox']) if 'bbox' in seg else (
                _mask_bbox(mask) if mask.any() else [0, 0, 0, 0])
            info['area'] = int(seg.get('area', mask.sum()))
            segments_info.append(info)
            if info['category_id'] in thing_ids and mask.any():
                instances.append(dict(id=len(instances) + 1, image_id=image_id,
                                      category_id=info['category_id'], bbox=info['bbox'],
                                      area=info['area'], iscrowd=info['iscrowd'],
                                      segmentation=_rle(mask)))
        images.append(dict(id=image_id, file_name=file_name, height=h, width=w))
        annotations.append(dict(image_id=image_id, file_name=png_name,
                                segments_info=segments_info))
    paths = dict(root=root, img_dir=osp.join(root, img_dir), seg_dir=osp.join(root, seg_dir),
                 panoptic_json=osp.join(root, ann_name),
                 instances_json=osp.join(root, 'instances.json'),
                 vocabulary_json=osp.join(root, 'vocabulary.json'))
    with open(paths['panoptic_json'], 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=cats), f)
    with open(paths['instances_json'], 'w') as f:
        json.dump(dict(images=images, annotations=instances,
                       categories=[c for c in cats if c['isthing']]), f)
    with open(paths['vocabulary_json'], 'w') as f:
        json.dump([dict(name=c['name'], isthing=c['isthing'])
                   for c in sorted(cats, key=lambda c: c['id'])], f, indent=0)
    return paths


def _palette(n: int, rng: np.random.Generator) -> List[Tuple[int, int, int]]:
    return [tuple(int(v) for v in rng.integers(30, 226, 3)) for _ in range(n)]


def _texture(kind: str, color, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    base = np.empty((h, w, 3), dtype=np.float32)
    base[:] = np.asarray(color, dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 'gradient':
        base *= (0.75 + 0.4 * yy / max(h - 1, 1))[..., None]
    elif kind == 'noise':
        base += rng.normal(0, 22, (h, w, 1))
    elif kind == 'dashes':
        base[((yy // 3) % 8 == 0) & ((xx // 6) % 2 == 0)] = 235
    elif kind == 'bricks':
        mortar = (yy % 8 == 0) | (((xx + 8 * ((yy // 8) % 2)) % 16) == 0)
        base[mortar] = 220
    elif kind == 'stripes':
        base[(xx + yy) % 10 < 3] *= 0.6
    base += rng.normal(0, 4, (h, w, 1))
    return base


def make_synthetic_panoptic(root: str, num_images: int = 8, image_size: Tuple[int, int] = (96, 128),
                            categories: Optional[Sequence[dict]] = None,
                            seed: int = 0) -> Dict[str, object]:
    """Write a small learnable panoptic dataset under ``root`` (layout in the module docstring).

    Each image: two stuff regions (a horizontal or vertical split at a random position, each with the
    class's colour and texture) and 1–3 thing shapes (class colour, class shape: ``'rect'`` or
    ``'ellipse'``), later shapes occluding earlier ones. Bounding boxes and areas are computed from the
    final masks; fully hidden segments are left out.

    Args:
        root: output folder (created).
        num_images: number of images.
        image_size: ``(H, W)``.
        categories: dicts with ``id``, ``name``, ``isthing`` and optionally ``color`` (RGB),
            ``shape`` (things) and ``texture`` (stuff: ``gradient``/``noise``/``dashes``/``bricks``/
            ``stripes``/``flat``); default :data:`DEFAULT_CATEGORIES` (4 things, 4 stuff). Needs at
            least one thing and one stuff class.
        seed: RNG seed (the output is deterministic).

    Returns:
        dict with the paths of :func:`write_panoptic_dataset` plus ``classes`` / ``is_thing`` /
        ``category_ids`` (sorted-id order, as the datasets' metainfo) and ``num_images``. Use
        ``PanopticRegionDataset(ann_file=paths['panoptic_json'], data_root='',
        data_prefix=dict(img=paths['img_dir'], seg=paths['seg_dir']))``.
    """
    rng = np.random.default_rng(seed)
    cats = [dict(c) for c in (categories or DEFAULT_CATEGORIES)]
    palette = _palette(len(cats), rng)
    textures = ['noise', 'stripes', 'gradient', 'dashes', 'bricks', 'flat']
    for i, c in enumerate(cats):
        c.setdefault('color', palette[i])
        c.setdefault('shape', ('rect', 'ellipse')[i % 2])
        c.setdefault('texture', textures[i % len(textures)])
    things = [c for c in cats if c['isthing']]
    stuff = [c for c in cats if not c['isthing']]
    if not things or not stuff:
        raise ValueError('make_synthetic_panoptic needs at least one thing and one stuff category')
    h, w = image_size
    yy, xx = np.mgrid[0:h, 0:w]
    samples = []
    for i in range(num_images):
        image = np.zeros((h, w, 3), dtype=np.float32)
        ids = np.zeros((h, w), dtype=np.int64)
        segments = []
        picks = rng.choice(len(stuff), size=min(2, len(stuff)), replace=False)
        vertical = bool(rng.integers(2))
        split = int(rng.uniform(0.35, 0.65) * (w if vertical else h))
        for k, j in enumerate(picks):
            cat = stuff[j]
            coord = xx if vertical else yy
            region = (coord < split) if k == 0 else (coord >= split)
            if len(picks) == 1:
                region = np.ones_like(region)
            seg_id = cat['id'] * 1000 + k + 1
            image[region] = _texture(cat['texture'], cat['color'], h, w, rng)[region]
            ids[region] = seg_id
            segments.append(dict(id=seg_id, category_id=cat['id']))
        for k in range(int(rng.integers(1, 4))):
            cat = things[int(rng.integers(len(things)))]
            bh = int(rng.uniform(0.22, 0.45) * h)
            bw = int(rng.uniform(0.15, 0.35) * w)
            y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            if cat['shape'] == 'ellipse':
                cy, cx = y0 + (bh - 1) / 2, x0 + (bw - 1) / 2
                region = ((yy - cy) / (bh / 2))**2 + ((xx - cx) / (bw / 2))**2 <= 1
            else:
                region = (yy >= y0) & (yy < y0 + bh) & (xx >= x0) & (xx < x0 + bw)
            seg_id = cat['id'] * 1000 + 100 + k
            shade = np.asarray(cat['color'], dtype=np.float32) * (1 - 0.25 * (yy - y0) / bh)[..., None]
            image[region] = shade[region] + rng.normal(0, 3, (int(region.sum()), 1))
            ids[region] = seg_id
            segments.append(dict(id=seg_id, category_id=cat['id']))
        present = set(np.unique(ids).tolist())
        samples.append(dict(image=np.clip(image, 0, 255).astype(np.uint8), ids=ids,
                            segments=[s for s in segments if s['id'] in present]))
    paths: Dict[str, object] = dict(write_panoptic_dataset(root, cats, samples))
    ordered = sorted(cats, key=lambda c: c['id'])
    paths.update(classes=tuple(c['name'] for c in ordered),
                 is_thing=[bool(c['isthing']) for c in ordered],
                 category_ids=[int(c['id']) for c in ordered], num_images=num_images)
    return paths
