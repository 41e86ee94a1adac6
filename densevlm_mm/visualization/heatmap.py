"""Text-to-dense similarity heat maps (paper Fig. 4): cosine similarity of every dense-feature
location with a class's text embedding, upsampled to the image and overlaid on it."""
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from .figure_utils import finish, new_figure


def similarity_maps(dense: torch.Tensor, text: torch.Tensor,
                    out_hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Cosine similarity ``[Q, h, w]`` of dense features ``[D, h, w]`` with text embeddings
    ``[Q, D]`` (both L2-normalised here), bilinearly upsampled to ``out_hw`` when given."""
    dense = torch.as_tensor(dense).detach().float().cpu()
    text = torch.as_tensor(text).detach().float().cpu()
    if dense.ndim != 3:
        raise ValueError(f'dense features must be [D, h, w], got shape {tuple(dense.shape)}')
    if text.ndim == 1:
        text = text[None]
    if text.ndim != 2 or text.shape[1] != dense.shape[0]:
        raise ValueError(f'text embeddings must be [Q, {dense.shape[0]}] to match the dense map '
                         f'[{dense.shape[0]}, h, w], got shape {tuple(text.shape)}')
    sim = torch.einsum('qd,dhw->qhw', F.normalize(text, dim=-1), F.normalize(dense, dim=0))
    if out_hw is not None and tuple(out_hw) != tuple(sim.shape[1:]):
        sim = F.interpolate(sim[None], size=tuple(int(v) for v in out_hw), mode='bilinear',
                            align_corners=False)[0]
    return sim


def draw_similarity_heatmaps(image: np.ndarray, dense: torch.Tensor, text: torch.Tensor,
                             names: Sequence[str], out_file: Optional[str] = None,
                             valid_hw: Optional[Tuple[int, int]] = None,
                             size: Optional[Tuple[int, int]] = None, alpha: float = 0.5,
                             cmap: str = 'jet', normalize: str = 'per_query',
                             ncols: Optional[int] = None, panel_width: int = 256,
                             dpi: int = 100) -> np.ndarray:
    """One panel with the image, then one per text query with its similarity map overlaid.

    The dense map is taken to cover the whole ``image`` (e.g. the padded network input); the
    similarity is upsampled to the image size and both are cropped to ``valid_hw`` (the unpadded
    ``(h, w)`` in image pixels, e.g. the ``valid_hw`` metainfo of ``ResizeLongestPad``).

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        dense: ``[D, h, w]`` dense features in the joint embedding space (any device / dtype).
        text: ``[Q, D]`` text embeddings; ``names``: Q panel titles.
        out_file: PNG path to save.
        size: ``(W, H)`` of the figure in pixels; default ``panel_width`` per column.
        alpha: heat-map opacity.
        normalize: ``'per_query'`` (each map min–max scaled) or ``'shared'`` (one scale for all).
        ncols: panels per row (default ``min(Q + 1, 4)``).

    Returns:
        The RGB figure ``[H, W, 3]`` uint8.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be [H, W, 3], got shape {image.shape}')
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    names = list(names)
    h, w = image.shape[:2]
    sim = similarity_maps(dense, text, (h, w)).numpy()
    if len(names) != sim.shape[0]:
        raise ValueError(f'{len(names)} names for {sim.shape[0]} text embeddings')
    if valid_hw is not None:
        vh, vw = (int(v) for v in valid_hw)
        vh, vw = max(1, min(vh, h)), max(1, min(vw, w))
        image, sim = image[:vh, :vw], sim[:, :vh, :vw]
        h, w = vh, vw
    if normalize not in ('per_query', 'shared'):
        raise ValueError(f"normalize must be 'per_query' or 'shared', got {normalize!r}")

    panels = len(names) + 1
    ncols = int(ncols or min(panels, 4))
    nrows = math.ceil(panels / ncols)
    if size is None:
        panel_h = panel_width * h / w
        size = (ncols * panel_width, int(round(nrows * (panel_h + 22))))
    size = tuple(int(v) for v in size)
    fig = new_figure(size, dpi)
    colour = colormaps[cmap]
    lo_all, hi_all = (float(sim.min()), float(sim.max())) if sim.size else (0.0, 1.0)
    title_frac = min(0.3, 20 / (size[1] / nrows))
    for i in range(panels):
        r, c = divmod(i, ncols)
        ax = fig.add_axes((c / ncols, 1 - (r + 1) / nrows, 1 / ncols,
                           (1 - title_frac) / nrows))
        ax.set_axis_off()
        if i == 0:
            ax.imshow(image, interpolation='bilinear')
            ax.set_title('image', fontsize=9)
            continue
        s = sim[i - 1]
        lo, hi = (float(s.min()), float(s.max())) if normalize == 'per_query' else (lo_all, hi_all)
        heat = colour((s - lo) / max(hi - lo, 1e-8))[..., :3]
        blend = (1 - alpha) * image.astype(np.float32) / 255 + alpha * heat
        ax.imshow(np.clip(blend, 0, 1), interpolation='bilinear')
        ax.set_title(f'{names[i - 1]} ({float(s.max()):.2f})', fontsize=9)
    return finish(fig, size, out_file)
