"""Open-vocabulary label maps and labelled regions drawn over the image, at the image's own size.

:func:`draw_label_map` paints a colour per class over the image and writes each class's name on its
region (mmseg's ``SegLocalVisualizer``), outlines the segments and adds a legend of the classes
present (largest first, with their share of the image); :func:`draw_region_labels` draws boxes (and
optionally masks) with their class and score (mmdet's ``DetLocalVisualizer``);
:func:`draw_similarity_overlay` one text-to-dense similarity map; :func:`save_label_png` writes
the raw label map as an indexed PNG (pixel value = class index).
"""
import colorsys
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.patches import Patch
from PIL import Image

from .figure_utils import finish, new_figure, save_png


def class_palette(num_classes: int) -> np.ndarray:
    """Distinct uint8 RGB colours ``[C, 3]``: tab20 for the first 20, then golden-ratio hues."""
    colours = []
    tab = colormaps['tab20']
    for i in range(num_classes):
        if i < 20:
            rgb = tab(2 * i if i < 10 else 2 * (i - 10) + 1)[:3]  # the 10 strong colours first
        else:
            hue = (i * 0.618033988749895) % 1.0
            sat, val = (0.75, 0.95) if i % 2 else (0.55, 0.75)
            rgb = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append([round(c * 255) for c in rgb])
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be [H, W, 3], got shape {image.shape}')
    return image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)


def _out_size(image: np.ndarray, scale: float):
    if scale <= 0:
        raise ValueError(f'scale must be positive, got {scale}')
    h, w = image.shape[:2]
    return max(1, round(w * scale)), max(1, round(h * scale))


def segment_boundaries(label_map: np.ndarray) -> np.ndarray:
    """Bool ``[H, W]``: pixels whose right or lower neighbour has another label."""
    edge = np.zeros(label_map.shape, dtype=bool)
    edge[:, :-1] |= label_map[:, 1:] != label_map[:, :-1]
    edge[:-1, :] |= label_map[1:, :] != label_map[:-1, :]
    return edge


def blend_label_map(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray,
                    alpha: float = 0.5, boundaries: bool = True) -> np.ndarray:
    """``(1-α)·image + α·colour[label]`` with white segment outlines; uint8 ``[H, W, 3]``."""
    image = _check_image(image)
    label_map = np.asarray(label_map)
    if label_map.shape != image.shape[:2]:
        raise ValueError(f'label map {label_map.shape} and image {image.shape[:2]} differ in size')
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(palette)):
        raise ValueError(f'labels must lie in [0, {len(palette)})')
    out = (1 - alpha) * image.astype(np.float32) + alpha * palette[label_map].astype(np.float32)
    if boundaries:
        out[segment_boundaries(label_map)] = 255
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _resized(image: np.ndarray, label_map: np.ndarray, size):
    """The image (bilinear) and the label map (nearest) at ``size = (W, H)``."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image, label_map
    big = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    labels = np.asarray(Image.fromarray(label_map.astype(np.int32), mode='I')
                        .resize(size, Image.NEAREST)).astype(np.int64)
    return big, labels


def draw_label_map(image: np.ndarray, label_map: np.ndarray, class_names: Sequence[str],
                   out_file: Optional[str] = None, alpha: float = 0.7, scale: float = 1.0,
                   legend: bool = True, max_legend: int = 12, title: Optional[str] = None,
                   dpi: int = 100, with_labels: bool = True) -> np.ndarray:
    """The label map over the image, class names on the regions, a legend of the classes present.

    The overlay is mmseg's ``SegLocalVisualizer`` (``with_labels``: each class's name written on
    its region) at the output size, with white segment outlines; at ``alpha`` 0.7 the regions
    keep their legend colours.

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        label_map: int ``[H, W]`` class indices into ``class_names``.
        class_names: names for regions and legend (C).
        out_file: PNG path to save.
        alpha: colour opacity.
        scale: output pixels per image pixel; the figure is exactly ``round(W·scale) ×
            round(H·scale)`` (1: the image's own size and aspect ratio).
        legend: draw the legend (classes present, largest area first, with their area share;
            at most ``max_legend`` entries, then "+N more").
        title: optional text in the top-left corner.
        with_labels: write the class names on their regions.

    Returns:
        The RGB figure ``[round(H·scale), round(W·scale), 3]``.
    """
    from .mm_visualizers import seg_overlay
    image = _check_image(image)
    names = list(class_names)
    label_map = np.asarray(label_map).astype(np.int64)
    if label_map.shape != image.shape[:2]:
        raise ValueError(f'label map {label_map.shape} and image {image.shape[:2]} differ in size')
    if label_map.size and (label_map.min() < 0 or label_map.max() >= len(names)):
        raise ValueError(f'labels must lie in [0, {len(names)})')
    palette = class_palette(len(names))
    size = _out_size(image, scale)
    big, big_labels = _resized(image, label_map, size)
    shown = seg_overlay(big, big_labels, names, palette, alpha, with_labels)
    shown[segment_boundaries(big_labels)] = 255
    fig = new_figure(size, dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(shown, interpolation='nearest')
    ax.set_axis_off()
    font = float(np.clip(min(size) / 28, 4, 11))
    if legend and label_map.size:
        area = np.bincount(label_map.reshape(-1), minlength=len(names)) / label_map.size
        present = [int(i) for i in np.argsort(-area, kind='stable') if area[i] > 0]
        handles = [Patch(facecolor=palette[i] / 255, edgecolor='white', lw=0.5,
                         label=f'{names[i]} {_percent(area[i])}') for i in present[:max_legend]]
        if len(present) > max_legend:
            handles.append(Patch(facecolor='none', edgecolor='none',
                                 label=f'+{len(present) - max_legend} more'))
        ax.legend(handles=handles, loc='upper right', fontsize=font, framealpha=0.7,
                  handlelength=1.0, handleheight=0.8, borderpad=0.3, labelspacing=0.2,
                  handletextpad=0.4, borderaxespad=0.2)
    if title:
        ax.text(0.01, 0.99, title, transform=ax.transAxes, ha='left', va='top', fontsize=font,
                color='white', bbox=dict(boxstyle='round,pad=0.2', fc='black', alpha=0.6, lw=0))
    return finish(fig, size, out_file)


def _percent(fraction: float) -> str:
    return '<1%' if fraction < 0.005 else f'{100 * fraction:.0f}%'


def draw_region_labels(image: np.ndarray, boxes, labels: Sequence[int], scores,
                       class_names: Sequence[str], out_file: Optional[str] = None,
                       masks: Optional[np.ndarray] = None, scale: float = 1.0,
                       alpha: float = 0.8) -> np.ndarray:
    """Boxes (xyxy image pixels ``[K, 4]``) and/or masks (bool ``[K, H, W]``) in their class
    colours with ``"<class>: <100 · score>"`` tags (mmdet's ``DetLocalVisualizer``); the figure
    has the image's size times ``scale``."""
    from .mm_visualizers import det_overlay
    image = _check_image(image)
    names = list(class_names)
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
    if boxes is None:
        boxes = [_mask_box(m) for m in masks] if masks is not None else []
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not (len(boxes) == len(labels) == len(scores)):
        raise ValueError(f'{len(boxes)} regions, {len(labels)} labels, {len(scores)} scores')
    size = _out_size(image, scale)
    h, w = image.shape[:2]
    if size != (w, h):
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        boxes = boxes * np.array([size[0] / w, size[1] / h] * 2, dtype=np.float32)
        if masks is not None:
            masks = np.stack([np.asarray(Image.fromarray(m).resize(size, Image.NEAREST))
                              for m in masks]) if len(masks) else masks.reshape(0, *size[::-1])
    return _save(det_overlay(image, boxes, labels, scores, names, class_palette(len(names)),
                             masks=masks, line_width=max(1.0, min(size) / 150), alpha=alpha),
                 out_file)


def _mask_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _save(rgb: np.ndarray, out_file: Optional[str]) -> np.ndarray:
    if out_file:
        save_png(rgb, out_file)
    return rgb


def draw_similarity_overlay(image: np.ndarray, similarity: np.ndarray,
                            out_file: Optional[str] = None, title: Optional[str] = None,
                            alpha: float = 0.5, cmap: str = 'jet', scale: float = 1.0,
                            dpi: int = 100) -> np.ndarray:
    """One similarity map ``[H, W]`` (min–max scaled) overlaid on the image at its own size."""
    image = _check_image(image)
    sim = np.asarray(similarity, dtype=np.float32)
    if sim.shape != image.shape[:2]:
        raise ValueError(f'similarity {sim.shape} and image {image.shape[:2]} differ in size')
    lo, hi = float(sim.min()), float(sim.max())
    heat = colormaps[cmap]((sim - lo) / max(hi - lo, 1e-8))[..., :3]
    blend = (1 - alpha) * image.astype(np.float32) / 255 + alpha * heat
    size = _out_size(image, scale)
    h, w = image.shape[:2]
    fig = new_figure(size, dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.clip(blend, 0, 1), extent=(0, w, h, 0), interpolation='bilinear')
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    if title:
        font = float(np.clip(min(size) / 28, 4, 11))
        ax.text(0.01, 0.99, f'{title} (max {hi:.2f})', transform=ax.transAxes, ha='left',
                va='top', fontsize=font, color='white',
                bbox=dict(boxstyle='round,pad=0.2', fc='black', alpha=0.6, lw=0))
    return finish(fig, size, out_file)


def save_label_png(label_map: np.ndarray, path: str, num_classes: Optional[int] = None) -> str:
    """The label map as a PNG of the image's size whose pixel values are class indices: 8-bit
    with the class palette for up to 256 classes, 16-bit grayscale above."""
    label_map = np.asarray(label_map)
    n = int(num_classes if num_classes is not None else (label_map.max() + 1 if label_map.size
                                                         else 1))
    if label_map.size and (label_map.min() < 0 or label_map.max() >= n):
        raise ValueError(f'labels must lie in [0, {n})')
    if n <= 256:
        im = Image.fromarray(label_map.astype(np.uint8), mode='P')
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[:n] = class_palette(n)
        im.putpalette(pal.reshape(-1).tolist())
    else:
        if n > 65536:
            raise ValueError(f'{n} classes do not fit a 16-bit PNG')
        im = Image.fromarray(label_map.astype(np.uint16))
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    im.save(path, format='PNG')
    return path


__all__ = ['class_palette', 'segment_boundaries', 'blend_label_map', 'draw_label_map',
           'draw_region_labels', 'draw_similarity_overlay', 'save_label_png']
