"""Open-vocabulary label maps and labelled regions drawn over the image, at the image's own size.

:func:`draw_label_map` blends a colour per class over the image, outlines the segments and adds a
legend of the classes present (largest first, with their share of the image);
:func:`draw_region_labels` draws boxes (and optionally masks) with their class and score;
:func:`draw_similarity_overlay` one text-to-dense similarity map; :func:`save_label_png` writes
the raw label map as an indexed PNG (pixel value = class index).
"""
import colorsys
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from .figure_utils import finish, new_figure


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


def draw_label_map(image: np.ndarray, label_map: np.ndarray, class_names: Sequence[str],
                   out_file: Optional[str] = None, alpha: float = 0.5, scale: float = 1.0,
                   legend: bool = True, max_legend: int = 12, title: Optional[str] = None,
                   dpi: int = 100) -> np.ndarray:
    """The label map blended over the image with a legend of the classes present.

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        label_map: int ``[H, W]`` class indices into ``class_names``.
        class_names: legend names (C).
        out_file: PNG path to save.
        alpha: colour opacity.
        scale: output pixels per image pixel; the figure is exactly ``round(W·scale) ×
            round(H·scale)`` (1: the image's own size and aspect ratio).
        legend: draw the legend (classes present, largest area first, with their area share;
            at most ``max_legend`` entries, then "+N more").
        title: optional text in the top-left corner.

    Returns:
        The RGB figure ``[round(H·scale), round(W·scale), 3]``.
    """
    image = _check_image(image)
    names = list(class_names)
    label_map = np.asarray(label_map).astype(np.int64)
    palette = class_palette(len(names))
    blended = blend_label_map(image, label_map, palette, alpha)
    size = _out_size(image, scale)
    h, w = image.shape[:2]
    fig = new_figure(size, dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(blended, extent=(0, w, h, 0), interpolation='nearest')
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
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
                       alpha: float = 0.4, dpi: int = 100) -> np.ndarray:
    """Boxes (xyxy image pixels ``[K, 4]``) and/or masks (bool ``[K, H, W]``) with
    ``"<class> <score>"`` tags; the figure has the image's size times ``scale``."""
    image = _check_image(image)
    names = list(class_names)
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    palette = class_palette(len(names))
    shown = image.astype(np.float32)
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        for k, m in enumerate(masks):
            shown[m] = (1 - alpha) * shown[m] + alpha * palette[labels[k]]
    if boxes is None:
        boxes = [_mask_box(m) for m in masks] if masks is not None else []
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not (len(boxes) == len(labels) == len(scores)):
        raise ValueError(f'{len(boxes)} regions, {len(labels)} labels, {len(scores)} scores')
    size = _out_size(image, scale)
    h, w = image.shape[:2]
    fig = new_figure(size, dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(np.clip(shown, 0, 255).astype(np.uint8), extent=(0, w, h, 0),
              interpolation='bilinear')
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    font = float(np.clip(min(size) / 30, 4, 11))
    for (x0, y0, x1, y1), lab, s in zip(boxes, labels, scores):
        colour = palette[lab] / 255
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5,
                               edgecolor=colour))
        ax.text(x0, y0, f'{names[lab]} {s:.2f}', ha='left', va='top', fontsize=font,
                color='white', clip_on=True,
                bbox=dict(boxstyle='square,pad=0.15', fc=colour, alpha=0.8, lw=0))
    return finish(fig, size, out_file)


def _mask_box(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


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
