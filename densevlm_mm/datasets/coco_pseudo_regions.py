"""Images with pseudo-labelled proposals, for the RegionCLIP-style baseline (spec §2, §4.2)."""
from collections import defaultdict
from typing import List

import numpy as np

from densevlm_mm.registry import DATASETS
from densevlm_mm.utils.files import load_json_file

from .coco_images import CocoImageDataset


@DATASETS.register_module()
class CocoPseudoRegionDataset(CocoImageDataset):
    """A COCO-format json of region–noun pairs (e.g. RegionCLIP's ``coco_pseudo_4764.json``).

    Only images with annotations are kept. Each sample carries ``region_boxes`` ``[K, 4]`` (xyxy,
    original pixels, from ``bbox`` xywh) and ``region_labels`` ``[K]`` = the index of the
    ``category_id`` in the **sorted** category ids, the first ``max_regions`` annotations in file
    order (reference: 20). Pipeline: ``LoadImageSafe`` → ``ResizeLongestPad`` →
    ``PackDenseVLMInputs``.
    """

    def __init__(self, *args, max_regions: int = 20, **kwargs) -> None:
        self.max_regions = max_regions
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        images = super().load_data_list()
        coco = load_json_file(self.ann_file, 'pseudo-region annotation file')
        cat_ids = sorted(c['id'] for c in coco.get('categories', []))
        if not cat_ids:
            raise ValueError(f'{self.ann_file!r} lists no "categories"')
        label_of = {cid: i for i, cid in enumerate(cat_ids)}
        per_image = defaultdict(list)
        for ann in coco.get('annotations', []):
            per_image[ann['image_id']].append(ann)
        data_list = []
        for info in images:
            anns = per_image.get(info['img_id'], [])[:self.max_regions]
            if not anns:
                continue
            boxes = np.array([[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                               a['bbox'][1] + a['bbox'][3]] for a in anns], dtype=np.float32)
            unknown = next((a for a in anns if a['category_id'] not in label_of), None)
            if unknown is not None:
                raise ValueError(f'{self.ann_file!r}: annotation {unknown.get("id")} of image '
                                 f'{info["img_id"]} has category_id {unknown["category_id"]!r}, '
                                 'which the file\'s "categories" do not list. Fix the file.')
            labels = np.array([label_of[a['category_id']] for a in anns], dtype=np.int64)
            data_list.append(dict(info, region_boxes=boxes, region_labels=labels))
        if not data_list:
            raise ValueError(f'{self.ann_file!r}: no image has an annotation')
        self.num_nouns = len(cat_ids)
        return data_list
