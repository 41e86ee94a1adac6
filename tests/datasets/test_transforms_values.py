"""Values of the data transforms checked against independent computations (hand-computed numbers,
PIL / torch directly, the spec's constants): packing, region crops, panoptic ids and regions, image
decoding and the skipped-image record, resizing (both evaluation protocols)."""
import copy
import io
import multiprocessing
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from densevlm_mm.datasets.transforms import (CropGridRegions, LoadImageSafe, LoadPanopticRegions,
                                             PackDenseVLMInputs, ResizeLongestPad,
                                             get_skipped_images, reset_skipped_images)
from densevlm_mm.datasets.transforms import loading
from densevlm_mm.datasets.transforms.crops import resize_max_size
from densevlm_mm.datasets.transforms.formatting import DEFAULT_FIELDS, DEFAULT_META
from densevlm_mm.datasets.transforms.loading import decode_image, to_rgb8
from densevlm_mm.datasets.transforms.panoptic import id2rgb, load_rgb, rgb2id
from densevlm_mm.datasets.transforms.resize_pad import reference_grid_masks


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, 'PNG')
    return buf.getvalue()


def _coord_image(h: int = 40, w: int = 60) -> np.ndarray:
    """``[h, w, 3]`` uint8, pixel ``(y, x)`` = ``(x, y, 100)``: a crop shows where it came from."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys, np.full_like(xs, 100)], -1).astype(np.uint8)


# ------------------------------------------------------------------------- PackDenseVLMInputs
def test_pack_default_fields_dtypes_shapes_and_metainfo():
    assert DEFAULT_FIELDS == ('grid_boxes', 'region_boxes', 'region_labels', 'region_is_thing',
                              'region_masks', 'region_mask_empty', 'region_crops',
                              'teacher_logits')
    assert DEFAULT_META == ('img_path', 'ori_shape', 'img_shape', 'valid_hw', 'scale_factor',
                            'sample_idx', 'region_protocol', 'image_key')
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    masks = np.zeros((2, 5, 7), np.uint8)
    masks[0, 1:3, 2:5] = 2
    crops = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    meta = dict(img_path='a.jpg', ori_shape=(10, 14), img_shape=(5, 7), valid_hw=(5, 6),
                scale_factor=(0.5, 0.5), sample_idx=3, region_protocol='ours', image_key='a.jpg')
    results = dict(img=img[:, ::-1],  # a negative-stride view (as after a flip)
                   grid_boxes=np.arange(8, dtype=np.float64),  # flat: read as [2, 4]
                   region_boxes=[[1, 2, 3, 4]],
                   region_labels=np.array([3, 1], np.int32),
                   region_is_thing=np.array([1, 0], np.uint8),
                   region_masks=masks, region_mask_empty=np.array([0, 1]),
                   region_crops=crops, teacher_logits=np.array([[1, 2], [3, 4]], np.float64),
                   other_key='not packed', **meta)
    out = PackDenseVLMInputs()(results)
    inputs, ds = out['inputs'], out['data_samples']
    assert set(out) == {'inputs', 'data_samples'}
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 5, 7) and inputs.is_contiguous()
    for c in range(3):
        assert np.array_equal(inputs[c].numpy(), img[:, ::-1, c])
    assert ds.grid_boxes.dtype == torch.float32
    assert ds.grid_boxes.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ds.region_boxes.dtype == torch.float32 and ds.region_boxes.tolist() == [[1, 2, 3, 4]]
    assert ds.region_labels.dtype == torch.int64 and ds.region_labels.tolist() == [3, 1]
    assert ds.region_is_thing.dtype == torch.bool and ds.region_is_thing.tolist() == [True, False]
    assert ds.region_masks.dtype == torch.bool
    assert np.array_equal(ds.region_masks.numpy(), masks > 0)
    assert ds.region_mask_empty.dtype == torch.bool
    assert ds.region_mask_empty.tolist() == [False, True]
    assert ds.region_crops.dtype == torch.uint8 and ds.region_crops.shape == (2, 3, 4, 4)
    assert ds.region_crops.is_contiguous()
    assert np.array_equal(ds.region_crops.numpy(), crops.transpose(0, 3, 1, 2))
    assert ds.teacher_logits.dtype == torch.float32
    assert ds.teacher_logits.tolist() == [[1, 2], [3, 4]]
    assert ds.metainfo == meta
    assert 'other_key' not in ds


def test_pack_chosen_fields_and_absent_keys():
    img = np.zeros((2, 3, 3), np.uint8)
    one_crop = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)  # [S, S, 3]: one crop
    t = PackDenseVLMInputs(fields=['region_labels', 'region_crops'], meta_keys=['img_path'])
    ds = t(dict(img=img, region_labels=[5], region_boxes=np.zeros((1, 4)), img_path='p',
                valid_hw=(2, 3), region_crops=one_crop))['data_samples']
    assert ds.region_labels.tolist() == [5] and 'region_boxes' not in ds
    assert np.array_equal(ds.region_crops.numpy(), one_crop.transpose(2, 0, 1)[None])
    assert ds.metainfo == dict(img_path='p')
    # default fields that are absent are simply not set
    ds = PackDenseVLMInputs()(dict(img=img))['data_samples']
    assert not any(k in ds for k in DEFAULT_FIELDS) and ds.metainfo == {}


# ------------------------------------------------------------------------------------- crops
def test_resize_max_size_centres_the_resized_crop():
    # 7x10 -> longest side 20: 14x20 (scale 2), 6 rows of padding: 3 on top, 3 below
    crop = _coord_image(7, 10)
    out = resize_max_size(crop, 20)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    ref = np.asarray(Image.fromarray(crop).resize((20, 14), Image.BICUBIC))
    assert np.array_equal(out[3:17], ref)
    assert out[:3].max() == 0 and out[17:].max() == 0
    # portrait, no resizing: 12x7 in 12x12, 5 columns of padding: 2 left, 3 right
    crop = _coord_image(12, 7)
    out = resize_max_size(crop, 12)
    assert np.array_equal(out[:, 2:9], crop)
    assert out[:, :2].max() == 0 and out[:, 9:].max() == 0
    # a side that rounds to 0 keeps one pixel: 1x50 -> 1x10, in row (10 - 1) // 2 = 4
    crop = _coord_image(1, 50)
    out = resize_max_size(crop, 10)
    ref = np.asarray(Image.fromarray(crop).resize((10, 1), Image.BICUBIC))
    assert np.array_equal(out[4:5], ref)
    assert out[:4].max() == 0 and out[5:].max() == 0
    crop = _coord_image(50, 1)  # and 50x1 -> 10x1, in column 4
    out = resize_max_size(crop, 10)
    ref = np.asarray(Image.fromarray(crop).resize((1, 10), Image.BICUBIC))
    assert np.array_equal(out[:, 4:5], ref)
    assert out[:, :4].max() == 0 and out[:, 5:].max() == 0


def test_crop_grid_regions_cut_from_the_original_image():
    img = _coord_image(40, 60)
    sx, sy = 0.5, 0.25  # not equal: x and y must be mapped back separately
    orig = np.array([[10, 10, 20, 20],  # 10x10: the crop size, no resizing
                     [40, 5, 50, 15],  # right of x = 40 (inside w = 60, outside h = 40)
                     [10, 20, 20, 24],  # 10x4: 3 rows of padding on top
                     [10.4, 10.4, 19.6, 19.6],  # rounded to 10 .. 20
                     [30, 20, 30, 20]], np.float64)  # empty: one pixel
    grid = (orig * [sx, sy, sx, sy]).astype(np.float32)
    results = dict(ori_img=img, grid_boxes=grid, scale_factor=(sx, sy), img=np.zeros(1))
    out = CropGridRegions(size=10)(results)
    crops = out['region_crops']
    assert 'ori_img' not in out and crops.shape == (5, 10, 10, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[0], img[10:20, 10:20])
    assert np.array_equal(crops[1], img[5:15, 40:50])
    assert np.array_equal(crops[2][3:7], img[20:24, 10:20])
    assert crops[2][:3].max() == 0 and crops[2][7:].max() == 0
    assert np.array_equal(crops[3], img[10:20, 10:20])
    assert (crops[4] == img[20, 30]).all()


def test_crop_scale_enlarges_about_the_centre_and_clips_to_the_image():
    img = _coord_image(40, 60)
    orig = np.array([[10, 10, 14, 14],  # x2.5 about (12, 12): 7 .. 17
                     [0, 0, 4, 4],  # x2.5 about (2, 2): -3 .. 7, clipped to 0 .. 7
                     [56, 36, 60, 40]], np.float64)  # 53 .. 63 / 33 .. 43, clipped to 60 / 40
    out = CropGridRegions(size=10, crop_scale=2.5)(
        dict(ori_img=img, grid_boxes=orig * 0.5, scale_factor=(0.5, 0.5)))
    crops = out['region_crops']
    assert np.array_equal(crops[0], img[7:17, 7:17])
    for crop, (t, b, l, r) in zip(crops[1:], [(0, 7, 0, 7), (33, 40, 53, 60)]):
        part = np.ascontiguousarray(img[t:b, l:r])
        assert np.array_equal(crop, np.asarray(Image.fromarray(part).resize((10, 10),
                                                                            Image.BICUBIC)))


def test_crop_grid_regions_defaults_empty_and_missing_keys():
    t = CropGridRegions()
    assert t.size == 224 and t.crop_scale == 1.0  # spec §2: ResizeMaxSize(224), crop scale 1
    out = t(dict(ori_img=_coord_image(8, 8), grid_boxes=np.zeros((0, 4)), scale_factor=(1, 1)))
    assert out['region_crops'].shape == (0, 224, 224, 3)
    assert out['region_crops'].dtype == np.uint8
    out = t(dict(ori_img=_coord_image(8, 8), grid_boxes=[[0, 0, 8, 8]], scale_factor=(1, 1)))
    assert out['region_crops'].shape == (1, 224, 224, 3)
    with pytest.raises(KeyError, match=r'ResizeLongestPad\(keep_ori=True\)'):
        t(dict(grid_boxes=np.zeros((1, 4)), scale_factor=(1, 1)))
    results = dict(ori_img=_coord_image(8, 8), scale_factor=(1, 1))
    with pytest.raises(KeyError, match='SampleGridRegions before it'):
        t(results)
    assert 'ori_img' in results  # nothing taken from the sample


def test_crop_boxes_in_float32_or_float64_give_the_same_crops():
    # float32 grid cells of a 20 px image in 6 (SampleGridRegions gives float32); enlarged 1.5x
    # the crop edge lands near x.5, where float32 arithmetic would round the other way
    img = _coord_image(20, 20)
    cells = np.linspace(0, 20, 7).astype(np.float32)
    boxes32 = np.array([[cells[1], 0, cells[2], 20]], np.float32)
    t = CropGridRegions(size=16, crop_scale=1.5)
    out32 = t(dict(ori_img=img, grid_boxes=boxes32, scale_factor=(1.0, 1.0)))['region_crops']
    out64 = t(dict(ori_img=img, grid_boxes=boxes32.astype(np.float64),
                   scale_factor=(1.0, 1.0)))['region_crops']
    assert np.array_equal(out32, out64)


# ---------------------------------------------------------------------- panoptic ids / regions
def test_rgb2id_and_id2rgb_by_hand():
    rgb = np.array([[[1, 2, 3], [255, 255, 255], [0, 0, 1]]], np.uint8)
    ids = rgb2id(rgb)
    assert ids.dtype == np.int64
    assert ids.tolist() == [[1 + 2 * 256 + 3 * 65536, 256**3 - 1, 65536]]
    rgba = np.concatenate([rgb, np.full((1, 3, 1), 9, np.uint8)], -1)  # alpha is ignored
    assert rgb2id(rgba).tolist() == ids.tolist()
    for bad in (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2), np.uint8), np.zeros(3, np.uint8)):
        with pytest.raises(ValueError, match='RGB'):
            rgb2id(bad)
    assert id2rgb(ids).tolist() == rgb.tolist()
    assert id2rgb(np.array([0, 256**3 - 1])).tolist() == [[0, 0, 0], [255, 255, 255]]
    assert id2rgb(np.zeros((0, 2), np.int64)).shape == (0, 2, 3)
    for bad in (-1, 256**3):
        with pytest.raises(ValueError, match='256'):
            id2rgb(np.array([[0, bad]]))


def test_load_rgb_modes_and_errors(tmp_path):
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 50
    (tmp_path / 'a.png').write_bytes(_png(rgba))
    out = load_rgb(str(tmp_path / 'a.png'))
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert (out == [200, 0, 0]).all()
    (tmp_path / 'd.png').write_bytes(_png(np.full((2, 2), 65535, np.uint16)))
    assert (load_rgb(str(tmp_path / 'd.png')) == 255).all()  # 16 bit scaled, not clipped
    with pytest.raises(FileNotFoundError, match="image not found: '.*nope.png'"):
        load_rgb(str(tmp_path / 'nope.png'))
    (tmp_path / 'bad.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match='cannot decode mask .*bad.png'):
        load_rgb(str(tmp_path / 'bad.png'), 'mask')


def _panoptic_sample(tmp_path, segments_info):
    """A 6x8 image whose PNG holds segment 1 (rows 0-2), 2 (rows 3-5, cols 0-3) and 3 (the rest)."""
    ids = np.full((6, 8), 3)
    ids[:3], ids[3:, :4] = 1, 2
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / 'img.png')
    Image.fromarray(id2rgb(ids)).save(tmp_path / 'pan.png')
    return dict(img_path=str(tmp_path / 'img.png'), seg_map_path=str(tmp_path / 'pan.png'),
                segments_info=segments_info)


def test_panoptic_labels_and_thing_flags_from_the_category_lists(tmp_path):
    segs = [dict(id=1, category_id=90, bbox=[0, 0, 8, 3]),
            dict(id=2, category_id=7, bbox=[0, 3, 4, 3]),
            dict(id=3, category_id=120, bbox=[4, 3, 4, 3])]
    t = LoadPanopticRegions(min_size=1, category_ids=[120, 7, 90], thing_category_ids=[7])
    out = t(_panoptic_sample(tmp_path, segs))
    assert out['region_labels'].tolist() == [1, 0, 2]  # rank among the sorted ids 7, 90, 120
    assert out['region_is_thing'].tolist() == [False, True, False]
    # a segment's own "label" / "isthing" (or "is_thing") wins over the lists
    segs[0].update(label=5, isthing=1)
    segs[2].update(is_thing=True)
    segs[1].update(isthing=0, is_thing=1)
    out = t(_panoptic_sample(tmp_path, segs))
    assert out['region_labels'].tolist() == [5, 0, 2]
    assert out['region_is_thing'].tolist() == [True, False, True]
    # (the PNG also holds segments 1 and 3, which these jsons do not list: not checked here)
    with pytest.raises(KeyError, match='category id 5 of segment 2'):
        LoadPanopticRegions(category_ids=[7, 90, 120], thing_category_ids=[7],
                            check_png_ids=False)(
            _panoptic_sample(tmp_path, [dict(id=2, category_id=5, bbox=[0, 3, 4, 3])]))
    with pytest.raises(KeyError, match='segment 2 has no "isthing"'):
        LoadPanopticRegions(category_ids=[7], check_png_ids=False)(
            _panoptic_sample(tmp_path, [dict(id=2, category_id=7, bbox=[0, 3, 4, 3])]))


def test_panoptic_defaults_and_max_regions_bound(tmp_path):
    t = LoadPanopticRegions()
    # spec §6.1: 100 segments, box area in [8², 1024²], exclusive stuff max, crowds kept, masks
    assert (t.max_regions, t.min_area, t.max_area) == (100, 64.0, 1024.0**2)
    assert not t.reference_stuff_box and not t.skip_crowd and t.with_masks
    for bad in (0, -1):
        with pytest.raises(ValueError, match='max_regions'):
            LoadPanopticRegions(max_regions=bad)
    segs = [dict(id=i, label=i, isthing=0, iscrowd=1) for i in (1, 2, 3)]
    out = LoadPanopticRegions(max_regions=1, min_size=1)(_panoptic_sample(tmp_path, segs))
    assert out['region_labels'].tolist() == [1]
    np.testing.assert_array_equal(out['region_boxes'], [[0, 0, 8, 3]])
    out = LoadPanopticRegions(min_size=1)(_panoptic_sample(tmp_path, segs))  # crowds kept
    assert out['region_labels'].tolist() == [1, 2, 3] and out['region_masks'].shape == (3, 6, 8)
    assert out['region_masks'].sum((1, 2)).tolist() == [24, 12, 12]


# ------------------------------------------------------------------------------ image decoding
def test_to_rgb8_by_hand():
    rgb = Image.new('RGB', (2, 2))
    assert to_rgb8(rgb) is rgb

    def gray(arr):
        out = np.asarray(to_rgb8(Image.fromarray(arr)))
        assert out.shape == arr.shape + (3, ) and out.dtype == np.uint8
        assert (out == out[..., :1]).all()
        return out[..., 0].tolist()

    # 16 bit: /257 (65535 -> 255)
    assert gray(np.array([[0, 257, 65535, 32896]], np.uint16)) == [[0, 1, 255, 128]]
    # 32-bit integers holding 16-bit values (a 16-bit PNG in some PIL versions): /257
    assert gray(np.array([[0, 257, 65535, -300]], np.int32)) == [[0, 1, 255, 0]]
    # beyond 16 bits: /(2^32 - 1) * 255 = /16843009
    assert gray(np.array([[65536, 16843009 * 100, 2**31 - 1, 0]], np.int32)) == [[0, 100, 127, 0]]
    # at the 16-bit boundary: a peak of 65535 is read as 16 bit, 65536 as 32 bit
    assert gray(np.array([[65535, 0]], np.int32)) == [[255, 0]]
    assert gray(np.array([[65536, 0]], np.int32)) == [[0, 0]]
    v = 1692722405  # v · 255 / (2^32 - 1) = 100.50000003: rounds up
    assert gray(np.array([[v]], np.int32)) == [[int(np.rint(v * 255 / (2**32 - 1)))]] == [[101]]
    assert np.asarray(to_rgb8(Image.new('I', (0, 3)))).shape == (3, 0, 3)  # empty: no error
    # float in [0, 1]: *255; otherwise as is; NaN -> 0; clipped to [0, 255]
    assert gray(np.array([[0, 0.5, 1.0, np.nan]], np.float32)) == [[0, 128, 255, 0]]
    assert gray(np.array([[1.5, 300, -4, 7.4]], np.float32)) == [[2, 255, 0, 7]]
    assert gray(np.array([[0.5, 1.5]], np.float32)) == [[0, 2]]  # max 1.5: as is
    f = np.float32(0.7)
    assert gray(np.array([[f]], np.float32)) == [[int(np.rint(float(f) * 255))]] == [[178]]
    assert np.asarray(to_rgb8(Image.new('F', (0, 3)))).shape == (3, 0, 3)
    # other modes: PIL's conversion
    assert np.asarray(to_rgb8(Image.new('L', (2, 1), 77))).tolist() == [[[77] * 3] * 2]
    la = Image.fromarray(np.array([[[10, 20, 30, 0]]], np.uint8), 'RGBA')
    assert np.asarray(to_rgb8(la)).tolist() == [[[10, 20, 30]]]


def _jpeg(arr, exif_orientation=None):
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    if exif_orientation is None:
        im.save(buf, 'JPEG', quality=95)
    else:
        exif = im.getexif()
        exif[0x0112] = exif_orientation
        im.save(buf, 'JPEG', quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize('orientation', [1, 2, 3, 4, 5, 6, 7, 8])
def test_decode_image_exif_orientation(orientation):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:10, :10] = 255  # a white block in the stored top-left corner
    data = _jpeg(stored, orientation)
    img, hw = decode_image(data, exif_orientation=True)
    transposed = orientation >= 5  # 5-8 swap width and height (EXIF)
    assert hw == ((40, 20) if transposed else (20, 40)) and img.shape == hw + (3, )
    assert img.dtype == np.uint8 and img.flags.writeable
    # where the block ends up (EXIF: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 cw,
    # 7 transverse, 8 rotate 90 ccw)
    corner = {1: (0, 0), 2: (0, 1), 3: (1, 1), 4: (1, 0), 5: (0, 0), 6: (0, 1), 7: (1, 1),
              8: (1, 0)}[orientation]
    h, w = hw
    y = slice(0, 10) if corner[0] == 0 else slice(h - 10, h)
    x = slice(0, 10) if corner[1] == 0 else slice(w - 10, w)
    assert img[y, x].mean() > 200 and img.mean() < 255 * 100 / 800 + 20
    img, hw = decode_image(data, exif_orientation=False)  # stored pixels
    assert hw == (20, 40) and img[:10, :10].mean() > 200
    img, hw = decode_image(data)  # the default: stored pixels
    assert hw == (20, 40) and img[:10, :10].mean() > 200


def test_decode_image_draft_size():
    data = _jpeg(np.full((48, 64, 3), 128, np.uint8))
    # libjpeg scales 1/2, 1/4, 1/8 keeping the longer side >= draft_size; the size of the file
    # is returned
    for draft, shape in [(None, (48, 64)), (64, (48, 64)), (33, (48, 64)), (32, (24, 32)),
                         (16, (12, 16)), (9, (12, 16)), (8, (6, 8)),
                         (1, (6, 8))]:
        img, hw = decode_image(data, draft_size=draft)
        assert img.shape == shape + (3, ) and hw == (48, 64), draft
    # a thin one: 200x12 at draft 16 -> 1/8 (25 >= 16 px), the narrow side ceil(12 / 8) = 2
    img, hw = decode_image(_jpeg(np.full((200, 12, 3), 128, np.uint8)), draft_size=16)
    assert img.shape == (25, 2, 3) and hw == (200, 12)
    img, hw = decode_image(_jpeg(np.full((12, 200, 3), 128, np.uint8)), draft_size=16)
    assert img.shape == (2, 25, 3) and hw == (12, 200)
    png = _png(np.full((48, 64, 3), 128, np.uint8))  # only JPEGs are drafted
    assert decode_image(png, draft_size=16)[0].shape == (48, 64, 3)
    # with EXIF rotation the size of the file is the displayed one
    img, hw = decode_image(_jpeg(np.full((48, 64, 3), 9, np.uint8), 6), 32, True)
    assert img.shape == (32, 24, 3) and hw == (64, 48)


# ------------------------------------------------------------------- the skipped-image record
@pytest.fixture
def logs(monkeypatch):
    """A fresh process record (the real one is restored afterwards); print_log messages."""
    monkeypatch.setattr(loading, '_RECORD', None)
    monkeypatch.setattr(loading, '_RECORD_PID', None)
    messages = []
    monkeypatch.setattr(loading, 'print_log', lambda msg, **kwargs: messages.append(msg))
    return messages


def _unshared_record(monkeypatch, error=OSError):
    def no_shared_memory(*args, **kwargs):
        raise error('no /dev/shm')

    with monkeypatch.context() as m:
        m.setattr(loading.mp, 'get_context', no_shared_memory)
        return loading._SkipRecord()


@pytest.mark.parametrize('shared', [True, False])
def test_skip_record_ring_of_the_last_64_paths(shared, monkeypatch, logs):
    rec = loading._SkipRecord() if shared else _unshared_record(monkeypatch)
    assert rec.shared == shared and rec.read() == (0, [])
    assert [rec.add(f'img{i}.jpg: bad') for i in range(70)] == list(range(1, 71))
    count, paths = rec.read()
    assert count == 70 and paths == [f'img{i}.jpg: bad' for i in range(6, 70)]
    rec.reset()
    assert rec.read() == (0, [])
    rec.add('a')
    rec.add('b')
    assert rec.read() == (2, ['a', 'b'])
    for _ in range(62):
        rec.add('c')
    assert rec.read() == (64, ['a', 'b'] + ['c'] * 62)
    rec.add('d')
    assert rec.read() == (65, ['b'] + ['c'] * 62 + ['d'])


def test_skip_record_long_and_odd_paths(logs):
    rec = loading._SkipRecord()
    long = 'x' * 600 + '/file.jpg: bad'
    rec.add(long)
    assert rec.read().paths == [long[-511:]]  # truncated from the left, the name kept
    rec.add('y' * 511)
    assert rec.read().paths[-1] == 'y' * 511
    rec.add('\u00e9' * 300)  # 600 bytes: the cut falls inside a character
    assert rec.read().paths[-1] == '\ufffd' + '\u00e9' * 255
    rec.add('bad\udcffname.jpg')  # not encodable: replaced
    assert rec.read().paths[-1] == 'bad?name.jpg'
    rec.add('IMG_X')  # only the zero padding is stripped
    assert rec.read().paths[-1] == 'IMG_X'


@pytest.mark.parametrize('error', [OSError, ImportError, PermissionError])
def test_skip_record_without_shared_memory_counts_per_process(error, monkeypatch, logs):
    rec = _unshared_record(monkeypatch, error)
    assert not rec.shared and 'no shared memory' in logs[0]
    assert rec.add('a: b') == 1 and rec.read() == (1, ['a: b'])
    assert rec.__reduce__() == (loading._get_record, ())


def test_skip_record_pickles_to_the_receiving_process_record(monkeypatch, logs):
    rec = loading._SkipRecord()
    assert copy.deepcopy(rec) is rec
    assert pickle.loads(pickle.dumps(rec)) is loading._get_record() is not rec
    assert rec.__reduce__() == (loading._get_record, ())
    # while a worker is being spawned, the shared memory itself is sent
    monkeypatch.setattr(multiprocessing.context, 'get_spawning_popen', lambda: object())
    fn, args = rec.__reduce__()
    assert fn is loading._adopt_record
    assert args[0] is rec._lock and args[1] is rec._count and args[2] is rec._paths
    rec.shared = False
    assert rec.__reduce__() == (loading._get_record, ())


class _SpawningPopen:
    """Stands for the Popen of a worker being spawned: lets shared memory and locks be pickled."""

    def duplicate_for_child(self, fd):
        return os.dup(fd)

    def DupFd(self, fd):
        from multiprocessing.popen_spawn_posix import _DupFd
        return _DupFd(fd)


def test_skip_record_sent_to_a_spawned_process_shares_counter_paths_and_lock(monkeypatch, logs):
    # (no "worker" in the names here: the mutation runs deselect -k worker)
    from multiprocessing.reduction import ForkingPickler
    with monkeypatch.context() as m:  # the process's default start method is fork (Linux)
        m.setattr(multiprocessing.context._default_context, '_actual_context',
                  multiprocessing.get_context('fork'))
        parent = loading._SkipRecord()  # yet the DataLoader may spawn its workers
    parent.add('p.jpg: x')
    with monkeypatch.context() as m:
        m.setattr(multiprocessing.context, 'get_spawning_popen', lambda: _SpawningPopen())
        data = bytes(ForkingPickler.dumps(parent))  # what the DataLoader sends a spawned worker
    worker = pickle.loads(data)
    assert worker is not parent and loading._RECORD is worker  # the worker's process record
    assert worker.read() == (1, ['p.jpg: x'])
    worker.add('w.jpg: y')
    assert parent.read() == (2, ['p.jpg: x', 'w.jpg: y'])
    assert worker._lock.acquire(False)  # one lock for both
    try:
        assert not parent._lock.acquire(False)
    finally:
        worker._lock.release()


def test_get_record_is_created_once_per_process(logs):
    rec = loading._get_record()
    assert isinstance(rec, loading._SkipRecord) and rec.shared
    assert loading._RECORD is rec and loading._RECORD_PID == os.getpid()
    assert loading._get_record() is rec
    assert get_skipped_images() == (0, [])


def test_adopted_record_shares_the_parent_counter(monkeypatch, logs):
    parent = loading._SkipRecord()
    parent.add('p.jpg: x')
    shm = (parent._lock, parent._count, parent._paths)
    child = loading._adopt_record(*shm)
    assert loading._RECORD is child and loading._RECORD_PID == os.getpid()
    assert child.shared and child.read() == (1, ['p.jpg: x'])
    assert child.__reduce__() == (loading._get_record, ())
    assert loading._adopt_record(*shm) is child  # several transforms: one object per process
    assert loading.record_skipped_image('c.jpg', 'y') == 2
    assert parent.read() == (2, ['p.jpg: x', 'c.jpg: y'])
    # the child's own warnings: 20 of them
    for i in range(25):
        loading.record_skipped_image(f'{i}', 'z')
    assert len(logs) == 20
    # another process (after a fork) or a record of its own: replaced by a new adopted one
    monkeypatch.setattr(loading, '_RECORD_PID', -1)
    other = loading._adopt_record(*shm)
    assert other is not child and loading._RECORD is other
    assert loading._RECORD_PID == os.getpid()
    own = loading._SkipRecord()
    monkeypatch.setattr(loading, '_RECORD', own)
    assert loading._adopt_record(*shm) is not own


def test_record_skipped_image_warns_the_first_20(logs):
    assert [loading.record_skipped_image(f'im{i}.jpg', 'bad') for i in range(25)] == \
        list(range(1, 26))
    assert len(logs) == 20
    assert logs[0] == 'skipping image im0.jpg: bad'
    assert logs[19] == 'skipping image im19.jpg: bad (further skips in this process are only ' \
        'counted)'
    assert not any('only counted' in m for m in logs[:19])
    assert get_skipped_images() == (25, [f'im{i}.jpg: bad' for i in range(25)])
    reset_skipped_images()
    assert get_skipped_images() == (0, [])


def test_skip_with_counts_into_the_transform_record_in_a_child_process(monkeypatch, logs):
    main = loading._get_record()
    loading.skip_with(main, 'a.jpg', 'r')
    assert main.read() == (1, ['a.jpg: r'])
    # a worker process (another pid, or no record yet) adopts the transform's record
    theirs = loading._SkipRecord()
    monkeypatch.setattr(loading, '_RECORD_PID', -1)
    loading.skip_with(theirs, 'b.jpg', 'r')
    assert loading._RECORD is theirs and loading._RECORD_PID == os.getpid()
    assert theirs.read() == (1, ['b.jpg: r']) and main.read().count == 1
    monkeypatch.setattr(loading, '_RECORD', None)
    third = loading._SkipRecord()
    loading.skip_with(third, 'c.jpg', 'r')
    assert loading._RECORD is third and third.read() == (1, ['c.jpg: r'])
    # this process has its record: counted there
    loading.skip_with(loading._SkipRecord(), 'd.jpg', 'r')
    assert third.read() == (2, ['c.jpg: r', 'd.jpg: r'])


def test_skips_in_a_forked_child_count_into_the_transform_record(monkeypatch, logs):
    # a forked dataloader process inherits the record with the parent's pid: the transforms'
    # skips must land in that (shared) record, not in a new one of the child
    load, resize = LoadImageSafe(), ResizeLongestPad(64)
    shared = loading._get_record()
    assert load._record is shared and resize._record is shared
    monkeypatch.setattr(loading, '_RECORD_PID', -1)  # as seen from the child
    assert load(dict(img_bytes=b'junk', img_path='a.jpg')) is None
    monkeypatch.setattr(loading, '_RECORD_PID', -1)
    assert resize(dict(img=np.zeros((2, 200, 3), np.uint8), img_path='thin.jpg')) is None
    count, paths = shared.read()
    assert count == 2 and paths[0].startswith('a.jpg: cannot decode')
    assert paths[1].startswith('thin.jpg: too thin')
    assert loading._RECORD is shared


def test_load_image_safe_defaults_and_bytes_without_a_path(logs):
    t = LoadImageSafe()
    assert t.min_size == 10 and t.exif_orientation is True and t.draft_size is None  # spec §2
    assert t._record is loading._get_record()
    assert LoadImageSafe(draft_size=0).draft_size is None
    assert LoadImageSafe(draft_size=32.0).draft_size == 32
    out = t(dict(img_bytes=_png(np.full((12, 16, 3), 5, np.uint8))))
    assert out['img_path'] == '<bytes>' and 'img_bytes' not in out
    assert out['img'].shape == (12, 16, 3) and out['ori_shape'] == out['img_shape'] == (12, 16)
    assert t(dict(img_bytes=b'junk')) is None
    assert t(dict(img_bytes=_png(np.zeros((9, 16, 3), np.uint8)))) is None
    assert LoadImageSafe(min_size=9)(dict(img_bytes=_png(np.zeros((9, 16, 3), np.uint8))))
    count, paths = get_skipped_images()
    assert count == 2 and paths[0].startswith('<bytes>: cannot decode (')
    assert paths[1] == '<bytes>: too small (16x9 < 10 px)'
    # the EXIF tag is applied by default
    out = t(dict(img_bytes=_jpeg(np.zeros((12, 16, 3), np.uint8), 6), img_path='r.jpg'))
    assert out['img'].shape == (16, 12, 3) and out['ori_shape'] == (16, 12)
    out = LoadImageSafe(draft_size=8)(dict(img_bytes=_jpeg(np.zeros((32, 64, 3), np.uint8))))
    assert out['img_shape'] == (4, 8) and out['ori_shape'] == (32, 64)


# -------------------------------------------------------------------------- ResizeLongestPad
def test_resize_defaults_and_arguments():
    img = np.random.default_rng(0).integers(0, 256, (100, 50, 3), dtype=np.uint8)
    t = ResizeLongestPad()
    out = t(dict(img=img))  # spec §2: 512, bicubic, black padding
    assert out['img'].shape == (512, 512, 3) and out['valid_hw'] == (512, 256)
    ref = np.asarray(Image.fromarray(img).resize((256, 512), Image.BICUBIC))
    assert np.array_equal(out['img'][:, :256], ref) and out['img'][:, 256:].max() == 0
    assert out['img_shape'] == out['pad_shape'] == (512, 512) and out['scale_factor'] == (5.12,
                                                                                         5.12)
    assert 'ori_img' not in out
    assert t(dict(img=np.zeros((15, 512, 3), np.uint8))) is None  # min_valid_side 16
    assert t(dict(img=np.zeros((16, 512, 3), np.uint8))) is not None
    for mode, pil in [('bilinear', Image.BILINEAR), ('nearest', Image.NEAREST)]:
        out = ResizeLongestPad((60, 40), pad_val=7, interpolation=mode, keep_ori=True)(
            dict(img=img))
        assert out['img'].shape == (60, 40, 3) and out['valid_hw'] == (60, 30)
        ref = np.asarray(Image.fromarray(img).resize((30, 60), pil))
        assert np.array_equal(out['img'][:, :30], ref) and (out['img'][:, 30:] == 7).all()
        assert out['ori_img'] is img and out['scale_factor'] == (0.6, 0.6)
    assert ResizeLongestPad([8, 6]).size == (8, 6)
    out = ResizeLongestPad(1, min_valid_side=0)(dict(img=np.zeros((1, 200, 3), np.uint8)))
    assert out['valid_hw'] == (1, 1)  # min_valid_side=0 keeps every image
    out = ResizeLongestPad(64, min_valid_side=0)(dict(img=np.zeros((1, 200, 3), np.uint8)))
    assert out['valid_hw'] == (1, 64)  # round(0.32) = 0 -> at least 1 px


@pytest.mark.parametrize('kwargs', [dict(size=0), dict(size=(4, 0)), dict(size=(0, 4)),
                                    dict(size=(4, )), dict(size=(1, 2, 3)),
                                    dict(min_valid_side=-1), dict(interpolation='lanczos')])
def test_resize_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ResizeLongestPad(**kwargs)


def test_resize_smallest_arguments():
    assert ResizeLongestPad(size=(1, 1)).size == (1, 1)
    assert ResizeLongestPad(size=1).size == (1, 1)


def _torch_reference_masks(masks, gh, gw):
    """Bicubic (no antialias) resize of each mask to ``round(side · s)``, padded, ``> 0``."""
    k, h, w = masks.shape
    s = min(gh / h, gw / w)
    nh, nw = min(gh, round(h * s)), min(gw, round(w * s))
    out = np.zeros((k, gh, gw), bool)
    for i in range(k):
        r = F.interpolate(torch.from_numpy(masks[i]).float()[None, None], size=(nh, nw),
                          mode='bicubic', align_corners=False, antialias=False)
        out[i, :nh, :nw] = r[0, 0].numpy() > 0
    return out


def test_reference_protocol_boxes_and_masks_by_hand():
    h, w = 60, 100
    masks = np.zeros((3, h, w), bool)
    masks[0, 10:40, 20:70] = True
    masks[1, 30:, 60:] = True
    masks[2, 0, 0] = True  # one pixel: vanishes on a 3x4 grid
    boxes = np.array([[20, 10, 70, 40], [60, 30, 100, 60]], np.float32)
    results = dict(img=np.zeros((h, w, 3), np.uint8), region_boxes=boxes, region_masks=masks,
                   region_protocol='reference', grid_stride=16)
    out = ResizeLongestPad((50, 70))(results)
    # scale = min(50/60, 70/100) = 0.7; grid 3x4 (stride 16); x: 0.7 · 4·16/70, y: 0.7 · 3·16/50
    expected = boxes.astype(np.float64) * [0.64, 0.672, 0.64, 0.672]
    assert out['region_boxes'].dtype == np.float32
    np.testing.assert_allclose(out['region_boxes'], expected, rtol=1e-6)
    ref = _torch_reference_masks(masks, 3, 4)
    assert out['region_masks'].shape == (3, 3, 4) and np.array_equal(out['region_masks'], ref)
    assert out['region_mask_empty'].tolist() == [False, False, True]
    assert out['img'].shape == (50, 70, 3) and out['valid_hw'] == (42, 70)
    # a tall image (the height sets the scale), boxes given as integers
    tall = masks.transpose(0, 2, 1)  # 100x60
    out = ResizeLongestPad((50, 70))(dict(img=np.zeros((100, 60, 3), np.uint8),
                                          region_boxes=[[10, 20, 40, 70]], region_masks=tall,
                                          region_protocol='reference', grid_stride=16))
    # scale = min(50/100, 70/60) = 0.5; x: 0.5 · 4·16/70, y: 0.5 · 3·16/50
    np.testing.assert_allclose(out['region_boxes'],
                               [[10 * 32 / 70, 20 * 0.48, 40 * 32 / 70, 70 * 0.48]], rtol=1e-6)
    assert np.array_equal(out['region_masks'], _torch_reference_masks(tall, 3, 4))
    for stride in (None, 0):
        with pytest.raises(KeyError, match='grid_stride'):
            ResizeLongestPad(64)(dict(img=np.zeros((8, 8, 3), np.uint8), grid_stride=stride,
                                      region_protocol='reference', region_boxes=boxes))
    # a sample without boxes / masks is only resized
    out = ResizeLongestPad(64)(dict(img=np.zeros((8, 8, 3), np.uint8), grid_stride=16,
                                    region_protocol='reference'))
    assert 'region_boxes' not in out and 'region_masks' not in out


def test_reference_grid_masks_in_chunks():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 30, 20)) > 0.7
    ref = _torch_reference_masks(masks, 4, 5)
    for chunk in (2, 16):
        out = reference_grid_masks(masks, (4, 5), chunk=chunk)
        assert out.dtype == bool and np.array_equal(out, ref)
    assert np.array_equal(reference_grid_masks(masks.astype(np.uint8), [4, 5]), ref)
    # any non-zero value is inside the mask (the masks are read as bool)
    soft = masks * rng.uniform(0.01, 1.0, masks.shape)
    assert np.array_equal(reference_grid_masks(soft, (4, 5)), ref)
    many = rng.random((18, 8, 8)) > 0.5  # more than the default chunk of 16
    assert np.array_equal(reference_grid_masks(many, (2, 2)), _torch_reference_masks(many, 2, 2))


def test_transform_reprs_name_the_class_and_settings():
    assert repr(PackDenseVLMInputs(fields=['region_labels'], meta_keys=['img_path'])) == \
        "PackDenseVLMInputs(fields=('region_labels',), meta_keys=('img_path',))"
    assert repr(LoadImageSafe(min_size=5, draft_size=64, exif_orientation=False)) == \
        'LoadImageSafe(min_size=5, draft_size=64, exif_orientation=False, backend_args=None)'
    assert repr(ResizeLongestPad((32, 48), pad_val=3, min_valid_side=2)) == \
        'ResizeLongestPad(size=(32, 48), pad_val=3, min_valid_side=2)'
    assert repr(LoadPanopticRegions(max_regions=7, min_size=2, max_size=4)).startswith(
        'LoadPanopticRegions(max_regions=7, min_area=4.0, max_area=16.0, ')
