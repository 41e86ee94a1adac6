"""Pipeline step that draws the grid regions of a training image."""
from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform

from densevlm_mm.models.region_sampler import GridRegionSampler
from densevlm_mm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class SampleGridRegions(BaseTransform):
    """Add ``grid_boxes`` ``[m·n, 4]`` (xyxy, input pixels) tiling ``valid_hw``.

    Run after :class:`ResizeLongestPad`. Randomness comes from torch's global generator, which
    mmengine seeds per dataloader worker. Arguments as :class:`GridRegionSampler`.
    """

    def __init__(self, max_split: int = 6, max_regions: int = 36, pairs: str = 'paper') -> None:
        self.sampler = GridRegionSampler(max_split, max_regions, pairs)

    def transform(self, results: Dict) -> Dict:
        if 'valid_hw' not in results:
            raise KeyError('SampleGridRegions needs "valid_hw": put ResizeLongestPad before it')
        results['grid_boxes'] = self.sampler.sample(results['valid_hw']).numpy().astype(np.float32)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.sampler!r})'
