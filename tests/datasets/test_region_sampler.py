import collections

import numpy as np
import pytest
import torch

from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler, reference_grid_pairs

REFERENCE_17 = [(2, 2), (2, 3), (2, 4), (3, 3), (3, 4), (3, 5), (3, 6), (4, 3), (4, 4), (4, 5),
                (4, 6), (5, 4), (5, 5), (5, 6), (6, 4), (6, 5), (6, 6)]


def test_reference_pairs_are_the_17_of_the_spec():
    assert reference_grid_pairs(6) == REFERENCE_17
    assert GridRegionSampler(pairs='reference').choices == REFERENCE_17


def test_paper_pairs_independent_uniform():
    s = GridRegionSampler(max_split=6, pairs='paper')
    assert len(s.choices) == 25
    g = torch.Generator().manual_seed(0)
    counts = collections.Counter(s.sample_grid(g) for _ in range(5000))
    assert set(counts) == set(s.choices)
    rows = collections.Counter(m for (m, n), c in counts.items() for _ in range(c))
    for m in range(2, 7):  # each of 5 row counts about 1/5
        assert abs(rows[m] / 5000 - 0.2) < 0.03


@pytest.mark.parametrize('m,n', [(2, 3), (4, 4), (6, 5)])
def test_grid_tiles_valid_area(m, n):
    s = GridRegionSampler()
    boxes = s.grid_boxes((300, 512), m, n)
    assert boxes.shape == (m * n, 4)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert torch.isclose(area, torch.tensor(300.0 * 512))
    assert boxes[:, [0, 2]].min() == 0 and boxes[:, 2].max() == 512
    assert boxes[:, 3].max() == 300
    # row-major: first row of cells shares y0 = 0, first n boxes
    assert torch.all(boxes[:n, 1] == 0)
    assert torch.isclose(boxes[0, 2], torch.tensor(512 / n))


def test_subsampling_to_max_regions():
    s = GridRegionSampler(max_split=8, max_regions=10)
    boxes = s.grid_boxes((100, 100), 8, 8, torch.Generator().manual_seed(0))
    assert boxes.shape == (10, 4)
    assert len({tuple(b.tolist()) for b in boxes}) == 10


def test_bad_arguments():
    with pytest.raises(ValueError, match='pairs'):
        GridRegionSampler(pairs='x')
    with pytest.raises(ValueError, match='max_split'):
        GridRegionSampler(max_split=1)
    with pytest.raises(ValueError, match='valid_hw'):
        GridRegionSampler().sample((0, 10))


def test_grid_is_a_function_of_seed_epoch_and_sample_index():
    """Exact resume: with the epoch published, the grid depends on (seed, epoch, sample_idx) only,
    not on what the worker drew before."""
    from densevlm_mm.datasets.data_epoch import clear_data_epoch, set_data_epoch
    from densevlm_mm.datasets.transforms import SampleGridRegions
    step = SampleGridRegions(max_split=6, max_regions=36)

    def grids(epoch, idx_list, seed=0):
        set_data_epoch(epoch, seed)
        return [step.transform(dict(valid_hw=(96, 128), sample_idx=i))['grid_boxes']
                for i in idx_list]

    try:
        first = grids(2, range(8))
        torch.manual_seed(123)  # the global generator no longer matters
        again = grids(2, reversed(range(8)))[::-1]
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
        other_epoch = grids(3, range(8))
        other_seed = grids(2, range(8), seed=1)
        assert not all(a.shape == b.shape and np.array_equal(a, b)
                       for a, b in zip(first, other_epoch))
        assert not all(a.shape == b.shape and np.array_equal(a, b)
                       for a, b in zip(first, other_seed))
    finally:
        clear_data_epoch()
    # nothing published: torch's global generator, as before
    torch.manual_seed(5)
    a = step.transform(dict(valid_hw=(96, 128), sample_idx=0))['grid_boxes']
    torch.manual_seed(5)
    b = step.transform(dict(valid_hw=(96, 128), sample_idx=0))['grid_boxes']
    assert np.array_equal(a, b)


def test_datasets_do_not_import_models():
    """The grid sampler is data machinery (it moved from models/ to datasets/transforms/)."""
    import subprocess
    import sys
    code = ('import sys, densevlm_mm.datasets; '
            'print(sorted(m for m in sys.modules if m.startswith("densevlm_mm.models")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == '[]'
