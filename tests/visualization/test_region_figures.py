"""Figures (confusion, grid-patch view, similarity heat maps) and their CLIs write PNGs of the
requested pixel size."""

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_mm.visualization import (confusion_matrix, draw_confusion_matrix,
                                       draw_grid_patch_view, draw_similarity_heatmaps, grid_boxes,
                                       similarity_maps, stuff_as_thing_matrix)

NAMES = ['person', 'car', 'dog', 'road', 'sky', 'grass']
IS_THING = [True, True, True, False, False, False]


def _png_size(path) -> tuple:
    with Image.open(path) as im:
        assert im.format == 'PNG'
        im.load()
        return im.size


def _tool(name):
    from conftest import load_tool
    return load_tool(f'analysis/{name}.py')


def _image(h=48, w=64):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_confusion_matrices_exact():
    true = np.array([3, 3, 3, 3, 4, 4, 0, 1])
    pred = np.array([0, 0, 3, 1, 4, 2, 0, 3])
    cm = confusion_matrix(true, pred, 6)
    assert cm.sum() == 8 and cm[3, 0] == 2 and cm[1, 3] == 1
    frac, stuff, thing = stuff_as_thing_matrix(true, pred, IS_THING)
    assert stuff.tolist() == [3, 4, 5] and thing.tolist() == [0, 1, 2]
    np.testing.assert_allclose(frac, [[0.5, 0.25, 0], [0, 0, 0.5], [0, 0, 0]])
    with pytest.raises(ValueError, match='labels must lie'):
        confusion_matrix([7], [0], 6)


def test_confusion_figure(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.integers(0, 6, 300)
    pred = np.where(rng.random(300) < 0.5, true, rng.integers(0, 6, 300))
    out = tmp_path / 'conf.png'
    rgb = draw_confusion_matrix(true, pred, NAMES, IS_THING, top_n=2, out_file=str(out),
                                size=(420, 360))
    assert rgb.shape == (360, 420, 3) and rgb.dtype == np.uint8
    assert _png_size(out) == (420, 360)
    rgb = draw_confusion_matrix(true, pred, NAMES, IS_THING, mode='full', top_n=None,
                                out_file=str(tmp_path / 'full.png'), size=(500, 450))
    assert _png_size(tmp_path / 'full.png') == (500, 450)
    with pytest.raises(ValueError, match='mode'):
        draw_confusion_matrix(true, pred, NAMES, IS_THING, mode='x')


def test_grid_patch_view(tmp_path):
    boxes = grid_boxes(48, 64, 2, 3)
    np.testing.assert_array_equal(boxes[:3], [[0, 0, 21, 24], [21, 0, 43, 24], [43, 0, 64, 24]])
    assert boxes.shape == (6, 4) and boxes[-1].tolist() == [43, 24, 64, 48]
    conf = np.array([0.9, 0.2, 0.5, 0.51, 0.7, 0.1])
    out = tmp_path / 'grid.png'
    rgb = draw_grid_patch_view(_image(), boxes, [0, 4, 'cat', 1, 3, 5], conf, NAMES, theta=0.5,
                               out_file=str(out), size=(320, 240))
    assert rgb.shape == (240, 320, 3) and _png_size(out) == (320, 240)
    # default size: aspect kept, longest side 800
    assert draw_grid_patch_view(_image(), boxes, [0] * 6, conf, NAMES).shape == (600, 800, 3)
    with pytest.raises(ValueError, match='6 boxes, 5 labels'):
        draw_grid_patch_view(_image(), boxes, [0] * 5, conf, NAMES)


def test_similarity_heatmaps(tmp_path):
    dense = torch.zeros(4, 3, 4)
    dense[0, :, :2] = 1  # left half aligns with query 0
    dense[1, :, 2:] = 1
    text = torch.tensor([[2.0, 0, 0, 0], [0, 1, 0, 0]])
    sim = similarity_maps(dense, text)
    assert sim.shape == (2, 3, 4)
    assert sim[0, :, :2].eq(1).all() and sim[0, :, 2:].eq(0).all()
    assert similarity_maps(dense, text, (48, 64)).shape == (2, 48, 64)
    out = tmp_path / 'heat.png'
    rgb = draw_similarity_heatmaps(_image(), dense, text, ['person', 'sky'], out_file=str(out),
                                   valid_hw=(40, 64))
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    assert _png_size(out) == (rgb.shape[1], rgb.shape[0])
    rgb = draw_similarity_heatmaps(_image(), dense.half(), text, ['person', 'sky'],
                                   out_file=str(out), size=(300, 120), normalize='shared')
    assert rgb.shape == (120, 300, 3) and _png_size(out) == (300, 120)
    with pytest.raises(ValueError, match=r'must be \[Q, 4\]'):
        draw_similarity_heatmaps(_image(), dense, torch.zeros(2, 5), ['a', 'b'])
    with pytest.raises(ValueError, match='1 names for 2'):
        draw_similarity_heatmaps(_image(), dense, text, ['a'])


def test_clis(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 50)
    np.savez(tmp_path / 'pred.npz', labels=labels, is_thing=np.asarray(IS_THING)[labels],
             image_index=np.zeros(50, np.int64),
             box_topk=rng.integers(0, 6, (50, 5)), mask_topk=rng.integers(0, 6, (50, 5)),
             class_names=np.asarray(NAMES), class_is_thing=np.asarray(IS_THING))
    _tool('confusion_matrix').main([str(tmp_path / 'pred.npz'), str(tmp_path / 'c.png'),
                                    '--size', '400', '300', '--top-n', '0'])
    assert _png_size(tmp_path / 'c.png') == (400, 300)

    probs = rng.random((6, 6))
    np.savez(tmp_path / 'grid.npz', image=_image(), probs=probs / probs.sum(1, keepdims=True),
             class_names=np.asarray(NAMES))
    _tool('grid_patch_view').main([str(tmp_path / 'grid.npz'), str(tmp_path / 'g.png'),
                                   '--grid', '2', '3', '--size', '256', '192'])
    assert _png_size(tmp_path / 'g.png') == (256, 192)

    np.savez(tmp_path / 'dense.npz', image=_image(), dense=rng.standard_normal((8, 3, 4)),
             text=rng.standard_normal((3, 8)), names=np.asarray(['a', 'b', 'c']),
             valid_hw=np.asarray([40, 64]))
    _tool('similarity_heatmap').main([str(tmp_path / 'dense.npz'), str(tmp_path / 'h.png'),
                                      '--size', '512', '128'])
    assert _png_size(tmp_path / 'h.png') == (512, 128)
    with pytest.raises(SystemExit):
        _tool('similarity_heatmap').main([str(tmp_path / 'grid.npz'), str(tmp_path / 'x.png')])
