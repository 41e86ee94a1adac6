"""Packing a sample into ``inputs`` + mmpretrain ``DataSample``."""
from typing import Dict, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmpretrain.structures import DataSample

from densevlm_mm.registry import TRANSFORMS

DEFAULT_FIELDS = ('grid_boxes', 'region_boxes', 'region_labels', 'region_is_thing',
                  'region_masks', 'region_mask_empty', 'region_crops', 'teacher_logits')
DEFAULT_META = ('img_path', 'ori_shape', 'img_shape', 'valid_hw', 'scale_factor', 'sample_idx',
                'region_protocol', 'image_key')


@TRANSFORMS.register_module()
class PackDenseVLMInputs(BaseTransform):
    """``img`` ``[H, W, 3]`` uint8 → ``inputs`` ``[3, H, W]`` uint8; region fields and metainfo
    → a :class:`mmpretrain.structures.DataSample`.

    Fields present in the results are copied as tensors: ``grid_boxes`` / ``region_boxes``
    float32 ``[K, 4]``, ``region_labels`` int64 ``[K]``, ``region_is_thing`` bool ``[K]``,
    ``region_masks`` bool ``[K, H, W]``, ``region_mask_empty`` bool ``[K]`` (a mask with no
    pixel left after resizing; the metric counts these), ``region_crops`` uint8 ``[K, 3, S, S]``,
    ``teacher_logits`` float32 ``[K, C]`` (from the region cache, :class:`LoadRegionTargets`).
    """

    def __init__(self, fields: Sequence[str] = DEFAULT_FIELDS,
                 meta_keys: Sequence[str] = DEFAULT_META) -> None:
        self.fields = tuple(fields)
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: Dict) -> Dict:
        img = np.ascontiguousarray(results['img'])
        inputs = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        sample = DataSample()
        for key in self.fields:
            if key in results:
                value = torch.as_tensor(np.asarray(results[key]))
                if key.endswith('boxes'):
                    value = value.float().reshape(-1, 4)
                elif key == 'teacher_logits':
                    value = value.float()
                elif key == 'region_labels':
                    value = value.long()
                elif key in ('region_is_thing', 'region_masks', 'region_mask_empty'):
                    value = value.bool()
                elif key == 'region_crops':  # [K, S, S, 3] uint8 -> [K, 3, S, S]
                    value = value.reshape(-1, *value.shape[-3:]).permute(0, 3, 1, 2).contiguous()
                sample.set_field(value, key)
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(fields={self.fields}, meta_keys={self.meta_keys})'
