"""Grid-patch classification view (paper Fig. 10): an image cut into an m×n grid, each cell labelled
with the class retrieved for it and the confidence; cells at or below the threshold θ are hatched and
greyed out (DenseVLM discards them from the alignment loss)."""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib import colormaps
from matplotlib.patches import Rectangle

from .figure_utils import finish, new_figure


def grid_boxes(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """The ``rows × cols`` grid over an ``height × width`` image as xyxy pixel boxes
    ``[rows·cols, 4]`` (float32, row-major; edges rounded to whole pixels)."""
    if rows < 1 or cols < 1:
        raise ValueError(f'grid must be at least 1x1, got {rows}x{cols}')
    ys = np.round(np.linspace(0, height, rows + 1))
    xs = np.round(np.linspace(0, width, cols + 1))
    return np.asarray([[xs[j], ys[i], xs[j + 1], ys[i + 1]] for i in range(rows)
                       for j in range(cols)], dtype=np.float32)


def default_size(image_hw: Tuple[int, int], longest: int = 800) -> Tuple[int, int]:
    h, w = image_hw
    scale = longest / max(h, w)
    return max(64, round(w * scale)), max(64, round(h * scale))


def draw_grid_patch_view(image: np.ndarray, boxes, labels: Sequence[Union[int, str]], confidences,
                         class_names: Optional[Sequence[str]] = None, theta: float = 0.5,
                         out_file: Optional[str] = None, size: Optional[Tuple[int, int]] = None,
                         title: Optional[str] = None, dpi: int = 100) -> np.ndarray:
    """Draw the grid view; returns the RGB figure ``[H, W, 3]``.

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        boxes: ``[K, 4]`` xyxy pixel boxes of the cells (see :func:`grid_boxes`).
        labels: ``[K]`` class indices into ``class_names``, or names.
        confidences: ``[K]`` confidence of the retrieved class (e.g. the teacher's softmax max).
        class_names: names for integer labels.
        theta: cells with confidence ``<= theta`` are drawn as low-confidence (hatched, grey);
            compared in the confidences' float precision, like the loss (fp32 for the
            retriever's ``conf``).
        out_file: PNG path to save.
        size: ``(W, H)`` of the figure in pixels; default keeps the image's aspect, longest side 800.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be [H, W, 3], got {image.shape}')
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    raw = np.asarray(confidences)
    conf = raw.astype(np.float64).reshape(-1)
    # θ in the confidences' own precision, as the loss compares them (an fp32 confidence equal
    # to fp32(θ) is not above θ there, though it is above the float64 θ)
    precision = raw.dtype.type if np.issubdtype(raw.dtype, np.floating) else np.float64
    above = conf > float(precision(theta))
    labels = list(np.asarray(labels).reshape(-1).tolist())
    if not (len(boxes) == len(labels) == len(conf)):
        raise ValueError(f'{len(boxes)} boxes, {len(labels)} labels and {len(conf)} confidences')
    names = []
    for lab in labels:
        if isinstance(lab, str):
            names.append(lab)
        elif class_names is None:
            names.append(str(lab))
        else:
            names.append(class_names[int(lab)])
    h, w = image.shape[:2]
    size = tuple(size) if size is not None else default_size((h, w))

    fig = new_figure(size, dpi)
    ax = fig.add_axes((0, 0, 1, 0.94 if title is not False else 1))
    ax.imshow(image, extent=(0, w, h, 0), interpolation='bilinear')
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_axis_off()
    palette = colormaps['tab20']
    uniq = sorted(set(names))
    colour = {n: palette(i % 20) for i, n in enumerate(uniq)}
    px_per_unit = size[0] / w
    for (x0, y0, x1, y1), name, c, keep in zip(boxes, names, conf, above):
        cell_px = min(x1 - x0, y1 - y0) * px_per_unit
        font = float(np.clip(cell_px / 7, 4, 12))
        if keep:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5,
                                   edgecolor=colour[name]))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, f'{name}\n{c:.2f}', ha='center', va='center',
                    fontsize=font, color='white', clip_on=True,
                    bbox=dict(boxstyle='round,pad=0.2', fc=colour[name], alpha=0.75, lw=0))
        else:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=(0.5, 0.5, 0.5, 0.6),
                                   edgecolor=(1, 1, 1, 0.8), hatch='///', lw=0.8))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, f'{name}\n{c:.2f}', ha='center', va='center',
                    fontsize=font, color=(0.85, 0.85, 0.85), style='italic', clip_on=True)
    if title is not False:
        kept = int(above.sum())
        fig.suptitle(title or f'grid {len(boxes)} cells, {kept} above θ = {theta:g} '
                     '(hatched: discarded)', fontsize=10, y=0.985)
    return finish(fig, size, out_file)
