"""Semantic label maps checked against their image and the class list when they are loaded.

mmseg's ``LoadAnnotations`` casts a label map to uint8 before anything looks at it (16-bit
labels above 255 wrap around), keeps a three-channel (RGB) map as ``[H, W, 3]``, and nothing
compares the map's size with its image's; ``IoUMetric`` then drops label values outside the
classes without a word (``torch.histc`` bins) or fails deep inside with a shape error. The map is
read anyway for every sample (lazily, once per load), so checking it there costs one pass over its
pixels; each problem raises ``ValueError`` naming the file and the fix.
"""
from typing import Optional, Sequence, Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio

from densevlm_mm.registry import TRANSFORMS

__all__ = ['check_label_map', 'apply_label_map', 'LoadCheckedSegAnnotations']


def apply_label_map(seg: np.ndarray, label_map: Optional[dict]) -> np.ndarray:
    """``seg`` with the dataset's ``label_map`` ``{old: new}`` applied (all from the old
    values, as mmseg does); the array itself when there is none."""
    if not label_map:
        return seg
    mapped = seg.copy()
    for old, new in label_map.items():
        mapped[seg == old] = new
    return mapped


def check_label_map(seg: np.ndarray, path: str, image_shape: Optional[Sequence[int]] = None,
                    num_classes: Optional[int] = None, ignore_index: int = 255,
                    note: str = '') -> None:
    """Raise ``ValueError`` naming ``path`` when a loaded label map cannot be its image's labels.

    Args:
        seg: the label map after ``reduce_zero_label`` / ``label_map`` (what the metric sees).
        path: its file, for the message.
        image_shape: ``(H, W)`` of the original image (``ori_shape``): the map must have it.
        num_classes: labels must be ``0 .. num_classes - 1`` or ``ignore_index``
            (``None``: no value check).
        ignore_index: the "not labelled" value (255; 65535 for the 16-bit maps).
        note: how the file's values were mapped, appended to the value message.
    """
    if seg.ndim != 2:
        raise ValueError(f'label map {path!r} has shape {tuple(seg.shape)}: a label map has one '
                         'channel (a class index per pixel). A colour (RGB) rendering of the labels '
                         'is not a label map: convert it to class indices and save it as a '
                         'single-channel (grey "L" or palette "P") PNG.')
    if image_shape is not None and tuple(seg.shape) != tuple(image_shape[:2]):
        raise ValueError(f'label map {path!r} is {seg.shape[1]}x{seg.shape[0]} but its image is '
                         f'{image_shape[1]}x{image_shape[0]} (width x height): it belongs to '
                         'another image, or one of the two was resized. Use the label map made '
                         'for this image.')
    if num_classes is None:
        return
    bad = (seg >= num_classes) & (seg != ignore_index)
    if bad.any():
        pairs = list(zip(*(a.tolist() for a in np.unique(seg[bad], return_counts=True))))
        shown = ', '.join(f'{v} ({c} px)' for v, c in pairs[:5])
        raise ValueError(
            f'label map {path!r} has label values outside the {num_classes} classes: {shown}'
            f'{" ..." if len(pairs) > 5 else ""}; allowed are 0..{num_classes - 1} and '
            f'{ignore_index} (ignore){note}. The map belongs to another class list, or '
            'num_classes / reduce_zero_label of the pipeline are wrong. mmseg would leave these '
            'pixels out of the ground truth without a word; to do the same on purpose, set '
            'check_labels=False in the loading transform.')


@TRANSFORMS.register_module()
class LoadCheckedSegAnnotations(BaseTransform):
    """mmseg's ``LoadAnnotations`` (uint8 label maps, ``reduce_zero_label``, ``label_map``) with
    the checks of :func:`check_label_map`.

    A twin of mmseg's transform because mmseg casts to uint8 before a check could see the file's
    values. Same results as mmseg's for a good map (``gt_seg_map`` uint8 ``[H, W]``, appended to
    ``seg_fields``).

    Args:
        num_classes: the dataset's class count; label values must be below it or
            ``ignore_index``. ``None``: only the shape checks.
        ignore_index: the ignore label after ``reduce_zero_label`` (mmseg: 255).
        reduce_zero_label: as mmseg's (``None``: the dataset's ``reduce_zero_label``; a value
            that differs from the dataset's raises).
        check_labels: ``False`` skips the value check (mmseg's behaviour: ``IoUMetric`` leaves
            labels outside the classes out of the ground-truth areas); the shape checks stay.
        imdecode_backend / backend_args: as mmseg's.

    Raises:
        ValueError: naming the file: more than one channel, another size than the image
            (``ori_shape``), values above 255 (a 16-bit map: use ``LoadWideSegAnnotations``), or
            values outside the classes.
    """

    def __init__(self,
                 num_classes: Optional[int] = None,
                 ignore_index: int = 255,
                 reduce_zero_label: Optional[bool] = None,
                 check_labels: bool = True,
                 imdecode_backend: str = 'pillow',
                 backend_args: Optional[dict] = None) -> None:
        if num_classes is not None and (isinstance(num_classes, bool) or
                                        not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f'LoadCheckedSegAnnotations: num_classes must be a positive integer '
                             f'(the dataset\'s class count), got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reduce_zero_label = reduce_zero_label
        self.check_labels = bool(check_labels)
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args

    def _reduce_zero_label(self, results: dict) -> Tuple[bool, str]:
        dataset = results.get('reduce_zero_label')
        if self.reduce_zero_label is None:
            return bool(dataset), 'the dataset\'s'
        if dataset is not None and bool(dataset) != bool(self.reduce_zero_label):
            raise ValueError(f'LoadCheckedSegAnnotations: reduce_zero_label={self.reduce_zero_label}'
                             f' but the dataset has reduce_zero_label={dataset}; remove it from '
                             'the transform (the dataset\'s is used).')
        return bool(self.reduce_zero_label), 'the transform\'s'

    def transform(self, results: dict) -> dict:
        path = results['seg_map_path']
        seg = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args),
                               flag='unchanged', backend=self.imdecode_backend).squeeze()
        check_label_map(seg, path, results.get('ori_shape'))
        if seg.size and int(seg.max()) > 255:
            raise ValueError(f'label map {path!r} holds values up to {int(seg.max())}: a 16-bit '
                             'map, which an 8-bit loader would wrap around (256 -> 0). Load it '
                             'with densevlm_mm.LoadWideSegAnnotations and evaluate with '
                             'IoUMetric(ignore_index=65535).')
        seg = seg.astype(np.uint8)
        reduce, whose = self._reduce_zero_label(results)
        note = ''
        if reduce:  # mmseg: 0 -> 255 (ignore), v -> v - 1
            seg[seg == 0] = 255
            seg = seg - 1
            seg[seg == 254] = 255
            note = f' after {whose} reduce_zero_label (file value v is label v - 1, 0 is ignore)'
        if results.get('label_map'):
            seg = apply_label_map(seg, results['label_map'])
            note += ' after the dataset\'s label_map'
        if self.check_labels:
            check_label_map(seg, path, num_classes=self.num_classes,
                            ignore_index=self.ignore_index, note=note)
        results['gt_seg_map'] = seg
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, reduce_zero_label={self.reduce_zero_label}, '
                f'check_labels={self.check_labels})')
