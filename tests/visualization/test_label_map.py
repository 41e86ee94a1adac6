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
    # far from the legend (bottom-left corner) the figure is the blend itself
    blend = blend_label_map(image, labels, class_palette(3))
    corner = np.asarray(Image.fromarray(blend).resize((100 * scale, 60 * scale),
                                                      Image.NEAREST))
    assert np.abs(rgb[-3 * scale, 3 * scale].astype(int)
                  - corner[-3 * scale, 3 * scale].astype(int)).max() <= 2


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
