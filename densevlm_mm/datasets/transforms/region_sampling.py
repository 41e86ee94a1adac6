"""Pipeline step that draws the grid regions of a training image."""
from typing import Dict, Optional

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from densevlm_mm.registry import TRANSFORMS

from ..data_epoch import data_epoch_record, sample_seed
from .region_sampler import GridRegionSampler


@TRANSFORMS.register_module()
class SampleGridRegions(BaseTransform):
    """Add ``grid_boxes`` ``[m·n, 4]`` (xyxy, input pixels) tiling ``valid_hw``, and what was
    drawn: ``grid_pair`` ``(m, n)`` and ``grid_cells`` ``[K]`` (the kept cells' row-major indices,
    read by :class:`LoadRegionTargets`).

    Run after :class:`ResizeLongestPad`. The grid of a sample is a function of ``(seed, epoch,
    sample_idx)`` (a generator seeded by :func:`~densevlm_mm.datasets.data_epoch.sample_seed`), so a
    resumed run draws the same regions as an uninterrupted one, whatever the number of workers.
    The epoch and the Runner's seed come from
    :func:`~densevlm_mm.datasets.data_epoch.set_data_epoch` (called before every epoch by
    ``tools/train.py``); before the first call, or for a sample
    without ``sample_idx``, torch's global generator (seeded per worker by mmengine) is used.

    Args:
        max_split / max_regions / pairs: see :class:`GridRegionSampler`.
        seed: used instead of the Runner's seed when given.
    """

    def __init__(self, max_split: int = 6, max_regions: int = 36, pairs: str = 'paper',
                 seed: Optional[int] = None) -> None:
        self.sampler = GridRegionSampler(max_split, max_regions, pairs)
        self.seed = None if seed is None else int(seed)
        self._epoch_record = data_epoch_record()  # spawned workers share the parent's record

    def generator(self, results: Dict) -> Optional[torch.Generator]:
        """The sample's generator, or ``None`` (global generator) when no epoch is published."""
        published = self._epoch_record.get()
        idx = results.get('sample_idx')
        if published is None or idx is None:
            return None
        epoch, runner_seed = published
        seed = runner_seed if self.seed is None else self.seed
        return torch.Generator().manual_seed(sample_seed(seed, epoch, int(idx)))

    def transform(self, results: Dict) -> Dict:
        if 'valid_hw' not in results:
            raise KeyError('SampleGridRegions needs "valid_hw": put ResizeLongestPad before it')
        boxes, pair, cells = self.sampler.sample_cells(results['valid_hw'],
                                                       generator=self.generator(results))
        results['grid_boxes'] = boxes.numpy().astype(np.float32)
        results['grid_pair'] = pair
        results['grid_cells'] = cells.numpy()
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.sampler!r}, seed={self.seed})'
