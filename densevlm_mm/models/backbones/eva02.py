"""Dense paths of open_clip's EVA02 towers: ``TimmModel`` over a timm ``Eva`` trunk.

Spec §1.2, §9.2.

The stock timm trunk is used unchanged; positions are computed per call from the actual token grid:
the absolute table by plain bicubic resampling, RoPE from ``(h, w)`` with timm's own bands and
``ref_feat_shape`` (positions ``arange(h)/h*ref_h``, ``arange(w)/w*ref_w``; no square-grid
assumption, no cache, spec §10.12).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DenseAdapter, maybe_checkpoint, resample_pos_embed


def eva_rope_embed(rope: Optional[nn.Module], h: int, w: int) -> Optional[Tensor]:
    """timm ``RotaryEmbeddingCat`` table ``[h*w, 2*dim]`` (sin | cos) for an ``h x w`` grid."""
    if rope is None:
        return None
    from timm.layers import build_rotary_pos_embed
    from timm.layers.pos_embed_sincos import RotaryEmbeddingCat
    if not isinstance(rope, RotaryEmbeddingCat):
        raise NotImplementedError(f'RoPE module {type(rope).__name__} is not supported')
    sin, cos = build_rotary_pos_embed(
        [h, w],
        bands=rope.bands,
        in_pixels=rope.in_pixels,
        ref_feat_shape=rope.ref_feat_shape,
        grid_offset=rope.grid_offset,
        grid_indexing=rope.grid_indexing,
        rotate_half=rope.rotate_half,
        grid_type=getattr(rope, 'grid_type', None),
        normalize_coords=getattr(rope, 'normalize_coords', 'separate'),
        device=rope.bands.device,
        dtype=torch.float32,
    )
    return torch.cat([sin, cos], dim=-1)


def eva_value_only_block(blk: nn.Module, x: Tensor) -> Tensor:
    """EVA block with attention replaced by its value path (no RoPE, no softmax).

    ``x + g1*proj(norm(v_proj(norm1 x)))`` then ``x + g2*mlp(norm2 x)``; timm's layer-scale
    (``gamma_1/2``), drop-path and attention gate are honoured. ``x``: ``[B, L, C]``.
    """
    attn = blk.attn
    y = blk.norm1(x)
    if attn.qkv is not None:  # fused qkv variant
        d = attn.qkv.weight.shape[0] // 3
        v = F.linear(y, attn.qkv.weight[2 * d:], attn.v_bias)
    else:
        v = attn.v_proj(y)
    v = attn.norm(v)
    if getattr(attn, 'gate', None) is not None:
        v = v * attn.gate(y).sigmoid()
    out = attn.proj_drop(attn.proj(v))
    if blk.gamma_1 is not None:
        out = blk.gamma_1 * out
    x = x + blk.drop_path1(out)
    out = blk.mlp(blk.norm2(x))
    if blk.gamma_2 is not None:
        out = blk.gamma_2 * out
    return x + blk.drop_path2(out)


class EVA02Adapter(DenseAdapter):
    """open_clip ``TimmModel`` over ``timm.models.eva.Eva`` (EVA02-CLIP: CLS, abs pos + RoPE)."""
    family = 'eva02'

    def __init__(self, visual: nn.Module) -> None:
        from timm.models.eva import EvaAttention, EvaBlock
        trunk = visual.trunk
        problems = []
        if trunk.cls_token is None or trunk.reg_token is not None or trunk.no_embed_class:
            problems.append('needs exactly one class token with a position entry')
        if trunk.pos_embed is None:
            problems.append('needs an absolute position table')
        if trunk.attn_pool is not None or getattr(trunk, 'rope_mixed', False):
            problems.append('attention pooling / mixed RoPE are not supported')
        if not all(isinstance(b, EvaBlock) and isinstance(b.attn, EvaAttention)
                   for b in trunk.blocks):
            problems.append('needs pre-norm EvaBlock / EvaAttention blocks')
        if problems:
            raise NotImplementedError(f'EVA trunk {type(trunk).__name__}: ' + '; '.join(problems))
        ph, pw = trunk.patch_embed.patch_size
        if ph != pw:
            raise NotImplementedError(f'non-square patches {(ph, pw)} are not supported')
        self.stride = ph
        self.grid = tuple(trunk.patch_embed.grid_size)
        self.embed_dim = _out_dim(visual.head, _out_dim(trunk.head, trunk.num_features))

    def num_features(self, visual: nn.Module) -> int:
        return visual.trunk.embed_dim

    def num_levels(self, visual: nn.Module) -> int:
        return len(visual.trunk.blocks)

    def groups(self, visual: nn.Module) -> List[nn.Module]:
        return list(visual.trunk.blocks)

    def first_block(self, visual: nn.Module) -> nn.Module:
        return visual.trunk.blocks[0]

    def set_grad_checkpointing(self, visual: nn.Module, enable: bool) -> None:
        visual.trunk.set_grad_checkpointing(enable)

    # ---------------------------------------------------------------------------------------
    def tokens(self, visual: nn.Module, x: Tensor) -> Tuple[Tensor, Optional[Tensor], int, int]:
        """``[B,3,H,W]`` -> tokens ``[B, 1+h*w, C]`` (pos-emb, pos_drop, norm_pre), RoPE, h, w."""
        trunk = visual.trunk
        pe = trunk.patch_embed
        x = pe.proj(x)  # conv, stride = patch: floor division of H, W
        h, w = x.shape[-2:]
        x = pe.norm(x.flatten(2).transpose(1, 2))
        cls = trunk.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        pos = resample_pos_embed(trunk.pos_embed, self.grid, (h, w), num_prefix=1)
        x = trunk.norm_pre(trunk.pos_drop(x + pos.to(x.dtype)))
        return x, eva_rope_embed(trunk.rope, h, w), h, w

    def _run(self, visual: nn.Module, x: Tensor, rope: Optional[Tensor], n_blocks: int,
             ckpt: bool, value_only_last: bool) -> List[Tensor]:
        outs = []
        blocks = visual.trunk.blocks
        for k in range(n_blocks):
            if value_only_last and k == len(blocks) - 1:
                x = maybe_checkpoint(eva_value_only_block, blocks[k], x, enabled=ckpt)
            else:
                x = maybe_checkpoint(blocks[k], x, rope=rope, enabled=ckpt)
            outs.append(x)
        return outs

    def _head(self, visual: nn.Module, x: Tensor) -> Tensor:
        """Per-token final norm, fc_norm, head (the CLIP projection) and adapter head."""
        trunk = visual.trunk
        x = trunk.head(trunk.head_drop(trunk.fc_norm(trunk.norm(x))))
        return visual.head(x)

    def encode_image(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        trunk = visual.trunk
        x, rope, _, _ = self.tokens(visual, x)
        x = self._run(visual, x, rope, len(trunk.blocks), ckpt, value_only_last=False)[-1]
        return visual.head(trunk.forward_head(trunk.norm(x)))

    def run(self, visual: nn.Module, x: Tensor, indices: Sequence[int], with_dense: bool,
            ckpt: bool) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Blocks ``0..L-2`` with attention and RoPE, the last block value-only (spec §1.2, §8.1).

        Index ``L-1`` is the value-only last block's output, which the dense map reuses (final
        ``norm``, ``head`` per patch token). Blocks past the largest index run only when the dense
        map is requested.
        """
        n = len(visual.trunk.blocks)
        stop = n if with_dense else (max(indices) + 1 if indices else 0)
        if stop == 0:
            return [], None
        x, rope, h, w = self.tokens(visual, x)
        outs = self._run(visual, x, rope, stop, ckpt, value_only_last=stop == n)
        p = visual.trunk.num_prefix_tokens
        b = x.shape[0]
        maps = [outs[i][:, p:].reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
                for i in indices]
        dense = None
        if with_dense:
            d = self._head(visual, outs[-1][:, p:])
            dense = d.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return maps, dense


def _out_dim(module: nn.Module, default: int) -> int:
    """Output width of a head module (Linear / Sequential of Linear / Mlp), else ``default``."""
    dim = default
    for m in module.modules():
        if isinstance(m, nn.Linear):
            dim = m.out_features
    return dim
