"""Grid region sampler: the training regions of DenseVLM (spec §2), used by ``SampleGridRegions``.

Each image is tiled by an m×n grid (m rows, n columns) over its valid (unpadded) area; every cell
is a region whose teacher retrieval and student RoI feature are aligned.
"""
from typing import List, Optional, Sequence, Tuple

import torch


def reference_grid_pairs(max_split: int = 6) -> List[Tuple[int, int]]:
    """The constrained (m, n) pairs of the reference code: m in 2..M and
    ``floor((m+1)/2)+1 <= n <= min(2m, M)`` (17 pairs for M=6)."""
    return [(m, n) for m in range(2, max_split + 1)
            for n in range((m + 1) // 2 + 1, min(2 * m, max_split) + 1)]


class GridRegionSampler:
    """Random m×n grids over the valid image area.

    Args:
        max_split: M, the largest number of rows / columns.
        max_regions: cells kept per image; larger grids are randomly subsampled.
        pairs: ``'paper'`` draws m and n independently and uniformly from {2..M} (paper §3.2);
            ``'reference'`` draws uniformly from the 17 constrained pairs of the reference code.
    """

    def __init__(self, max_split: int = 6, max_regions: int = 36, pairs: str = 'paper') -> None:
        if max_split < 2:
            raise ValueError(f'max_split must be >= 2, got {max_split}')
        if max_regions < 1:
            raise ValueError(f'max_regions must be >= 1, got {max_regions}')
        if pairs not in ('paper', 'reference'):
            raise ValueError(f"pairs must be 'paper' or 'reference', got {pairs!r}")
        self.max_split = max_split
        self.max_regions = max_regions
        self.pairs = pairs
        if pairs == 'paper':
            self.choices = [(m, n) for m in range(2, max_split + 1)
                            for n in range(2, max_split + 1)]
        else:
            self.choices = reference_grid_pairs(max_split)

    def sample_grid(self, generator: Optional[torch.Generator] = None) -> Tuple[int, int]:
        """One (m rows, n columns) choice, uniform over :attr:`choices`."""
        idx = int(torch.randint(len(self.choices), (1, ), generator=generator))
        return self.choices[idx]

    def sample(self,
               valid_hw: Sequence[float],
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Boxes ``[min(m·n, max_regions), 4]`` (x0, y0, x1, y1 in input pixels), row-major."""
        return self.sample_cells(valid_hw, generator)[0]

    def sample_cells(self, valid_hw: Sequence[float],
                     generator: Optional[torch.Generator] = None
                     ) -> Tuple[torch.Tensor, Tuple[int, int], torch.Tensor]:
        """:meth:`sample` with what was drawn: boxes, ``(m, n)`` and the kept cells' row-major
        indices ``[K]`` in the m×n grid (the same draws as :meth:`sample`)."""
        m, n = self.sample_grid(generator)
        boxes, cells = self._cells(valid_hw, m, n, generator)
        return boxes, (m, n), cells

    def grid_boxes(self, valid_hw: Sequence[float], m: int, n: int,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """All cells of an m×n grid over ``valid_hw = (height, width)``, subsampled if needed."""
        return self._cells(valid_hw, m, n, generator)[0]

    def _cells(self, valid_hw: Sequence[float], m: int, n: int,
               generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        h, w = float(valid_hw[0]), float(valid_hw[1])
        if h <= 0 or w <= 0:
            raise ValueError(f'valid_hw must be positive, got {tuple(valid_hw)}')
        ys = torch.linspace(0, h, m + 1)
        xs = torch.linspace(0, w, n + 1)
        y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing='ij')
        y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing='ij')
        boxes = torch.stack([x0, y0, x1, y1], dim=-1).reshape(-1, 4)
        cells = torch.arange(boxes.shape[0])
        if boxes.shape[0] > self.max_regions:
            cells = torch.randperm(boxes.shape[0], generator=generator)[:self.max_regions].sort(
            ).values
            boxes = boxes[cells]
        return boxes, cells

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_split={self.max_split}, '
                f'max_regions={self.max_regions}, pairs={self.pairs!r})')
