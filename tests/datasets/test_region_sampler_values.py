"""Grid region sampler by value: spec defaults (M = 6, 36 boxes), boxes computed by hand,
argument boundaries, and the seeding contract of ``SampleGridRegions`` (spec §2)."""
import math
import warnings
from typing import List, Tuple

import numpy as np
import pytest
import torch

from densevlm_mm.datasets.data_epoch import clear_data_epoch, sample_seed, set_data_epoch
from densevlm_mm.datasets.transforms import SampleGridRegions
from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler, reference_grid_pairs

# spec §2: M = --max-split (default 6), max_anns = --max-boxes (default 36), 17 reference pairs
SPEC_MAX_SPLIT = 6
SPEC_MAX_BOXES = 36
REFERENCE_17 = [(2, 2), (2, 3), (2, 4), (3, 3), (3, 4), (3, 5), (3, 6), (4, 3), (4, 4), (4, 5),
                (4, 6), (5, 4), (5, 5), (5, 6), (6, 4), (6, 5), (6, 6)]
PAPER_25 = [(m, n) for m in range(2, 7) for n in range(2, 7)]


def _grid_of(boxes: np.ndarray) -> Tuple[int, int]:
    """(m rows, n columns) of a complete grid ``[m·n, 4]``: distinct y0 and x0 values."""
    return len(np.unique(boxes[:, 1])), len(np.unique(boxes[:, 0]))


def _hand_grid(h: float, w: float, m: int, n: int) -> List[List[float]]:
    """Cells of the m×n partition of ``h×w``, row-major, xyxy."""
    return [[w * c / n, h * r / m, w * (c + 1) / n, h * (r + 1) / m]
            for r in range(m) for c in range(n)]


# ---------------------------------------------------------------- defaults against the spec

def test_reference_pairs_default_is_spec_max_split():
    assert reference_grid_pairs() == REFERENCE_17


@pytest.mark.parametrize('max_split', [2, 3, 7, 8])
def test_reference_pairs_follow_the_spec_rule(max_split):
    """m in 2..M, ceil(m/2)+1 <= n <= min(2m, M), in (m, n) lexicographic order."""
    expected = [(m, n) for m in range(2, max_split + 1) for n in range(2, max_split + 1)
                if math.ceil(m / 2) + 1 <= n <= min(2 * m, max_split)]
    assert reference_grid_pairs(max_split) == expected


def test_sampler_defaults_are_the_spec_values():
    s = GridRegionSampler()
    assert (s.max_split, s.max_regions, s.pairs) == (SPEC_MAX_SPLIT, SPEC_MAX_BOXES, 'paper')
    assert s.choices == PAPER_25
    assert repr(s) == "GridRegionSampler(max_split=6, max_regions=36, pairs='paper')"


def test_default_max_regions_keeps_36_cells_of_a_larger_grid():
    """With M raised to 7 the 7×6, 6×7 and 7×7 grids exceed the default 36 boxes."""
    s = GridRegionSampler(max_split=7)
    g = torch.Generator().manual_seed(0)
    for m, n, kept in [(6, 6, 36), (7, 6, 36), (6, 7, 36), (7, 7, 36), (7, 5, 35)]:
        assert s.grid_boxes((70, 70), m, n, g).shape == (kept, 4)


def test_transform_defaults_are_the_spec_values():
    step = SampleGridRegions()
    assert (step.sampler.max_split, step.sampler.max_regions) == (SPEC_MAX_SPLIT, SPEC_MAX_BOXES)
    assert step.sampler.pairs == 'paper' and step.seed is None
    assert repr(step) == ("SampleGridRegions(GridRegionSampler(max_split=6, max_regions=36, "
                          "pairs='paper'), seed=None)")


def test_transform_default_draws_the_25_paper_grids():
    """Default step: m and n from 2..6 (all 25 grids occur, complete since m·n <= 36)."""
    step = SampleGridRegions()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(600):
        boxes = step.sampler.sample((60, 60), g).numpy()
        m, n = _grid_of(boxes)
        assert boxes.shape == (m * n, 4)
        seen.add((m, n))
    assert seen == set(PAPER_25)


def test_transform_with_max_split_7_keeps_the_default_36_boxes():
    step = SampleGridRegions(max_split=7)
    torch.manual_seed(0)
    counts = {len(step.transform(dict(valid_hw=(70, 70)))['grid_boxes']) for _ in range(300)}
    assert max(counts) == 36  # 6×7, 7×6 and 7×7 (42, 42, 49 cells) are cut to 36
    assert 49 not in counts and 42 not in counts


def test_transform_passes_reference_pairs():
    step = SampleGridRegions(pairs='reference')
    assert step.sampler.pairs == 'reference' and step.sampler.choices == REFERENCE_17
    torch.manual_seed(0)
    seen = {_grid_of(step.transform(dict(valid_hw=(48, 64)))['grid_boxes'])
            for _ in range(400)}
    assert seen == set(REFERENCE_17)


def test_repr_shows_the_arguments():
    s = GridRegionSampler(max_split=4, max_regions=9, pairs='reference')
    assert repr(s) == "GridRegionSampler(max_split=4, max_regions=9, pairs='reference')"
    assert (s.max_split, s.max_regions, s.pairs) == (4, 9, 'reference')
    step = SampleGridRegions(max_split=3, max_regions=5, pairs='reference', seed=11)
    assert repr(step) == ("SampleGridRegions(GridRegionSampler(max_split=3, max_regions=5, "
                          "pairs='reference'), seed=11)")


# ---------------------------------------------------------------- argument boundaries

def test_max_split_boundary():
    for pairs in ('paper', 'reference'):
        assert GridRegionSampler(max_split=2, pairs=pairs).choices == [(2, 2)]
        for bad in (1, 0, -3):
            with pytest.raises(ValueError, match='max_split'):
                GridRegionSampler(max_split=bad, pairs=pairs)


def test_max_regions_boundary():
    s = GridRegionSampler(max_regions=1)
    cells = _hand_grid(20, 30, 2, 3)
    box = s.grid_boxes((20, 30), 2, 3, torch.Generator().manual_seed(0))
    assert box.shape == (1, 4) and box[0].tolist() in cells
    for bad in (0, -1):
        with pytest.raises(ValueError, match='max_regions'):
            GridRegionSampler(max_regions=bad)


@pytest.mark.parametrize('hw', [(1, 1), (1, 7), (7, 1), (0.5, 0.25)])
def test_small_positive_valid_area_is_accepted(hw):
    h, w = hw
    boxes = GridRegionSampler().grid_boxes(hw, 2, 2)
    torch.testing.assert_close(boxes, torch.tensor(_hand_grid(h, w, 2, 2)))


@pytest.mark.parametrize('hw', [(0, 5), (5, 0), (0, 0), (-1, 5), (5, -1)])
def test_empty_valid_area_is_rejected(hw):
    s = GridRegionSampler()
    with pytest.raises(ValueError, match='valid_hw'):
        s.grid_boxes(hw, 2, 3)
    with pytest.raises(ValueError, match='valid_hw'):
        s.sample(hw)


# ---------------------------------------------------------------- boxes by value

@pytest.mark.parametrize('m,n', [(3, 2), (2, 5), (4, 4)])
def test_grid_boxes_by_hand(m, n):
    """Row-major cells (rows = y, columns = x) of a non-square valid area."""
    boxes = GridRegionSampler().grid_boxes((30, 40), m, n)
    assert boxes.dtype == torch.float32
    torch.testing.assert_close(boxes, torch.tensor(_hand_grid(30, 40, m, n)))


def test_grid_boxes_emit_no_warning():
    """No torch deprecation warning, e.g. meshgrid without ``indexing`` (an upcoming torch
    release requires it). ``set_warn_always``: torch's warn-once warnings may have fired
    earlier in this process."""
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            GridRegionSampler().grid_boxes((30, 40), 3, 2)
            GridRegionSampler(max_regions=2).grid_boxes((30, 40), 3, 2,
                                                        torch.Generator().manual_seed(0))
    finally:
        torch.set_warn_always(warn_always)


def test_grid_that_fits_is_complete_and_draws_nothing():
    """m·n == max_regions: every cell, in order, and the generator is not advanced (the grid
    choices drawn after it from the same generator are unchanged)."""
    s = GridRegionSampler(max_split=6, max_regions=12)
    for m, n in [(3, 4), (2, 6), (2, 5)]:
        g = torch.Generator().manual_seed(3)
        state = g.get_state()
        boxes = s.grid_boxes((24, 36), m, n, g)
        torch.testing.assert_close(boxes, torch.tensor(_hand_grid(24, 36, m, n)))
        assert torch.equal(g.get_state(), state)


def test_subsampled_grid_is_row_major_subset():
    s = GridRegionSampler(max_split=6, max_regions=11)
    cells = _hand_grid(24, 36, 3, 4)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        boxes = s.grid_boxes((24, 36), 3, 4, g).tolist()
        idx = [cells.index(b) for b in boxes]
        assert len(idx) == 11 and idx == sorted(set(idx))


def test_subsampling_is_a_function_of_the_generator():
    """The kept cells come from the given generator, not torch's global one."""
    s = GridRegionSampler(max_split=6, max_regions=2)
    for seed in range(6):
        torch.manual_seed(100)
        a = s.grid_boxes((24, 36), 4, 5, torch.Generator().manual_seed(seed))
        b = s.sample((24, 36), torch.Generator().manual_seed(seed))
        torch.manual_seed(200 + seed)
        a2 = s.grid_boxes((24, 36), 4, 5, torch.Generator().manual_seed(seed))
        b2 = s.sample((24, 36), torch.Generator().manual_seed(seed))
        assert torch.equal(a, a2) and torch.equal(b, b2)


def test_transform_boxes_are_float32():
    torch.manual_seed(0)
    out = SampleGridRegions(max_split=3)(dict(valid_hw=(30, 45)))
    boxes = out['grid_boxes']
    assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float32
    m, n = _grid_of(boxes)
    np.testing.assert_allclose(boxes, np.array(_hand_grid(30, 45, m, n), np.float32))


# ---------------------------------------------------------------- seeding of SampleGridRegions

def _expected(seed: int, epoch: int, idx: int, hw=(48, 64)) -> np.ndarray:
    """The documented contract: sampler draws from a generator seeded by sample_seed."""
    g = torch.Generator().manual_seed(sample_seed(seed, epoch, idx))
    return GridRegionSampler(6, 4, 'paper').sample(hw, g).numpy()


def test_own_seed_replaces_the_runner_seed():
    step = SampleGridRegions(max_split=6, max_regions=4, seed=np.int64(7))
    assert step.seed == 7 and type(step.seed) is int
    plain = SampleGridRegions(max_split=6, max_regions=4)
    try:
        set_data_epoch(2, 0)
        own = [step.transform(dict(valid_hw=(48, 64), sample_idx=i))['grid_boxes']
               for i in range(8)]
        runner = [plain.transform(dict(valid_hw=(48, 64), sample_idx=i))['grid_boxes']
                  for i in range(8)]
    finally:
        clear_data_epoch()
    for i in range(8):
        np.testing.assert_array_equal(own[i], _expected(7, 2, i))
        np.testing.assert_array_equal(runner[i], _expected(0, 2, i))
    assert any(not np.array_equal(a, b) for a, b in zip(own, runner))


def test_own_seed_zero_is_used():
    """seed=0 is a seed, not 'no seed'."""
    step = SampleGridRegions(max_split=6, max_regions=4, seed=0)
    assert step.seed == 0
    try:
        set_data_epoch(1, 5)
        got = [step.transform(dict(valid_hw=(48, 64), sample_idx=i))['grid_boxes']
               for i in range(6)]
    finally:
        clear_data_epoch()
    for i in range(6):
        np.testing.assert_array_equal(got[i], _expected(0, 1, i))
