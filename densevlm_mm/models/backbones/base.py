"""Shared pieces of the dense adapters: the adapter interface, position-table resizing, index
resolution and optional activation checkpointing.

The per-family adapters (``vit``, ``eva02``, ``modified_resnet``, ``convnext``) import this module
only; the :class:`DenseVLMBackbone` facade imports the adapters (no cycle).
"""
from typing import Callable, List, Optional, Sequence, Tuple

from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def resample_pos_embed(pos: Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                       num_prefix: int = 1) -> Tensor:
    """Resize a learned position table on the fly (spec §1.1, §9.2).

    timm's ``resample_abs_pos_embed`` with ``antialias=False``: plain
    ``F.interpolate(mode='bicubic', align_corners=False)`` in fp32 on the ``Gh x Gw`` grid (any
    aspect), prefix (CLS) rows kept, which is the reference's resizing (timm's default
    ``antialias=True`` differs from it, spec §9.2).

    Args:
        pos: ``[num_prefix + Gh*Gw, C]`` (or with a leading 1).
        old_grid: ``(Gh, Gw)`` of the table.
        new_grid: target ``(h, w)``.
        num_prefix: leading rows kept as they are.

    Returns:
        ``[num_prefix + h*w, C]`` (leading 1 kept if given); ``pos`` itself when the grid matches.
    """
    squeeze = pos.dim() == 2
    table = pos[None] if squeeze else pos
    gh, gw = int(old_grid[0]), int(old_grid[1])
    h, w = int(new_grid[0]), int(new_grid[1])
    if table.shape[1] != num_prefix + gh * gw:
        raise ValueError(f'position table of {table.shape[1]} rows does not match grid '
                         f'{gh}x{gw} + {num_prefix} prefix tokens')
    if (gh, gw) == (h, w):
        return pos
    out = resample_abs_pos_embed(table, new_size=[h, w], old_size=[gh, gw],
                                 num_prefix_tokens=num_prefix, interpolation='bicubic',
                                 antialias=False)
    return out[0] if squeeze else out


def maybe_checkpoint(fn: Callable, *args, enabled: bool = False, **kwargs):
    """``fn(*args, **kwargs)``, through ``torch.utils.checkpoint`` when ``enabled``."""
    if enabled:
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def resolve_indices(indices: Sequence[int], n: int, what: str) -> List[int]:
    """Map (possibly negative) ``out_indices`` to ``0..n-1``; out of range raises ValueError."""
    out = []
    for i in indices:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f'out_indices entry {i} is out of range for {n} {what} '
                             f'(valid: {-n}..{n - 1})')
        out.append(j)
    return out


class DenseAdapter:
    """Family-specific dense paths. Stateless w.r.t. modules: every method takes ``visual``.

    Subclasses set ``family``, ``stride``, ``embed_dim`` and implement :meth:`run` (one pass of
    the trunk giving the requested maps and, optionally, the dense map), :meth:`encode_image`,
    :meth:`num_features` and :meth:`groups`.
    """
    family: str = ''
    stride: int = 0
    embed_dim: int = 0
    #: name of the trainable-group unit in messages ('blocks' / 'stages')
    group_unit: str = 'blocks'
    #: what ``out_indices`` index (messages)
    index_unit: str = 'blocks'

    def num_levels(self, visual: nn.Module) -> int:
        """Number of indexable levels (blocks / stages)."""
        raise NotImplementedError

    def run(self, visual: nn.Module, x: Tensor, indices: Sequence[int], with_dense: bool,
            ckpt: bool) -> Tuple[List[Tensor], Optional[Tensor]]:
        """One pass of the trunk.

        Args:
            visual: the open_clip image tower.
            x: ``[B,3,H,W]``.
            indices: resolved (non-negative) level indices, any order.
            with_dense: also compute the joint-space dense map.
            ckpt: checkpoint blocks / stages.

        Returns:
            ``(maps, dense)``: ``maps[i]`` ``[B, C_i, h_i, w_i]`` for ``indices[i]``; ``dense``
            ``[B, D, h, w]`` (not normalised) or ``None``. Each block / stage runs at most once.
        """
        raise NotImplementedError

    def dense(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        """``[B,3,H,W]`` -> ``[B,D,h,w]`` joint-space map (not normalised)."""
        return self.run(visual, x, (), True, ckpt)[1]

    def features(self, visual: nn.Module, x: Tensor, indices: Sequence[int],
                 ckpt: bool) -> List[Tensor]:
        """Maps ``[B,C_i,h_i,w_i]`` for the resolved ``indices``."""
        return self.run(visual, x, indices, False, ckpt)[0]

    def encode_image(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        """``[B,3,H,W]`` -> ``[B,D]`` stock global embedding."""
        raise NotImplementedError

    def num_features(self, visual: nn.Module) -> int:
        raise NotImplementedError

    def groups(self, visual: nn.Module) -> List[nn.Module]:
        """Unlockable groups, first to last (blocks for ViTs, stem + stages for CNNs)."""
        raise NotImplementedError

    def first_block(self, visual: nn.Module) -> nn.Module:
        """The first block / stage of the trunk (runs once per pass)."""
        raise NotImplementedError

    def set_grad_checkpointing(self, visual: nn.Module, enable: bool) -> None:
        pass
