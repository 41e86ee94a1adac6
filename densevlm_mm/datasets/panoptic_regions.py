"""Panoptic-format datasets for region classification (spec §6.1, paper Table 5).

Any dataset in the COCO panoptic format works with :class:`PanopticRegionDataset`:

* ``ann_file``: a json with ``categories`` (``id``, ``name``, ``isthing``), ``images`` (``id``,
  ``file_name``, ``height``, ``width``) and ``annotations`` (one per image: ``image_id``,
  ``file_name`` of the PNG, ``segments_info`` = list of ``id``, ``category_id``, ``bbox`` xywh,
  ``area``, ``iscrowd``);
* ``data_prefix['img']``: folder of the images; ``data_prefix['seg']``: folder of the PNGs, whose RGB
  encodes the segment id (``id = R + 256·G + 256²·B``).

The category list is the dataset's own: class *labels* are the ranks of the category ids in the
**sorted** id list (COCO: ids 1..200 → labels 0..132; ADE20K: ids 0..149 = labels), ``metainfo``
holds ``classes`` (names in that order), ``is_thing`` and ``category_ids``. The class embedding file
used for evaluation must have one row per class in the same order; check it with
``load_text_embeddings(path, class_names=dataset.metainfo['classes'])``. When the file's names differ
from the json's spelling (same order, same thing/stuff split), pass ``vocabulary=`` (a bundled name
such as ``'coco_panoptic_133'`` or a vocabulary file) to take the names from it;
``metainfo=dict(classes=[...])`` works the same way, without the thing/stuff check.

Each sample's data info holds ``img_path``, ``seg_map_path``, ``segments_info`` (each segment
annotated with ``label`` and ``isthing``), ``img_id``, ``height``, ``width``. The PNG name is the
annotation's ``file_name``, else the image name with ``.jpg`` → ``.png``. Pair the dataset with
``LoadPanopticRegions`` (then ``ResizeLongestPad`` and ``PackDenseVLMInputs``) and
``RegionClassificationMetric``.

For quick runs, ``subset=N`` evaluates the first N images (``subset=[i, j, ...]`` picks indices); it
is an alias of mmengine's ``indices``.

**Evaluation protocol** (one config line, e.g. ``test_dataloader = dict(dataset=dict(
region_protocol='reference', grid_stride=16))``):

* ``'ours'`` (default): masks resized (nearest) into the padded canvas and pooled with the exact
  area coverage of each feature cell; boxes scaled per axis with the resized image; stuff boxes with
  an exclusive max.
* ``'reference'``: the protocol behind the paper's numbers (spec §6.1 / §10.18): each full-resolution
  mask is resized bicubically (non-antialiased, as torchvision 0.15 did on tensors) so that its
  longer side has ``canvas // grid_stride`` cells (``round(side · g / max(H, W))``), padded
  bottom/right, thresholded ``> 0`` and pooled with 0/1 weights (the masks come out at the size of
  the dense grid); boxes are mapped with one isotropic scale ``min(canvas / H, canvas / W)`` onto
  the grid (``g · stride / canvas``, which is 504/512 for patch 14 at 512); stuff boxes have the
  inclusive max; per-class accuracies are rounded through fp16. A mask can vanish on the grid:
  such regions are counted (``masks_*.empty`` in the results) and scored as misclassified.
"""

import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Union

from mmengine import fileio
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from densevlm_mm.registry import DATASETS
from densevlm_mm.utils.files import parse_json
from densevlm_mm.vocabulary import Vocabulary, load_vocabulary

REGION_PROTOCOLS = ('ours', 'reference')


def panoptic_categories(categories: Sequence[dict], where: str = 'ann_file') -> Dict[str, Any]:
    """Sorted-id metainfo of a panoptic ``categories`` list: classes, is_thing, category_ids."""
    if not categories:
        raise ValueError(f'{where}: no "categories" in the annotation file')
    cats = sorted(categories, key=lambda c: int(c['id']))
    ids = [int(c['id']) for c in cats]
    if len(set(ids)) != len(ids):
        raise ValueError(f'{where}: duplicate category ids')
    missing = [c['id'] for c in cats if 'isthing' not in c]
    if missing:
        raise ValueError(f'{where}: categories {missing[:10]} have no "isthing" flag; the thing/stuff '
                         'split is needed for Masks-T / Masks-S')
    return dict(classes=tuple(str(c['name']) for c in cats),
                is_thing=[bool(c['isthing']) for c in cats], category_ids=ids)


@DATASETS.register_module()
class PanopticRegionDataset(BaseDataset):
    """Generic panoptic-format region dataset (see the module docstring).

    Args:
        ann_file: panoptic json (joined to ``data_root`` when relative).
        data_root: dataset root.
        data_prefix: ``dict(img=..., seg=...)`` folders of the images and the PNGs.
        pipeline: transforms, typically ``LoadPanopticRegions``, ``ResizeLongestPad``,
            ``PackDenseVLMInputs``.
        subset: evaluate only the first ``subset`` images (int) or these indices (list).
        vocabulary: take class names from this vocabulary (bundled name, file, or
            :class:`Vocabulary`) instead of the json; it must have the same length and split.
        backend_args: mmengine file backend arguments.
        region_protocol: ``'ours'`` or ``'reference'`` (see the module docstring); passed to the
            transforms in each sample and to the metric in ``metainfo['region_protocol']``.
        grid_stride: input pixels per feature cell of the evaluated model (16 for B/16, 14 for
            L/14, 32 for RN50x4 / ConvNeXt); required by the reference protocol, whose masks are
            made at the size of the dense grid.
        **kwargs: other :class:`mmengine.dataset.BaseDataset` arguments (``indices``,
            ``serialize_data``, ``lazy_init``, ...). ``test_mode`` defaults to True.
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: dict = dict(img='', seg=''),
                 pipeline: Sequence = (),
                 subset: Optional[Union[int, Sequence[int]]] = None,
                 vocabulary: Optional[Union[str, Vocabulary]] = None,
                 backend_args: Optional[dict] = None,
                 test_mode: bool = True,
                 region_protocol: str = 'ours',
                 grid_stride: Optional[int] = None,
                 **kwargs) -> None:
        if region_protocol not in REGION_PROTOCOLS:
            raise ValueError(f'region_protocol must be one of {REGION_PROTOCOLS}, got '
                             f'{region_protocol!r}')
        if region_protocol == 'reference' and not (isinstance(grid_stride, int)
                                                   and grid_stride > 0):
            raise ValueError(
                "region_protocol='reference' makes the masks at the size of the model's dense "
                'grid: give grid_stride, the input pixels per feature cell (16 for ViT-B/16 and '
                f'EVA02-B/16, 14 for L/14, 32 for RN50x4 / ConvNeXt); got {grid_stride!r}')
        self.region_protocol = region_protocol
        self.grid_stride = grid_stride
        if subset is not None:
            if kwargs.get('indices') is not None:
                raise ValueError('give either subset or indices, not both')
            kwargs['indices'] = subset
        if not ann_file:
            raise ValueError(f'{type(self).__name__} needs an ann_file (panoptic json)')
        self.vocabulary = vocabulary
        self.backend_args = backend_args
        data_prefix = dict(data_prefix)
        for key in ('img', 'seg'):
            data_prefix.setdefault(key, '')
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         pipeline=list(pipeline), test_mode=test_mode, **kwargs)

    def _class_meta(self, categories: Sequence[dict]) -> Dict[str, Any]:
        meta = panoptic_categories(categories, self.ann_file)
        if self.vocabulary is not None:
            vocab = load_vocabulary(self.vocabulary)
            if len(vocab) != len(meta['classes']):
                raise ValueError(f'vocabulary has {len(vocab)} classes but {self.ann_file!r} has '
                                 f'{len(meta["classes"])} categories')
            flags = [bool(f) for f in vocab.is_thing.tolist()]
            if flags != meta['is_thing']:
                bad = next(i for i, (a, b) in enumerate(zip(flags, meta['is_thing'])) if a != b)
                raise ValueError(f'vocabulary and {self.ann_file!r} disagree on thing/stuff for class '
                                 f'{bad} ({vocab.names[bad]!r} / {meta["classes"][bad]!r})')
            meta['classes'] = tuple(vocab.names)
        return meta

    def load_data_list(self) -> List[dict]:
        if not fileio.exists(self.ann_file, backend_args=self.backend_args):
            raise FileNotFoundError(f'panoptic annotation file not found: {self.ann_file!r}')
        ann = parse_json(fileio.get(self.ann_file, backend_args=self.backend_args),
                         self.ann_file, 'panoptic annotation file')
        if not isinstance(ann, dict) or 'annotations' not in ann or 'images' not in ann:
            raise ValueError(f'{self.ann_file!r} is not a panoptic annotation file (needs "images", '
                             '"annotations" and "categories")')
        meta = self._class_meta(ann.get('categories', []))
        given = self._metainfo.get('classes')
        if given is not None:  # names from the metainfo argument, like a vocabulary
            if len(given) != len(meta['classes']):
                raise ValueError(f'metainfo gives {len(given)} classes but {self.ann_file!r} has '
                                 f'{len(meta["classes"])} categories')
            meta['classes'] = tuple(given)
        meta['region_protocol'] = self.region_protocol
        self._metainfo.update(meta)
        cat2label = {c: i for i, c in enumerate(meta['category_ids'])}
        images = {img['id']: img for img in ann['images']}

        data_list = []
        for item in ann['annotations']:
            img = images.get(item['image_id'])
            if img is None:
                raise ValueError(f'{self.ann_file!r}: annotation for unknown image id '
                                 f'{item["image_id"]}')
            seg_name = item.get('file_name') or osp.splitext(img['file_name'])[0] + '.png'
            segments, seen = [], set()
            for seg in item.get('segments_info', []):
                if seg.get('id') in seen:
                    raise ValueError(f'{self.ann_file!r}: segment id {seg.get("id")} is listed '
                                     f'twice in the segments_info of image {item["image_id"]}; '
                                     'each segment of a PNG has one entry. Fix the json.')
                seen.add(seg.get('id'))
                cid = int(seg['category_id'])
                if cid not in cat2label:
                    raise ValueError(f'{self.ann_file!r}: segment {seg.get("id")} of image '
                                     f'{item["image_id"]} has unknown category id {cid}')
                label = cat2label[cid]
                segments.append(dict(seg, label=label, isthing=meta['is_thing'][label]))
            data_list.append(
                dict(img_path=osp.join(self.data_prefix['img'], img['file_name']),
                     seg_map_path=osp.join(self.data_prefix['seg'], seg_name),
                     segments_info=segments, img_id=img['id'],
                     height=img.get('height'), width=img.get('width'),
                     region_protocol=self.region_protocol, grid_stride=self.grid_stride))
        unannotated = len(images) - len({item['image_id'] for item in ann['annotations']})
        if unannotated > 0:
            print_log(f'{self.ann_file}: {unannotated} images have no panoptic annotation and are '
                      'not evaluated', logger='current')
        return data_list


@DATASETS.register_module()
class CocoPanopticRegionDataset(PanopticRegionDataset):
    """COCO panoptic val2017: 133 classes, ``ann_file='panoptic_val2017.json'``, images in
    ``val2017/``, PNGs in ``panoptic_val2017/`` (relative to ``data_root``)."""

    def __init__(self,
                 ann_file: str,
                 data_prefix: dict = dict(img='val2017/', seg='panoptic_val2017/'),
                 **kwargs) -> None:
        super().__init__(ann_file=ann_file, data_prefix=data_prefix, **kwargs)


@DATASETS.register_module()
class ADE20KPanopticRegionDataset(PanopticRegionDataset):
    """ADE20K panoptic val: 150 classes, category ids 0..149 = labels. Detectron2/Mask2Former layout
    with ``data_root='.../ADEChallengeData2016'``: ``ann_file='ade20k_panoptic_val.json'``, images in
    ``images/validation/``, PNGs in ``ade20k_panoptic_val/``."""

    def __init__(self,
                 ann_file: str,
                 data_prefix: dict = dict(img='images/validation/', seg='ade20k_panoptic_val/'),
                 **kwargs) -> None:
        super().__init__(ann_file=ann_file, data_prefix=data_prefix, **kwargs)
