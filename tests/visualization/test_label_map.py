"""Label-map, labelled-region and single heat-map figures: exact sizes, exact blend, legend,
label PNGs that read back as the class indices."""
import numpy as np
import pytest
from PIL import Image

from densevlm_mm.visualization import (blend_label_map, class_palette, draw_label_map,
                                       draw_region_labels, draw_similarity_overlay,
                                       save_label_png)
from densevlm_mm.visualization.label_map import segment_boundaries


def _scene(h=30, w=50):
    image = np.full((h, w, 3), 100, dtype=np.uint8)
    labels = np.zeros((h, w), dtype=np.int64)
    labels[:, 20:] = 2
    labels[20:, :10] = 1
    return image, labels


def test_palette_distinct_and_stable():
    pal = class_palette(300)
    assert pal.shape == (300, 3) and pal.dtype == np.uint8
    assert len({tuple(c) for c in pal[:20]}) == 20
    assert len({tuple(c) for c in pal}) > 290
    assert np.array_equal(class_palette(5), pal[:5])


def test_blend_is_exact_and_outlines_segments():
    image, labels = _scene()
    pal = class_palette(3)
    out = blend_label_map(image, labels, pal, alpha=0.5, boundaries=False)
    assert out[0, 0].tolist() == np.round(0.5 * 100 + 0.5 * pal[0].astype(float)).tolist()
    assert out[0, 40].tolist() == np.round(0.5 * 100 + 0.5 * pal[2].astype(float)).tolist()
    edges = segment_boundaries(labels)
    assert edges[0, 19] and not edges[0, 18] and edges[19, 5] and not edges[5, 5]
    with_edges = blend_label_map(image, labels, pal)
    assert (with_edges[edges] == 255).all()
    with pytest.raises(ValueError, match='labels must lie'):
        blend_label_map(image, labels + 5, pal)
    with pytest.raises(ValueError, match='differ in size'):
        blend_label_map(image, labels[:10], pal)


@pytest.mark.parametrize('scale', [1, 3])
def test_label_map_figure_has_the_image_size(tmp_path, scale):
    image, labels = _scene(60, 100)
    out = tmp_path / 'seg.png'
    rgb = draw_label_map(image, labels, ['sky', 'person', 'snow'], out_file=str(out),
                         scale=scale)
    assert rgb.shape == (60 * scale, 100 * scale, 3)
    with Image.open(out) as im:
        assert im.size == (100 * scale, 60 * scale)
    plain = draw_label_map(image, labels, ['sky', 'person', 'snow'], scale=scale, legend=False)
    assert (plain != rgb).any()  # the legend is drawn over the map
    # far from the legend and the names (bottom-left corner): mmseg's blend, 0.3 image + 0.7
    # colour, truncated to uint8
    expected = (0.3 * 100 + 0.7 * class_palette(3)[1].astype(float)).astype(np.uint8)
    assert np.abs(rgb[-3 * scale, 3 * scale].astype(int) - expected.astype(int)).max() <= 2


def test_label_map_names_its_regions_in_colours_the_legend_shows():
    """Every class's name is written on its region (mmseg's ``with_labels``) and each region's
    colour over a photo-like image stays nearest its own legend colour (the former 0.5 blend
    turned a brown sky purple)."""
    rng = np.random.default_rng(0)
    h, w = 240, 320
    image = np.clip(rng.normal(110, 45, (h, w, 3)), 0, 255).astype(np.uint8)
    image[: h // 2] = np.clip(image[: h // 2].astype(int) + (0, 40, 110), 0, 255)  # blue sky
    labels = np.zeros((h, w), dtype=np.int64)
    labels[h // 2:] = 1
    labels[100:200, 40:140] = 2
    names = ['sky', 'grass', 'dog']
    named = draw_label_map(image, labels, names, legend=False)
    bare = draw_label_map(image, labels, names, legend=False, with_labels=False)
    for k in range(3):  # the name tag: a changed patch inside every region
        assert (np.abs(named.astype(int) - bare.astype(int)).sum(-1)[labels == k] > 60).sum() \
            > 30, names[k]
    pal = class_palette(3).astype(float)
    inner = ~segment_boundaries(labels)
    for k in range(3):
        mean = bare[(labels == k) & inner].mean(0)
        assert np.argmin(np.linalg.norm(pal - mean, axis=1)) == k, (names[k], mean, pal)


def test_label_position_equals_mmseg():
    """The numpy label position of ``LabelMapVisualizer`` is mmseg's (sorted pixels)."""
    from mmseg.visualization import SegLocalVisualizer

    from densevlm_mm.visualization.mm_visualizers import LabelMapVisualizer
    rng = np.random.default_rng(1)
    ours = LabelMapVisualizer(name='test_ours')
    theirs = SegLocalVisualizer(name='test_theirs')
    for _ in range(20):
        mask = (rng.random((23, 31)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
        mask[rng.integers(23), rng.integers(31)] = 1
        assert ours._get_center_loc(mask).tolist() == theirs._get_center_loc(mask).tolist()


def test_region_and_overlay_figures(tmp_path):
    image, _ = _scene(40, 64)
    rgb = draw_region_labels(image, [[0, 0, 20, 20], [30, 5, 60, 35]], [0, 1], [0.9, 0.4],
                             ['cat', 'dog'], out_file=str(tmp_path / 'b.png'))
    assert rgb.shape == (40, 64, 3)
    masks = np.zeros((1, 40, 64), dtype=bool)
    masks[0, 10:20, 10:30] = True
    assert draw_region_labels(image, None, [1], [0.5], ['cat', 'dog'], masks=masks,
                              scale=2).shape == (80, 128, 3)
    sim = np.linspace(0, 1, 40 * 64).reshape(40, 64)
    assert draw_similarity_overlay(image, sim, title='cat').shape == (40, 64, 3)
    with pytest.raises(ValueError, match='differ in size'):
        draw_similarity_overlay(image, sim[:5])


def test_label_png_reads_back(tmp_path):
    _, labels = _scene()
    path = save_label_png(labels, str(tmp_path / 'l.png'), num_classes=3)
    with Image.open(path) as im:
        assert im.mode == 'P' and im.size == (50, 30)
        assert np.array_equal(np.asarray(im), labels)
    many = (np.arange(30 * 50).reshape(30, 50) % 700).astype(np.int64)
    path = save_label_png(many, str(tmp_path / 'l16.png'), num_classes=700)
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im).astype(np.int64), many)
    with pytest.raises(ValueError, match='labels must lie'):
        save_label_png(labels, str(tmp_path / 'x.png'), num_classes=2)
