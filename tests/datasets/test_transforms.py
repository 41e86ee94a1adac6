import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_mm.datasets.transforms import PackDenseVLMInputs, ResizeLongestPad, SampleGridRegions


def _sample(h=60, w=100):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, 10:30, 20:60] = True
    masks[1, 30:, :] = True
    return dict(img=img, img_path='x.jpg', region_boxes=np.array([[20, 10, 60, 30]], np.float32),
                region_masks=masks, region_labels=np.array([3, 1]),
                region_is_thing=np.array([True, False]))


def test_resize_longest_pad_matches_pil_bicubic_and_pads_black():
    s = _sample()
    out = ResizeLongestPad(64)(dict(s))
    assert out['img'].shape == (64, 64, 3)
    assert out['valid_hw'] == (38, 64)  # round(60 * 64 / 100) = 38
    ref = np.asarray(Image.fromarray(s['img']).resize((64, 38), Image.BICUBIC))
    assert np.array_equal(out['img'][:38, :64], ref)
    assert out['img'][38:].max() == 0
    np.testing.assert_allclose(out['region_boxes'], [[12.8, 6.333333, 38.4, 19.0]], rtol=1e-5)
    assert out['region_masks'].shape == (2, 64, 64)
    assert not out['region_masks'][:, 38:].any()
    # nearest-neighbour resize keeps the mask inside the scaled box
    ys, xs = np.nonzero(out['region_masks'][0])
    assert xs.min() >= 12 and xs.max() <= 39 and ys.min() >= 6 and ys.max() <= 19


def test_rectangular_target_and_bad_input():
    out = ResizeLongestPad((32, 64))(dict(img=np.zeros((100, 100, 3), np.uint8)))
    assert out['img'].shape == (32, 64, 3) and out['valid_hw'] == (32, 32)
    with pytest.raises(ValueError, match='RGB'):
        ResizeLongestPad(32)(dict(img=np.zeros((10, 10), np.uint8), img_path='gray.png'))


def test_grid_regions_and_packing():
    s = ResizeLongestPad(64)(_sample())
    torch.manual_seed(0)
    s = SampleGridRegions(max_split=4, max_regions=36, pairs='paper')(s)
    boxes = s['grid_boxes']
    assert boxes[:, 2].max() == pytest.approx(64) and boxes[:, 3].max() == pytest.approx(38)
    packed = PackDenseVLMInputs()(s)
    assert packed['inputs'].shape == (3, 64, 64) and packed['inputs'].dtype == torch.uint8
    ds = packed['data_samples']
    assert ds.grid_boxes.dtype == torch.float32 and ds.grid_boxes.shape == boxes.shape
    assert ds.region_labels.dtype == torch.int64 and ds.region_is_thing.dtype == torch.bool
    assert ds.region_masks.shape == (2, 64, 64)
    assert ds.valid_hw == (38, 64) and ds.img_path == 'x.jpg'
    with pytest.raises(KeyError, match='ResizeLongestPad'):
        SampleGridRegions()(dict(img=np.zeros((4, 4, 3), np.uint8)))
