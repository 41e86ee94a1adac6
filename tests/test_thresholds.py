"""Every configurable threshold of the core tested at, just below and just above its boundary.

* θ of region denoising (:class:`DecoupledAlignLoss`, strict ``conf > θ``) with a teacher
  confidence *exactly* equal to a realistic θ (0.1, 0.2, 0.25, 0.5: k classes tied at the top
  and every other class ~100 logits lower gives a softmax maximum of exactly ``1/k`` in fp32);
* the box-area bounds of :class:`LoadPanopticRegions` (``min_size² <= area <= max_size²`` kept);
* the shortest image side of :class:`LoadImageSafe` (``side >= min_size`` kept) and the
  shortest resized side of :class:`ResizeLongestPad` (``>= min_valid_side`` kept);
* the region cap of the grid sampler (``m·n <= max_regions`` keeps every cell, in order);
* top-k of the metric (``correct_at_k``, ``mean_class_accuracy``'s width check) and of the
  image-size check of the backbone (``H, W >= stride``);
* ``filter_cfg.min_size`` of the open-vocabulary detection sets (``min(W, H) >= min_size`` kept);
* θ of the grid-patch view (cells drawn as kept only when ``conf > θ``, like the loss).
The ``top-k`` of ``DenseVLM.predict`` is in ``tests/models/test_predict_values.py``.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_mm.datasets.transforms import (LoadImageSafe, LoadPanopticRegions,
                                             ResizeLongestPad, get_skipped_images)
from densevlm_mm.datasets.transforms.panoptic import id2rgb
from densevlm_mm.evaluation.functional import correct_at_k, mean_class_accuracy, topk_indices
from densevlm_mm.models.losses import DecoupledAlignLoss


def _below(x):
    return float(np.nextafter(np.float32(x), np.float32(-1)))


def _above(x):
    return float(np.nextafter(np.float32(x), np.float32(2)))


# ------------------------------------------------------------------------------ θ (denoising)
def _tied_regions(dim=16):
    """Teacher features / text rows with confidences exactly 1/10, 1/5, 1/4, 1/2 and 1.

    Class c has text row ``e_{group(c)}``; region r points at group r. Its softmax has ``k_r``
    classes at cos 1 (logit 100 at τ=0.01) and the rest at cos 0 (logit 0, exp(-100) is absorbed
    when added to k_r), so its maximum probability is exactly ``1/k_r``.
    """
    sizes = [10, 5, 4, 2, 1]  # classes per group -> confidences 0.1, 0.2, 0.25, 0.5, 1.0
    rows = []
    for g, k in enumerate(sizes):
        rows += [torch.eye(dim)[g]] * k
    text = torch.stack(rows)  # [22, dim]
    teacher = torch.eye(dim)[:len(sizes)] * 3.0  # any norm: features are normalised
    conf = [1.0 / k for k in sizes]
    return teacher, text, conf


def test_tied_confidences_are_exact():
    teacher, text, conf = _tied_regions()
    logits = torch.nn.functional.normalize(teacher, dim=-1) @ text.t() / 0.01
    got = logits.softmax(-1).max(-1).values
    assert torch.equal(got, torch.tensor(conf, dtype=torch.float32))
    assert torch.equal(got[:4], torch.tensor([0.1, 0.2, 0.25, 0.5], dtype=torch.float32))


@pytest.mark.parametrize('theta', [0.1, 0.2, 0.25, 0.5])
@pytest.mark.parametrize('where', ['at', 'below', 'above'])
def test_theta_boundary_is_strict(theta, where):
    teacher, text, conf = _tied_regions()
    g = torch.Generator().manual_seed(0)
    student = torch.randn(teacher.shape[0], 8, generator=g)
    s_text = torch.randn(text.shape[0], 8, generator=g)
    is_thing = torch.zeros(text.shape[0], dtype=torch.bool)
    is_thing[:10] = True  # group 0 (conf 0.1) are things, the rest stuff
    value = {'at': theta, 'below': _below(theta), 'above': _above(theta)}[where]
    loss = DecoupledAlignLoss(theta=value)
    out = loss(student, teacher, s_text, text, is_thing)
    kept = [c > np.float32(value) for c in np.float32(conf)]
    assert out['num_kept'].item() == sum(kept)
    # the region whose confidence equals θ is kept only when θ is just below it
    at = conf.index(1.0 / round(1.0 / theta))
    assert kept[at] == (where == 'below')
    assert out['num_thing'].item() == int(kept[0])
    assert out['num_stuff'].item() == sum(kept[1:])
    # the loss itself follows the kept set: same value as with exactly those regions at θ=0
    rows = torch.tensor(kept)
    if rows.any():
        ref = DecoupledAlignLoss(theta=0.0)(student[rows], teacher[rows], s_text, text, is_thing)
        torch.testing.assert_close(out['loss_align'], ref['loss_align'])
    else:
        assert out['loss_align'].item() == 0.0


# ------------------------------------------------------------------- panoptic region area bounds
def _write(tmp_path, name, array):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return str(path)


def _panoptic(tmp_path, segments, h=40, w=200):
    """An image + panoptic PNG with one rectangle per segment ``(id, (y0, y1, x0, x1))``."""
    ids = np.zeros((h, w), np.int64)
    for sid, (y0, y1, x0, x1) in segments:
        ids[y0:y1, x0:x1] = sid
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return _write(tmp_path, 'img.png', img), _write(tmp_path, 'pan.png', id2rgb(ids))


def _run_panoptic(tmp_path, rects, thing_boxes, **kwargs):
    """Stuff segments from ``rects`` (tight box = rectangle); thing segments with GT boxes."""
    segs, infos = [], []
    for i, rect in enumerate(rects):
        segs.append((10 + i, rect))
        infos.append(dict(id=10 + i, category_id=1, label=1, isthing=0, iscrowd=0,
                          bbox=[0, 0, 1, 1]))
    for i, (bw, bh) in enumerate(thing_boxes):
        sid = 100 + i
        segs.append((sid, (39, 40, 2 * i, 2 * i + 1)))  # a 1-px mask: not empty
        infos.append(dict(id=sid, category_id=2, label=0, isthing=1, iscrowd=0,
                          bbox=[1.0, 2.0, float(bw), float(bh)]))
    img, pan = _panoptic(tmp_path, segs)
    results = dict(img_path=img, seg_map_path=pan, segments_info=infos)
    return LoadPanopticRegions(**kwargs).transform(results)


def test_min_area_boundary_stuff_and_thing(tmp_path):
    # min_size 8 -> min area 64: 63 dropped, 64 and 65 kept (both for tight stuff boxes and
    # for GT thing boxes)
    rects = [(0, 7, 0, 9), (0, 8, 20, 28), (0, 5, 40, 53)]  # 7x9=63, 8x8=64, 5x13=65
    out = _run_panoptic(tmp_path, rects, [(9, 7), (8, 8), (13, 5)], min_size=8)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in out['region_boxes']]
    assert areas == [64.0, 65.0, 64.0, 65.0]
    assert out['region_is_thing'].tolist() == [False, False, True, True]
    assert out['region_masks'].shape[0] == 4


def test_max_area_boundary(tmp_path):
    # max_size 10 -> max area 100: 99 and 100 kept, 101 dropped
    out = _run_panoptic(tmp_path, [(0, 9, 0, 11), (0, 10, 20, 30), (0, 1, 40, 141)],
                        [(11, 9), (10, 10), (101, 1)], min_size=0, max_size=10)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in out['region_boxes']]
    assert areas == [99.0, 100.0, 99.0, 100.0]


def test_fractional_area_bounds(tmp_path):
    # non-integer bounds: min_size 7.5 -> 56.25; a 7x8=56 box is below, 8x8 above
    out = _run_panoptic(tmp_path, [], [(7, 8), (8, 8)], min_size=7.5)
    assert [(b[2] - b[0]) * (b[3] - b[1]) for b in out['region_boxes']] == [64.0]


# ------------------------------------------------------------------------ image-side minimums
@pytest.mark.parametrize('side,kept', [(9, False), (10, True), (11, True)])
def test_load_image_min_side(tmp_path, side, kept):
    path = _write(tmp_path, 'im.png', np.zeros((side, 40, 3), np.uint8))
    before = get_skipped_images().count
    out = LoadImageSafe(min_size=10).transform(dict(img_path=path))
    assert (out is not None) == kept
    assert get_skipped_images().count == before + (0 if kept else 1)
    # the same on the other side
    path = _write(tmp_path, 'im2.png', np.zeros((40, side, 3), np.uint8))
    assert (LoadImageSafe(min_size=10).transform(dict(img_path=path)) is not None) == kept


@pytest.mark.parametrize('side,kept', [(15, False), (16, True), (17, True)])
def test_resize_min_valid_side(side, kept):
    img = np.zeros((side, 128, 3), np.uint8)  # already 128 wide: no resize, the side stays
    out = ResizeLongestPad(128, min_valid_side=16).transform(dict(img=img.copy()))
    assert (out is not None) == kept
    if kept:
        assert out['valid_hw'] == (side, 128)
    # evaluation samples (with regions) are never dropped
    out = ResizeLongestPad(128, min_valid_side=16).transform(
        dict(img=img.copy(), region_boxes=np.zeros((0, 4), np.float32)))
    assert out is not None and out['valid_hw'] == (side, 128)
    # after resizing: 512x(2*side) -> 128x(side/2) wide... the resized side is what counts
    big = np.zeros((4 * side, 512, 3), np.uint8)
    out = ResizeLongestPad(128, min_valid_side=16).transform(dict(img=big))
    assert (out is not None) == kept


# ------------------------------------------------------------------------------- grid region cap
def _sampler(**kwargs):
    try:
        from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler
    except ImportError:  # before the move to datasets/transforms
        from densevlm_mm.models.region_sampler import GridRegionSampler
    return GridRegionSampler(**kwargs)


@pytest.mark.parametrize('cap', [11, 12, 13])
def test_grid_max_regions_boundary(cap):
    sampler = _sampler(max_split=6, max_regions=cap)
    full = sampler.grid_boxes((60, 80), 3, 4, generator=torch.Generator().manual_seed(0))
    every = _sampler(max_split=6, max_regions=36).grid_boxes((60, 80), 3, 4)
    assert every.shape == (12, 4)
    if cap >= 12:
        assert torch.equal(full, every)  # all cells, row-major
    else:
        assert full.shape == (cap, 4)
        # a row-major-ordered subset of the cells
        idx = [int(((every == b).all(1)).nonzero()) for b in full]
        assert idx == sorted(idx) and len(set(idx)) == cap


# --------------------------------------------------------------------------------------- top-k
def test_correct_at_k_boundary():
    topk = np.array([[3, 1, 4, 0, 2]])
    for k in range(1, 6):
        # the label in column k-1 counts at k, not at k-1
        label = np.array([topk[0, k - 1]])
        assert correct_at_k(topk, label, k)[0]
        assert not correct_at_k(topk, label, k - 1)[0]


def test_metric_width_boundary():
    labels = np.array([0, 1, 2])
    top = np.array([[0, 1], [2, 1], [2, 0]])  # 2 predicted classes per region
    res = mean_class_accuracy(top, labels, topk=(1, 2))  # k == width: fine
    assert res == pytest.approx({'top1': 200 / 3, 'top2': 100.0})
    with pytest.raises(ValueError, match='top-3'):
        mean_class_accuracy(top, labels, topk=(3, ))  # k = width + 1
    # all classes listed (width >= num_classes): any k is allowed
    full = np.array([[0, 1, 2], [2, 1, 0], [2, 0, 1]])
    assert mean_class_accuracy(full, labels, topk=(4, ), num_classes=3)['top4'] == 100.0
    with pytest.raises(ValueError, match='top-5'):
        mean_class_accuracy(full, np.array([0, 1, 2]), topk=(5, ), num_classes=4)


@pytest.mark.parametrize('k', [2, 3, 4])
def test_topk_indices_clamps_at_class_count(k):
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]])
    got = topk_indices(scores, k)
    assert got.shape == (2, min(k, 3))
    assert got[:, :2].tolist() == [[1, 2], [0, 1]]  # ties to the lower index


@pytest.mark.parametrize('size,ok', [(15, False), (16, True), (17, True)])
def test_backbone_image_side_at_stride(size, ok):
    from densevlm_mm.models.backbones import DenseVLMBackbone
    bb = DenseVLMBackbone('densevlm-tiny-vit').eval()
    for shape in ((1, 3, size, 32), (1, 3, 32, size)):
        x = torch.zeros(shape)
        if ok:
            with torch.no_grad():
                assert bb.dense_features(x).shape[-2:] == (shape[2] // 16, shape[3] // 16)
        else:
            with pytest.raises(ValueError, match='images'):
                bb.dense_features(x)


# ------------------------------------------------------------ OV detection filter_cfg.min_size
def _det_ann(tmp_path, sizes):
    """A COCO instances file with one image per ``(width, height)`` (one base box each)."""
    images = [dict(id=i + 1, file_name=f'{i}.jpg', width=w, height=h)
              for i, (w, h) in enumerate(sizes)]
    anns = [dict(id=i + 1, image_id=i + 1, category_id=1, bbox=[1.0, 1.0, 4.0, 4.0], area=16.0,
                 iscrowd=0) for i in range(len(sizes))]
    cats = [dict(id=1, name='person'), dict(id=3, name='car')]
    path = tmp_path / 'instances.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return str(path)


@pytest.mark.parametrize('filter_empty_gt', [False, True])
def test_ov_detection_min_size_boundary(tmp_path, filter_empty_gt):
    from densevlm_mm.datasets.ov_detection import OVCocoDataset
    # shortest side one below, at and one above min_size = 32, on either side
    sizes = [(31, 100), (32, 100), (33, 100), (100, 31), (100, 32), (100, 33)]
    ann = _det_ann(tmp_path, sizes)
    kwargs = dict(ann_file=ann, data_prefix=dict(img=str(tmp_path)), pipeline=[],
                  serialize_data=False,  # no gc.collect() per dataset: fast
                  classes=['person', 'car'], base_classes=['person'], novel_classes=['car'])
    ds = OVCocoDataset(filter_cfg=dict(filter_empty_gt=filter_empty_gt, min_size=32), **kwargs)
    kept = sorted((ds.get_data_info(i)['width'], ds.get_data_info(i)['height'])
                  for i in range(len(ds)))
    assert kept == [(32, 100), (33, 100), (100, 32), (100, 33)]  # 31 dropped, 32 and 33 kept
    # without min_size (default 0) or in test mode every image is kept
    assert len(OVCocoDataset(filter_cfg=dict(filter_empty_gt=filter_empty_gt), **kwargs)) == 6
    assert len(OVCocoDataset(filter_cfg=dict(min_size=32), test_mode=True, **kwargs)) == 6


# ------------------------------------------------------------------------ θ of the grid view
def _grid_cells(monkeypatch, conf, theta):
    """Draw a 1×K grid; returns per cell whether it was drawn as kept, and the title."""
    import densevlm_mm.visualization.grid_view as grid_view
    figs, new_figure = [], grid_view.new_figure

    def capture(*args, **kwargs):
        figs.append(new_figure(*args, **kwargs))
        return figs[-1]

    monkeypatch.setattr(grid_view, 'new_figure', capture)
    boxes = grid_view.grid_boxes(16, 16 * len(conf), 1, len(conf))
    grid_view.draw_grid_patch_view(np.zeros((16, 16 * len(conf), 3), np.uint8), boxes,
                                   ['a'] * len(conf), conf, theta=theta, size=(64 * len(conf), 80))
    ax = figs[0].axes[0]
    kept = [p.get_hatch() is None for p in ax.patches]
    return kept, figs[0].get_suptitle()


@pytest.mark.parametrize('theta', [0.1, 0.3, 0.5])
def test_grid_view_theta_boundary_fp32(monkeypatch, theta):
    # fp32 confidences (the retriever's) exactly at θ, one fp32 ulp below and above: drawn as kept
    # exactly when the loss keeps them (it compares conf > θ in fp32)
    conf = torch.tensor([_below(theta), theta, _above(theta)], dtype=torch.float32)
    loss_keeps = (conf > theta).tolist()
    assert loss_keeps == [False, False, True]
    kept, title = _grid_cells(monkeypatch, conf.numpy(), theta)
    assert kept == loss_keeps
    assert title.startswith('grid 3 cells, 1 above')
    kept, _ = _grid_cells(monkeypatch, conf, theta)  # a tensor is read the same way
    assert kept == loss_keeps


@pytest.mark.parametrize('theta', [0.1, 0.3, 0.5])
def test_grid_view_theta_boundary_fp64(monkeypatch, theta):
    conf = [float(np.nextafter(theta, 0.0)), theta, float(np.nextafter(theta, 1.0))]
    kept, title = _grid_cells(monkeypatch, conf, theta)
    assert kept == [False, False, True]
    assert title.startswith('grid 3 cells, 1 above')
