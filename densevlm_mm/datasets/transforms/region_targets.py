"""Pipeline step that reads the P-VLM targets of the drawn grid cells from the region cache."""
from typing import Dict, Optional

import numpy as np
from mmcv.transforms import BaseTransform

from densevlm_mm.region_cache import RegionCacheMismatch, RegionCacheReader
from densevlm_mm.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadRegionTargets(BaseTransform):
    """Add ``teacher_logits`` ``[K, C]`` float32: the cached P-VLM logits of the drawn cells.

    Put it right after :class:`SampleGridRegions` (it reads ``grid_pair`` / ``grid_cells``) in the
    training pipeline of a config whose ``model.target_generator`` is a
    :class:`CachedRegionRetriever` on the same cache. Each dataloader worker opens the cache
    read-only on its first sample. The sample's ``img_shape`` must be the cached input size.

    Args:
        cache: the cache folder (``tools/build_region_cache.py``).

    Raises:
        KeyError: the dataset gives no ``image_key``, or the image is not in the cache.
        RegionCacheMismatch: another input size or a grid pair the cache does not hold.
    """

    def __init__(self, cache: str) -> None:
        self.cache = cache
        self._reader: Optional[RegionCacheReader] = None

    @property
    def reader(self) -> RegionCacheReader:
        if self._reader is None:
            self._reader = RegionCacheReader(self.cache)
        return self._reader

    def transform(self, results: Dict) -> Dict:
        if 'grid_pair' not in results:
            raise KeyError('LoadRegionTargets needs the drawn grid: put SampleGridRegions before it')
        if 'image_key' not in results:
            raise KeyError('LoadRegionTargets: the dataset gives no "image_key" (the cache key); '
                           'use CocoImageDataset, ImageFolderDataset or SA1BShardDataset')
        size = list(self.reader.meta['image']['size'])
        shape = [int(v) for v in results.get('img_shape', size)[:2]]
        if shape != size:
            raise RegionCacheMismatch(
                f'the region cache {self.cache!r} holds {size[0]}x{size[1]} inputs but '
                f'{results["image_key"]!r} is {shape[0]}x{shape[1]} (ResizeLongestPad size): use '
                'the size the cache was built with, or build a cache for this size.')
        m, n = results['grid_pair']
        results['teacher_logits'] = self.reader.rows(results['image_key'], m, n,
                                                     np.asarray(results['grid_cells']))
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(cache={self.cache!r})'
