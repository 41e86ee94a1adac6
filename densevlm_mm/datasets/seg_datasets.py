"""Open-vocabulary segmentation test sets with > 255 classes: ADE20K-847, PASCAL-Context-459.

mmseg 1.2.2 has ADE20K-150 (``ADE20KDataset``), PASCAL-Context-59 (``PascalContextDataset59``) and
COCO-Stuff-171 (``COCOStuffDataset``), but not the full-vocabulary sets used by open-vocabulary
segmentation papers. Their annotations are the detectron2 files of the SAN / CAT-Seg preparation
scripts: single-channel **uint16** TIFFs, label = class index, ``65535`` = ignore. mmseg's
``LoadAnnotations`` casts maps to uint8, so these datasets load with :class:`LoadWideSegAnnotations`
and are evaluated by ``IoUMetric(ignore_index=65535)`` (see ``configs/_base_/datasets/``).

Expected layouts (defaults of ``configs/_base_/datasets/seg_ade20k-847.py`` /
``seg_pascal-context-459.py``)::

    data/ADE20K_2021_17_01/
        images_detectron2/validation/*.jpg
        annotations_detectron2/validation/*.tif        uint16, 0..846, 65535 = ignore
    data/VOCdevkit/VOC2010/
        JPEGImages/*.jpg
        annotations_detectron2/pc459_val/*.tif         uint16, 0..458, 65535 = ignore
        labels.txt                                     459 lines ``<id>: <name>`` (id 1..459)
                                                       of the PASCAL-Context full release

ADE-847 class names are the 847 ``ADE20K_847_CATEGORIES`` in trainId order
(``densevlm_mm/vocab_data/ade20k_847.json``); PC-459 names are read from the dataset's own
``labels.txt`` (label ``k`` of the TIFF = line with id ``k + 1``). PC-459 images are listed from the
annotation folder (``JPEGImages`` holds every VOC2010 image, only the 5105 validation ones are
annotated).
"""
import json
import os.path as osp
import re
from typing import List, Optional, Sequence

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset

from densevlm_mm.registry import DATASETS, TRANSFORMS
from densevlm_mm.utils.files import read_text_file

from .transforms.seg_labels import apply_label_map, check_label_map

WIDE_IGNORE_INDEX = 65535
_VOCAB_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'vocab_data')


def ade20k_847_classes() -> List[str]:
    """The 847 ADE20K-full class names in trainId order (bundled ``vocab_data/ade20k_847.json``)."""
    with open(osp.join(_VOCAB_DIR, 'ade20k_847.json')) as f:
        entries = json.load(f)
    return [e['name'] if isinstance(e, dict) else str(e) for e in entries]


def read_class_names(path: str, expected: Optional[int] = None) -> List[str]:
    """Class names from a file of ``<id>: <name>`` lines (ids 1..N, any order) or one name a line.

    Raises:
        FileNotFoundError: no such file (the message names the expected layout).
        ValueError: ids not exactly 1..N, duplicate ids, or not ``expected`` names.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'class-name file not found: {path!r}. PASCAL-Context-459 needs the labels.txt of the '
            'PASCAL-Context full release (459 lines "<id>: <name>") under the data root, or pass '
            'class_file=<file with one name per line>.')
    lines = [ln.strip() for ln in read_text_file(path, 'class-name file').splitlines()
             if ln.strip()]
    numbered = [re.match(r'^(\d+)\s*:\s*(.+)$', ln) for ln in lines]
    if lines and all(numbered):
        by_id = {}
        for m in numbered:
            idx = int(m.group(1))
            if idx in by_id:
                raise ValueError(f'{path!r}: id {idx} appears twice')
            by_id[idx] = m.group(2).strip()
        if sorted(by_id) != list(range(1, len(by_id) + 1)):
            raise ValueError(f'{path!r}: ids must be 1..{len(by_id)} (label k = id k+1), got '
                             f'{sorted(by_id)[:3]}...{sorted(by_id)[-3:]}')
        names = [by_id[i] for i in range(1, len(by_id) + 1)]
    else:
        names = lines
    if expected is not None and len(names) != expected:
        raise ValueError(f'{path!r} lists {len(names)} classes, {expected} expected')
    return names


@TRANSFORMS.register_module()
class LoadWideSegAnnotations(BaseTransform):
    """Load a semantic map keeping labels above 255 (uint16 TIFF/PNG), as ``int64``.

    The replacement of mmseg's ``LoadAnnotations`` (which casts to uint8) for datasets with more
    than 255 classes. Applies the dataset's ``label_map``; ``reduce_zero_label`` is refused (the
    detectron2 files are already 0-based). The map is checked when loaded (:func:`check_label_map`):
    one channel, the size of its image (``ori_shape``), labels below ``num_classes`` or 65535.

    Args:
        num_classes: the dataset's class count (847, 459); ``None``: no value check.
        check_labels: ``False`` skips the value check (mmseg's ``IoUMetric`` then leaves labels
            outside the classes out of the ground truth).
        backend_args: mmengine file backend arguments.

    Added keys: ``gt_seg_map`` (int64 ``[H, W]``), ``seg_fields``.
    """

    def __init__(self, num_classes: Optional[int] = None, check_labels: bool = True,
                 backend_args: Optional[dict] = None) -> None:
        self.num_classes = num_classes
        self.check_labels = bool(check_labels)
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        if results.get('reduce_zero_label', False):
            raise ValueError('LoadWideSegAnnotations: reduce_zero_label=True is not supported; the '
                             'wide-label files are 0-based with 65535 = ignore')
        path = results['seg_map_path']
        data = fileio.get(path, backend_args=self.backend_args)
        seg = mmcv.imfrombytes(data, flag='unchanged', backend='pillow').squeeze()
        check_label_map(seg, path, results.get('ori_shape'))
        seg = apply_label_map(seg.astype(np.int64), results.get('label_map'))
        if self.check_labels:
            check_label_map(seg, path, num_classes=self.num_classes,
                            ignore_index=WIDE_IGNORE_INDEX)
        results['gt_seg_map'] = seg
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results


class _WideLabelDataset(BaseSegDataset):
    """``BaseSegDataset`` for 0-based uint16 maps (``.tif``) with ``65535`` = ignore."""

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.tif',
                 ignore_index: int = WIDE_IGNORE_INDEX, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         ignore_index=ignore_index, reduce_zero_label=False, **kwargs)


@DATASETS.register_module()
class ADE20K847Dataset(_WideLabelDataset):
    """ADE20K-full, 847 classes (validation: 2000 images). Layout in the module docstring."""
    METAINFO = dict(classes=tuple(ade20k_847_classes()))


@DATASETS.register_module()
class PascalContext459Dataset(_WideLabelDataset):
    """PASCAL-Context full, 459 classes (validation: 5105 images). Layout in the module docstring.

    Args:
        class_file: names file relative to ``data_root`` (or absolute);
            ``metainfo=dict(classes=...)`` overrides it.
        num_classes: the count ``class_file`` must hold (459; ``None`` accepts any).
        list_from_annotations: list the samples from the annotation folder (default) instead of the
            image folder when no ``ann_file`` is given.
    """

    def __init__(self, data_root: str = '', class_file: str = 'labels.txt',
                 num_classes: Optional[int] = 459, metainfo: Optional[dict] = None,
                 list_from_annotations: bool = True, **kwargs) -> None:
        self.list_from_annotations = list_from_annotations
        if metainfo is None or 'classes' not in metainfo:
            path = class_file if osp.isabs(class_file) else osp.join(data_root or '', class_file)
            metainfo = dict(metainfo or {}, classes=tuple(read_class_names(path, num_classes)))
        super().__init__(data_root=data_root, metainfo=metainfo, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes: Optional[Sequence] = None):
        return None  # the names come from the dataset itself: labels are used as stored

    def load_data_list(self) -> List[dict]:
        if self.ann_file or not self.list_from_annotations:
            return super().load_data_list()
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path', '')
        data_list = []
        for ann in fileio.list_dir_or_file(ann_dir, list_dir=False, suffix=self.seg_map_suffix,
                                           recursive=True, backend_args=self.backend_args):
            stem = ann[:-len(self.seg_map_suffix)]
            data_list.append(dict(img_path=osp.join(img_dir, stem + self.img_suffix),
                                  seg_map_path=osp.join(ann_dir, ann), label_map=self.label_map,
                                  reduce_zero_label=False, seg_fields=[]))
        return sorted(data_list, key=lambda x: x['img_path'])
