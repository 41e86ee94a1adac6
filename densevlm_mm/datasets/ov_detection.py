"""Open-vocabulary detection datasets: OV-COCO (48 base / 17 novel) and OV-LVIS (866 / 337 rare).

Both read the *standard* annotation files (COCO 2017 ``instances_*.json``, LVIS v1 ``lvis_v1_*.json``)
and do the base/novel split themselves: with ``filter_novel=True`` (training) every annotation of a
novel class is removed, so the detector never sees a novel box (images whose only boxes were novel are
then dropped by ``filter_cfg.filter_empty_gt``). The split files of CLIPSelf / OVR-CNN
(``instances_train2017_seen_2_65_cat.json``, ``instances_train2017_seen_2.json``,
``instances_val2017_all_2.json``, ``lvis_v1_train_seen_1203_cat.json``) load unchanged: labels are
looked up **by category name**, so a file that lists only the 48 base categories still gives labels in
the 65-class order.

``metainfo`` carries ``classes`` (label order = the detector's text-embedding columns),
``base_classes`` and ``novel_classes``; mmdet's ``OVCocoMetric`` reads the last two.
"""
import copy
import logging
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Union

from mmdet.datasets import CocoDataset, LVISV1Dataset
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from densevlm_mm.registry import DATASETS
from densevlm_mm.utils.files import json_errors_name_file, load_json_file
from densevlm_mm.vocabulary import check_same_classes

VOCAB_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'vocab_data')
ClassList = Union[str, Sequence[str]]


def read_class_list(source: ClassList) -> List[str]:
    """Class names from a list, a JSON file (names or ``{"name": ...}`` objects) or a bundled
    vocabulary name (``'ovcoco_48_base'``, ``'ovlvis_337_novel_rare'``, ... in ``vocab_data/``)."""
    if not isinstance(source, str):
        return [str(n) for n in source]
    path = source if osp.isfile(source) else osp.join(VOCAB_DIR, f'{source}.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'class list {source!r} is neither a JSON file nor a bundled '
                                f'vocabulary in {VOCAB_DIR}')
    data = load_json_file(path, 'class list')
    if isinstance(data, dict) and 'names' in data:
        data = data['names']
    if not isinstance(data, list):
        raise ValueError(f'class list {path!r} must be a JSON list of names')
    return [e['name'] if isinstance(e, dict) else str(e) for e in data]


def check_annotation_categories(ann_file: str, data: dict, refuse: bool = True) -> None:
    """Annotations whose category id the file's ``categories`` do not list: ``ValueError`` naming
    the first one's annotation and image (``refuse``), else a log line counting them (mmdet
    drops them; ``check_categories=False`` of the datasets, mmdet's behaviour said aloud)."""
    known = {c['id'] for c in data.get('categories', [])}
    unknown = [a for a in data.get('annotations', []) if a.get('category_id') not in known]
    if not unknown:
        return
    first = unknown[0]
    if refuse:
        raise ValueError(
            f'{ann_file!r}: annotation {first.get("id")} of image {first.get("image_id")} has '
            f'category_id {first.get("category_id")!r}, which the file\'s "categories" do not '
            f'list ({len(unknown)} such annotations; the annotations and the category list of the '
            'file disagree). Fix the file, or use the original annotation file of the data set; '
            'check_categories=False skips them (what mmdet does without a word).')
    ids = sorted({str(a.get('category_id')) for a in unknown})
    print_log(f'{ann_file}: skipped {len(unknown)} annotations whose category id is not in the '
              f'file\'s categories ({", ".join(ids[:5])}{", ..." if len(ids) > 5 else ""})',
              logger='current', level=logging.WARNING)


def log_annotations_outside_classes(dataset, data: dict, used_ids: set) -> None:
    """Count (and log) the annotations of the file's categories that ``classes`` leaves out: mmdet
    skips them (OV-COCO's 65 of COCO's 80 categories)."""
    names = {c['id']: c['name'] for c in data.get('categories', [])}
    left = Counter(a['category_id'] for a in data.get('annotations', [])
                   if a['category_id'] not in used_ids and a['category_id'] in names)
    if left:
        shown = ', '.join(f'{names[c]} ({n})' for c, n in left.most_common(5))
        print_log(f'{type(dataset).__name__}: {sum(left.values())} annotations of {len(left)} '
                  f'categories of {dataset.ann_file!r} that are not in `classes` are skipped: '
                  f'{shown}{", ..." if len(left) > 5 else ""}', logger='current')


def _check_split(classes: List[str], base: List[str], novel: List[str], what: str) -> None:
    """base ∪ novel = classes, disjoint, every name known."""
    unknown = [n for n in base + novel if n not in classes]
    if unknown:
        raise ValueError(f'{what}: base/novel classes {unknown[:5]} are not in `classes`')
    overlap = sorted(set(base) & set(novel))
    if overlap:
        raise ValueError(f'{what}: classes {overlap[:5]} are both base and novel')
    missing = [n for n in classes if n not in base and n not in novel]
    if missing:
        raise ValueError(f'{what}: classes {missing[:5]} are neither base nor novel; every class '
                         'needs a side of the split')


class _OVSplitMixin:
    """Resolves the class lists, puts them in ``metainfo`` and removes novel annotations."""

    def _init_split(self, classes: Optional[ClassList], base_classes: ClassList,
                    novel_classes: Optional[ClassList], filter_novel: bool,
                    metainfo: Optional[dict]) -> dict:
        metainfo = dict(metainfo or {})
        all_names = read_class_list(classes) if classes is not None else \
            list(metainfo.get('classes', self.METAINFO['classes']))
        base = read_class_list(base_classes)
        novel = read_class_list(novel_classes) if novel_classes is not None else \
            [n for n in all_names if n not in base]
        _check_split(all_names, base, novel, type(self).__name__)
        metainfo.update(classes=tuple(all_names), base_classes=tuple(base),
                        novel_classes=tuple(novel))
        self.filter_novel = filter_novel
        return metainfo

    def _drop_novel(self, data_list: List[dict]) -> List[dict]:
        names = self.metainfo['classes']
        novel = {names.index(n) for n in self.metainfo['novel_classes']}
        removed = 0
        for info in data_list:
            kept = [ins for ins in info['instances'] if ins['bbox_label'] not in novel]
            removed += len(info['instances']) - len(kept)
            info['instances'] = kept
        print_log(f'{type(self).__name__}: removed {removed} annotations of the '
                  f'{len(novel)} novel classes (training on base classes only)', logger='current')
        return data_list

    def filter_data(self) -> List[dict]:
        """mmdet's filter, but "empty" means no base-class box left after the novel filtering."""
        if self.test_mode or self.filter_cfg is None:
            return self.data_list
        filter_empty_gt = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        out = []
        for info in self.data_list:
            if filter_empty_gt and not any(not ins.get('ignore_flag', 0)
                                           for ins in info['instances']):
                continue
            if min(info['width'], info['height']) >= min_size:
                out.append(info)
        return out


@DATASETS.register_module()
class OVCocoDataset(_OVSplitMixin, CocoDataset):
    """COCO detection with an open-vocabulary split (default OV-COCO: 65 classes, 48 base).

    Args:
        classes: label order (a list, a JSON file or a bundled name; default ``'ovcoco_65_all'``).
        base_classes / novel_classes: the split (default ``'ovcoco_48_base'`` / the rest).
        filter_novel: drop novel-class annotations (``True`` for training sets).
        check_categories: refuse annotations whose category id the file does not list
            (``False``: skip and count them; mmdet skips them silently).
        **kwargs: :class:`mmdet.datasets.CocoDataset` arguments.

    Raises:
        ValueError: a class of ``classes`` is missing from the annotation file (unless it is novel and
            ``filter_novel``), or, for evaluation, the class order differs from the file's category-id
            order (mmdet's COCO metrics map label ``i`` to the ``i``-th id).
    """

    def __init__(self, *args, classes: ClassList = 'ovcoco_65_all',
                 base_classes: ClassList = 'ovcoco_48_base',
                 novel_classes: Optional[ClassList] = 'ovcoco_17_novel',
                 filter_novel: bool = False, metainfo: Optional[dict] = None,
                 check_categories: bool = True, **kwargs) -> None:
        self.check_categories = bool(check_categories)
        metainfo = self._init_split(classes, base_classes, novel_classes, filter_novel, metainfo)
        super().__init__(*args, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            with json_errors_name_file(local_path):
                self.coco = self.COCOAPI(local_path)
        check_annotation_categories(self.ann_file, self.coco.dataset, self.check_categories)
        by_name: Dict[str, int] = {c['name']: c['id'] for c in self.coco.cats.values()}
        classes = list(self.metainfo['classes'])
        novel = set(self.metainfo['novel_classes'])
        absent = [n for n in classes if n not in by_name]
        if absent and not (self.filter_novel and set(absent) <= novel):
            raise ValueError(f'{self.ann_file!r} has no categories named {absent[:5]} '
                             f'({len(absent)} of {len(classes)} classes missing); use the annotation '
                             'file of this class list (e.g. instances_val2017.json for OV-COCO).')
        present = [n for n in classes if n in by_name]
        ids = [by_name[n] for n in present]
        if not self.filter_novel and ids != sorted(ids):
            raise ValueError(f'{self.ann_file!r}: `classes` are not in category-id order; mmdet\'s '
                             'COCO metrics map label i to the i-th category id, so list the classes '
                             'by increasing id.')
        self.cat_ids = ids
        self.cat2label = {by_name[n]: classes.index(n) for n in present}
        log_annotations_outside_classes(self, self.coco.dataset, set(ids))
        self.cat_img_map = copy.deepcopy(self.coco.cat_img_map)
        data_list, ann_ids_all = [], []
        for img_id in self.coco.get_img_ids():
            raw_img_info = self.coco.load_imgs([img_id])[0]
            raw_img_info['img_id'] = img_id
            ann_ids = self.coco.get_ann_ids(img_ids=[img_id])
            ann_ids_all.extend(ann_ids)
            data_list.append(self.parse_data_info(
                dict(raw_ann_info=self.coco.load_anns(ann_ids), raw_img_info=raw_img_info)))
        if len(set(ann_ids_all)) != len(ann_ids_all):
            raise ValueError(f'annotation ids in {self.ann_file!r} are not unique')
        del self.coco
        return self._drop_novel(data_list) if self.filter_novel else data_list


@DATASETS.register_module()
class OVLVISDataset(_OVSplitMixin, LVISV1Dataset):
    """LVIS v1 with the open-vocabulary split (866 base / 337 rare = novel), label order = LVIS ids.

    Args:
        classes: default ``'ovlvis_1203_all'``: the names of ``lvis_v1_*.json`` by id (mmdet's
            ``LVISV1Dataset.METAINFO`` spells label 654 ``speaker_(stereo_equipment)``, the files
            and CLIPSelf's lists ``speaker_(stero_equipment)``); checked against the file.
        base_classes / novel_classes: default ``'ovlvis_866_base'`` / ``'ovlvis_337_novel_rare'``.
        filter_novel: drop rare-class annotations (training on ``lvis_v1_train.json``).
        check_categories: as :class:`OVCocoDataset`'s.
        **kwargs: :class:`mmdet.datasets.LVISV1Dataset` arguments (needs the ``lvis`` package).
    """

    def __init__(self, *args, classes: ClassList = 'ovlvis_1203_all',
                 base_classes: ClassList = 'ovlvis_866_base',
                 novel_classes: Optional[ClassList] = 'ovlvis_337_novel_rare',
                 filter_novel: bool = False, metainfo: Optional[dict] = None,
                 check_categories: bool = True, **kwargs) -> None:
        self.check_categories = bool(check_categories)
        metainfo = self._init_split(classes, base_classes, novel_classes, filter_novel, metainfo)
        super().__init__(*args, metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            with json_errors_name_file(local_path):
                data_list = super().load_data_list()  # labels = rank of the category id
            data = load_json_file(local_path, 'LVIS annotation file')
        check_annotation_categories(self.ann_file, data, self.check_categories)
        cats = sorted(data['categories'], key=lambda c: c['id'])
        check_same_classes([c['name'] for c in cats], self.metainfo['classes'],
                           'its categories (by id)', '`classes`',
                           'use an LVIS v1 annotation file with all 1203 categories.',
                           where=repr(self.ann_file))
        return self._drop_novel(data_list) if self.filter_novel else data_list
