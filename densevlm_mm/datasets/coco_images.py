"""The images of a COCO annotation file, without annotations (DenseVLM's training set, spec §2)."""
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np

from densevlm_mm.registry import DATASETS
from densevlm_mm.utils.files import load_json_file

from .image_folder import UnlabeledImageDataset


@DATASETS.register_module()
class CocoImageDataset(UnlabeledImageDataset):
    """Every image listed in a COCO ``instances_*.json`` (or ``image_info_*.json``).

    Images without annotations are included, as in the reference (118,287 images for
    ``instances_train2017.json``); annotations are not read. The file is parsed with the ``json``
    module (no index is built). Samples are ``dict(img_path, img_id, height, width, image_key)``,
    ``image_key`` being the json's ``file_name`` (the region cache's key).

    Args:
        ann_file: the COCO json (joined with ``data_root`` when relative).
        data_prefix: ``dict(img=<image folder>)`` (joined with ``data_root`` when relative).
        pipeline: the training pipeline (starting with ``LoadImageSafe``).
        train_ratio: keep this fraction of the images (``0 < r <= 1``), chosen with
            ``numpy.random.default_rng(seed)``. The seed does not depend on the rank, so all ranks
            keep the same subset (the reference seeded it per rank, spec §10.20).
        seed: seed of the subset choice.
        **kwargs: other :class:`mmengine.dataset.BaseDataset` arguments.

    Raises:
        FileNotFoundError: the json file or the image folder does not exist.
        ValueError: the json lists no image, or ``train_ratio`` is out of range.
    """

    def __init__(self,
                 ann_file: str,
                 data_prefix: Optional[dict] = None,
                 pipeline: Sequence = (),
                 train_ratio: float = 1.0,
                 seed: int = 0,
                 data_root: str = '',
                 **kwargs) -> None:
        if not 0 < train_ratio <= 1:
            raise ValueError(f'train_ratio must be in (0, 1], got {train_ratio}')
        if not ann_file:
            raise ValueError('CocoImageDataset needs ann_file (a COCO json)')
        self.train_ratio = float(train_ratio)
        self.seed = int(seed)
        data_prefix = dict(data_prefix or dict(img=''))
        if 'img' not in data_prefix and 'img_path' in data_prefix:
            data_prefix['img'] = data_prefix.pop('img_path')
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> List[dict]:
        name = type(self).__name__
        img_dir = self.data_prefix.get('img', '')
        self.source = f'{self.ann_file!r} (images in {img_dir!r})'
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(f'{name}: COCO annotation file not found: {self.ann_file!r}')
        if not osp.isdir(img_dir or '.'):
            raise FileNotFoundError(f'{name}: image folder not found: {img_dir!r} '
                                    f'(data_prefix img of {self.ann_file!r})')
        coco = load_json_file(self.ann_file, f'{name} annotation file')
        images = coco.get('images') if isinstance(coco, dict) else None
        if not images:
            raise ValueError(f'{name}: {self.ann_file!r} lists no "images"')
        data_list, seen = [], set()
        for info in images:  # the order of the file, like list(COCO(...).imgs)
            if info['id'] in seen:
                continue
            seen.add(info['id'])
            data_list.append(
                dict(img_path=osp.join(img_dir, info['file_name']), img_id=info['id'],
                     height=info.get('height'), width=info.get('width'),
                     image_key=info['file_name']))
        if self.train_ratio < 1:
            keep = max(1, int(round(len(data_list) * self.train_ratio)))
            chosen = np.sort(np.random.default_rng(self.seed).permutation(len(data_list))[:keep])
            data_list = [data_list[i] for i in chosen]
        return data_list
