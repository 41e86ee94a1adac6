"""Off-screen matplotlib figures of an exact pixel size (Agg canvas; pyplot's global state is not
touched, so these functions are safe in training processes and headless machines)."""
import os
import os.path as osp
from typing import Optional, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def new_figure(size: Tuple[int, int], dpi: int = 100, layout: Optional[str] = None) -> Figure:
    """A figure of ``size = (width, height)`` pixels with an Agg canvas."""
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f'figure size must be positive (width, height) pixels, got {size!r}')
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Render ``fig`` to a uint8 RGB ``[H, W, 3]`` array, exactly ``size = (W, H)`` when given
    (matplotlib may round the canvas by a pixel)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        rgb = np.asarray(Image.fromarray(rgb).resize(tuple(int(v) for v in size), Image.BILINEAR))
    return rgb


def save_png(rgb: np.ndarray, path: str) -> str:
    """Save a uint8 RGB array as PNG (parent folders created); returns the path."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, format='PNG')
    return path


def finish(fig: Figure, size: Tuple[int, int], out_file: Optional[str]) -> np.ndarray:
    """Render, optionally save, and return the RGB array."""
    rgb = figure_to_array(fig, size)
    if out_file:
        save_png(rgb, out_file)
    return rgb
