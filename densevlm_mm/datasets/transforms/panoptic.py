"""Load an image and its panoptic PNG, and turn the segments into evaluation regions (spec §6.1).

The panoptic PNG stores segment ids as RGB: ``id = R + 256·G + 256²·B`` (COCO panoptic format).
:func:`rgb2id` / :func:`id2rgb` convert between the two.
"""
import io
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio
from PIL import Image

from densevlm_mm.registry import TRANSFORMS

from .loading import to_rgb8


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB → ``[H, W]`` int64 segment ids (``R + 256·G + 256²·B``)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f'expected an [H, W, 3] RGB array, got shape {rgb.shape}')
    rgb = rgb[..., :3].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """``[H, W]`` integer segment ids (< 256³) → ``[H, W, 3]`` uint8 RGB."""
    ids = np.asarray(ids).astype(np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256**3:
        raise ValueError('panoptic segment ids must lie in [0, 256**3)')
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _read_bytes(path: str, what: str, backend_args: Optional[dict]) -> bytes:
    try:
        return fileio.get(path, backend_args=backend_args)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f'{what} not found: {path!r}') from exc


def load_rgb(path: str, what: str = 'image', backend_args: Optional[dict] = None) -> np.ndarray:
    """Read and decode an image file as uint8 RGB ``[H, W, 3]`` (PIL, like the reference; EXIF
    orientation not applied: annotations are in the stored pixel orientation; 16-bit grayscale
    scaled to 8 bits).

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: the file cannot be decoded (message names it).
    """
    content = _read_bytes(path, what, backend_args)
    try:
        with Image.open(io.BytesIO(content)) as im:
            return np.asarray(to_rgb8(im), dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises several exception types for corrupt data
        raise ValueError(f'cannot decode {what} {path!r}: {exc}') from exc


@TRANSFORMS.register_module()
class LoadPanopticRegions(BaseTransform):
    """Load ``img`` and the panoptic PNG; make one region per kept segment.

    Required keys: ``img_path``, ``seg_map_path``, ``segments_info`` (list of dicts with ``id``,
    ``category_id``, ``bbox`` xywh, ``iscrowd``; the panoptic datasets also add ``label`` = rank of the
    category id among the sorted category ids and ``isthing``).

    Added keys:

    * ``img`` uint8 RGB ``[H, W, 3]``, ``img_shape`` / ``ori_shape`` ``(H, W)``;
    * ``region_boxes`` float32 ``[K, 4]`` xyxy in original pixels;
    * ``region_labels`` int64 ``[K]``; ``region_is_thing`` bool ``[K]``;
    * ``region_masks`` bool ``[K, H, W]`` at the original resolution (when ``with_masks``).

    Region rules (spec §6.1): the first ``max_regions`` segments of the file are considered, in file
    order (like the reference, segments skipped below still count towards the cap); a thing's box is its
    GT ``bbox`` ``[x, y, x + w, y + h]``; a stuff box is the tight box of its mask with an exclusive
    max (``x1 = max col + 1``) — ``reference_stuff_box=True`` reproduces the reference's inclusive max
    (``x1 = max col``, 1 px short). A segment is skipped when its box area ``w·h`` is below
    ``min_size²`` or above ``max_size²`` (original pixels), when its mask is empty (the id does not
    occur in the PNG), or, with ``skip_crowd``, when it is a crowd segment (the reference keeps crowds).

    The PNG's segment ids must be those of ``segments_info`` (0 = void): an id in the PNG that the
    json does not list raises ``ValueError`` naming the image id and the PNG, as COCO's
    ``panopticapi`` evaluation does (checked once per image, when its PNG is read);
    ``check_png_ids=False`` leaves such pixels unlabelled, as the DenseVLM reference does.

    Args:
        max_regions: cap on the segments considered per image (reference: 100).
        min_size / max_size: box-area bounds, as side lengths (8 and 1024).
        reference_stuff_box: inclusive stuff-box max (reference behaviour, spec §10 item 18); also
            on for samples of ``region_protocol='reference'`` (set by the panoptic datasets).
        skip_crowd: drop ``iscrowd=1`` segments.
        with_masks: also produce ``region_masks``.
        check_png_ids: refuse PNG segment ids missing from ``segments_info`` (see above).
        category_ids: sorted category ids of the dataset, used when a segment has no ``label`` key.
        thing_category_ids: ids of thing categories, used when a segment has no ``isthing`` key.
        backend_args: mmengine file backend arguments.

    Raises:
        FileNotFoundError / ValueError naming the file when the image or PNG is missing or undecodable,
        or when the two sizes differ: evaluation never silently drops an image.
    """

    def __init__(self,
                 max_regions: int = 100,
                 min_size: float = 8,
                 max_size: float = 1024,
                 reference_stuff_box: bool = False,
                 skip_crowd: bool = False,
                 with_masks: bool = True,
                 check_png_ids: bool = True,
                 category_ids: Optional[Sequence[int]] = None,
                 thing_category_ids: Optional[Sequence[int]] = None,
                 backend_args: Optional[dict] = None) -> None:
        if max_regions <= 0:
            raise ValueError(f'max_regions must be positive, got {max_regions}')
        self.max_regions = int(max_regions)
        self.min_area = float(min_size)**2
        self.max_area = float(max_size)**2
        self.reference_stuff_box = bool(reference_stuff_box)
        self.skip_crowd = bool(skip_crowd)
        self.with_masks = bool(with_masks)
        self.check_png_ids = bool(check_png_ids)
        self.cat2label = (None if category_ids is None else
                          {int(c): i for i, c in enumerate(sorted(int(c) for c in category_ids))})
        self.thing_ids = None if thing_category_ids is None else {int(c) for c in thing_category_ids}
        self.backend_args = backend_args

    def _label(self, seg: dict, where: str) -> int:
        if 'label' in seg:
            return int(seg['label'])
        if self.cat2label is None:
            raise KeyError(f'{where}: segment {seg.get("id")} has no "label"; use a panoptic region '
                           'dataset or pass category_ids to LoadPanopticRegions')
        try:
            return self.cat2label[int(seg['category_id'])]
        except KeyError:
            raise KeyError(f'{where}: category id {seg["category_id"]} of segment {seg.get("id")} '
                           'is not among the dataset categories') from None

    def _is_thing(self, seg: dict, where: str) -> bool:
        for key in ('isthing', 'is_thing'):
            if key in seg:
                return bool(seg[key])
        if self.thing_ids is None:
            raise KeyError(f'{where}: segment {seg.get("id")} has no "isthing"; use a panoptic region '
                           'dataset or pass thing_category_ids to LoadPanopticRegions')
        return int(seg['category_id']) in self.thing_ids

    @staticmethod
    def _check_png_ids(ids: np.ndarray, results: Dict, seg_path: str) -> None:
        listed = {int(seg['id']) for seg in results.get('segments_info') or []}
        present, counts = np.unique(ids, return_counts=True)
        unlisted = [(int(i), int(c)) for i, c in zip(present, counts) if i != 0 and i not in listed]
        if unlisted:
            shown = ', '.join(f'{i} ({c} px)' for i, c in unlisted[:5])
            raise ValueError(
                f'panoptic PNG {seg_path!r} (image id {results.get("img_id")}) has segment ids '
                f'that its segments_info does not list: {shown}{" ..." if len(unlisted) > 5 else ""}'
                '. The PNG and the json disagree (COCO\'s panoptic evaluation refuses them too): '
                'use the PNGs written with this json. To leave such pixels unlabelled, as the '
                'DenseVLM reference does, set LoadPanopticRegions(check_png_ids=False).')

    def transform(self, results: Dict) -> Dict:
        img_path = results['img_path']
        seg_path = results.get('seg_map_path')
        if seg_path is None:
            raise KeyError(f'no "seg_map_path" for {img_path!r}: panoptic evaluation needs the PNG')
        img = load_rgb(img_path, 'image', self.backend_args)
        ids = rgb2id(load_rgb(seg_path, 'panoptic segmentation PNG', self.backend_args))
        h, w = img.shape[:2]
        if ids.shape != (h, w):
            raise ValueError(f'panoptic PNG {seg_path!r} is {ids.shape[1]}x{ids.shape[0]} but image '
                             f'{img_path!r} is {w}x{h}')
        if self.check_png_ids:
            self._check_png_ids(ids, results, seg_path)

        reference_box = self.reference_stuff_box or results.get('region_protocol') == 'reference'
        boxes: List[List[float]] = []
        labels: List[int] = []
        things: List[bool] = []
        masks: List[np.ndarray] = []
        empty = []
        for seg in list(results.get('segments_info') or [])[:self.max_regions]:
            if self.skip_crowd and seg.get('iscrowd', 0):
                continue
            label = self._label(seg, seg_path)
            is_thing = self._is_thing(seg, seg_path)
            mask = ids == int(seg['id'])
            rows, cols = mask.any(1), mask.any(0)
            if not rows.any():
                empty.append(seg['id'])
                continue
            if is_thing:
                x, y, bw, bh = (float(v) for v in seg['bbox'])
                box = [x, y, x + bw, y + bh]
            else:
                ys, xs = np.flatnonzero(rows), np.flatnonzero(cols)
                end = 0 if reference_box else 1
                box = [float(xs[0]), float(ys[0]), float(xs[-1] + end), float(ys[-1] + end)]
            area = (box[2] - box[0]) * (box[3] - box[1])
            if area < self.min_area or area > self.max_area:
                continue
            boxes.append(box)
            labels.append(label)
            things.append(is_thing)
            if self.with_masks:
                masks.append(mask)
        if empty:
            warnings.warn(f'{seg_path!r}: segments {empty} listed in segments_info do not occur in '
                          'the PNG; skipped')

        results['img'] = img
        results['img_shape'] = (h, w)
        results['ori_shape'] = (h, w)
        results['region_boxes'] = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        results['region_labels'] = np.asarray(labels, dtype=np.int64)
        results['region_is_thing'] = np.asarray(things, dtype=bool)
        if self.with_masks:
            results['region_masks'] = (np.stack(masks) if masks else
                                       np.zeros((0, h, w), dtype=bool))
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_regions={self.max_regions}, '
                f'min_area={self.min_area}, max_area={self.max_area}, '
                f'reference_stuff_box={self.reference_stuff_box}, skip_crowd={self.skip_crowd}, '
                f'with_masks={self.with_masks}, check_png_ids={self.check_png_ids})')
