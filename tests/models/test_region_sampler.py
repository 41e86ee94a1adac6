import collections

import pytest
import torch

from densevlm_mm.models.region_sampler import GridRegionSampler, reference_grid_pairs

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
