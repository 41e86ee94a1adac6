"""Dense paths of open_clip's ``VisionTransformer`` (spec §1.1, v2 / MaskCLIP-style last block)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DenseAdapter, maybe_checkpoint, resample_pos_embed


def value_only_block(blk: nn.Module, x: Tensor) -> Tensor:
    """Residual block with attention replaced by its value path (every token sees only itself).

    ``x + ls_1(out_proj(V(ln_1 x)))`` then ``x + ls_2(mlp(ln_2 x))``; ``x``: ``[B, L, C]``.
    Works for ``ResidualAttentionBlock`` (``nn.MultiheadAttention``) and
    ``CustomResidualAttentionBlock`` (open_clip ``Attention``: head scale, inner norm, ``ln_attn``).
    """
    y = blk.ln_1(x)
    attn = blk.attn
    if isinstance(attn, nn.MultiheadAttention):
        c = attn.embed_dim
        weight = attn.in_proj_weight[2 * c:] if attn._qkv_same_embed_dim else attn.v_proj_weight
        bias = attn.in_proj_bias[2 * c:] if attn.in_proj_bias is not None else None
        out = attn.out_proj(F.linear(y, weight, bias))
    else:
        c = attn.in_proj_weight.shape[1]
        bias = attn.in_proj_bias[2 * c:] if attn.in_proj_bias is not None else None
        v = F.linear(y, attn.in_proj_weight[2 * c:], bias)
        if attn.head_scale is not None:
            shape = v.shape
            v = (v.reshape(*shape[:-1], attn.num_heads, -1) *
                 attn.head_scale.reshape(attn.num_heads, 1)).reshape(shape)
        out = attn.out_drop(attn.out_proj(attn.ln_inner(v)))
        out = blk.ln_attn(out) if hasattr(blk, 'ln_attn') else out
    x = x + blk.ls_1(out)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


class ViTAdapter(DenseAdapter):
    """open_clip ``VisionTransformer``: conv1, CLS, learned pos-emb, resblocks, ln_post, proj."""
    family = 'vit'

    def __init__(self, visual: nn.Module) -> None:
        if visual.attn_pool is not None:
            raise NotImplementedError('ViTs with an attentional pooler have no dense path')
        if visual.proj is None:
            raise NotImplementedError('ViT without projection (pruned head) has no joint space')
        ph, pw = visual.patch_size
        if ph != pw:
            raise NotImplementedError(f'non-square patches {visual.patch_size} are not supported')
        self.stride = ph
        self.embed_dim = visual.proj.shape[1]
        self.grid = tuple(visual.grid_size)

    def num_features(self, visual: nn.Module) -> int:
        return visual.conv1.out_channels

    def num_levels(self, visual: nn.Module) -> int:
        return len(visual.transformer.resblocks)

    def groups(self, visual: nn.Module) -> List[nn.Module]:
        return list(visual.transformer.resblocks)

    def first_block(self, visual: nn.Module) -> nn.Module:
        return visual.transformer.resblocks[0]

    # ---------------------------------------------------------------------------------------
    def tokens(self, visual: nn.Module, x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """``[B,3,H,W]`` -> tokens ``[B, 1+h*w, width]`` with (resized) pos-emb, and ``(h, w)``."""
        x = visual.conv1(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.reshape(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        pos = resample_pos_embed(visual.positional_embedding, self.grid, (h, w), num_prefix=1)
        return x + pos.to(x.dtype), (h, w)

    def _blocks(self, visual: nn.Module, x: Tensor, blocks: Sequence[nn.Module],
                ckpt: bool, value_only_last: bool = False) -> List[Tensor]:
        """Run ``blocks`` on ``[B, L, C]``, returning every block's output ``[B, L, C]``."""
        # open_clip < 2.24 has no ``batch_first``: its blocks run sequence-first ([L, B, C])
        batch_first = getattr(visual.transformer, 'batch_first', False)
        outs = []
        for k, blk in enumerate(blocks):
            if value_only_last and k == len(blocks) - 1:
                x = maybe_checkpoint(value_only_block, blk, x, enabled=ckpt)
            else:
                xt = x if batch_first else x.transpose(0, 1)
                xt = maybe_checkpoint(blk, xt, enabled=ckpt)
                x = xt if batch_first else xt.transpose(0, 1)
            outs.append(x)
        return outs

    def encode_image(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        x, _ = self.tokens(visual, x)
        x = visual.ln_pre(visual.patch_dropout(x))
        x = self._blocks(visual, x, visual.transformer.resblocks, ckpt)[-1]
        pooled, _ = visual._pool(x)  # private: open_clip's CLS/avg/tok pooling, no public twin
        return pooled @ visual.proj

    def run(self, visual: nn.Module, x: Tensor, indices: Sequence[int], with_dense: bool,
            ckpt: bool) -> Tuple[List[Tensor], Optional[Tensor]]:
        """Blocks ``0..L-2`` with attention, the last block value-only (spec §1.1, §8.1).

        Index ``L-1`` is the value-only last block's output, which the dense map reuses
        (``ln_post`` and ``proj`` per patch token). Blocks past the largest index run only when the
        dense map is requested.
        """
        blocks = visual.transformer.resblocks
        n = len(blocks)
        stop = n if with_dense else (max(indices) + 1 if indices else 0)
        if stop == 0:
            return [], None
        x, (h, w) = self.tokens(visual, x)
        x = visual.ln_pre(x)
        outs = self._blocks(visual, x, blocks[:stop], ckpt, value_only_last=stop == n)
        b = x.shape[0]
        maps = [outs[i][:, 1:].reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
                for i in indices]
        dense = None
        if with_dense:
            d = visual.ln_post(outs[-1][:, 1:]) @ visual.proj
            dense = d.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return maps, dense
