"""CAT-Seg cost aggregation head (CVPR'24 version, spec §11.2).

Pipeline, shapes for batch ``B``, ``T`` classes, ``P`` templates, CLIP grid ``h x w``:

1. :func:`cost_volume`: cosine similarity of the dense CLIP map ``[B, D, h, w]`` and per-template
   text ``[T, P, D]`` -> ``[B, P, T, h, w]``; a 7x7 conv embeds the ``P`` channels per class ->
   ``[B, C, T, h, w]``.
2. ``num_layers`` x (:class:`SpatialAggregation` — two Swin blocks per class, window attention whose
   queries/keys also see the projected dense map — then :class:`ClassAggregation` — linear attention
   across classes per (pooled) location, queries/keys also see the projected text).
3. :class:`UpsampleBlock` x 2: transposed conv x2, concatenated with projected intermediate CLIP
   layers (themselves upsampled x2 / x4 by transposed convs), two 3x3 conv-GN-ReLU; a 3x3 conv to one
   logit per class -> ``[B, T, 4h, 4w]``.

Stock Swin blocks (mmseg / mmpretrain / timm) run one input through a fused qkv projection; CAT-Seg's
queries and keys take ``[x, guidance]`` while values take ``x`` only, so the attention is written
here; window partitioning, the MLP and conv-norm-act units come from timm / mmcv.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from timm.layers import Mlp
from timm.models.swin_transformer import window_partition, window_reverse
from torch import Tensor, nn

from densevlm_mm.registry import MODELS


def cost_volume(dense: Tensor, text: Tensor) -> Tensor:
    """Cosine similarity volume.

    Args:
        dense: ``[B, D, h, w]`` dense CLIP map (any norm).
        text: ``[T, P, D]`` per-template class embeddings (any norm).

    Returns:
        ``[B, P, T, h, w]``.
    """
    return torch.einsum('bdhw,tpd->bpthw', F.normalize(dense, dim=1), F.normalize(text, dim=-1))


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = 1e-6) -> Tensor:
    """Multi-head linear attention with the ``elu(x) + 1`` feature map (Katharopoulos et al.).

    ``out_l = φ(q_l)ᵀ Σ_s φ(k_s) v_sᵀ / (φ(q_l)ᵀ Σ_s φ(k_s) + eps)``.

    Args:
        q: ``[N, L, H, d]``; k, v: ``[N, S, H, d]``.

    Returns:
        ``[N, L, H, d]``.
    """
    q, k = F.elu(q) + 1, F.elu(k) + 1
    length = v.shape[1]
    v = v / length  # keeps the KV sum small in half precision; undone below
    kv = torch.einsum('nshd,nshv->nhdv', k, v)
    z = 1.0 / (torch.einsum('nlhd,nhd->nlh', q, k.sum(dim=1)) + eps)
    return torch.einsum('nlhd,nhdv,nlh->nlhv', q, kv, z) * length


def shifted_window_mask(h: int, w: int, window: int, shift: int, device=None) -> Tensor:
    """Additive mask ``[num_windows, window², window²]`` (0 / -100) of a cyclically shifted grid."""
    regions = torch.zeros((1, h, w, 1), device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[:, hs, ws, :] = cnt
            cnt += 1
    ids = window_partition(regions, (window, window)).reshape(-1, window * window)
    diff = ids[:, None, :] - ids[:, :, None]
    return diff.ne(0).float() * -100.0


class GuidedWindowAttention(nn.Module):
    """Window self-attention whose queries/keys take ``[x, guidance]`` and values ``x``.

    No relative position bias (as in CAT-Seg).
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, guidance: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
        """``x [N, L, C]``, ``guidance [N, L, Cg]``, ``mask [nW, L, L]`` (N = batch·nW)."""
        n, length, c = x.shape
        xg = x if guidance is None else torch.cat([x, guidance], dim=-1)

        def heads(t: Tensor) -> Tensor:
            return t.reshape(n, length, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q(xg)), heads(self.k(xg)), heads(self.v(x))
        if mask is not None:
            nw = mask.shape[0]
            mask = mask[None, :, None].expand(n // nw, -1, -1, -1, -1).reshape(n, 1, length, length)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(n, length, c))


class GuidedSwinBlock(nn.Module):
    """Pre-norm Swin block (window or shifted-window attention + MLP) with appearance guidance."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int,
                 shift: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: Tensor, guidance: Optional[Tensor], hw: Tuple[int, int]) -> Tensor:
        """``x [N, h*w, C]``, ``guidance [N, h*w, Cg]`` (normalised) -> ``[N, h*w, C]``."""
        h, w = hw
        n, _, c = x.shape
        win = min(self.window_size, h, w)
        shift = win // 2 if self.shift and win < min(h, w) else 0
        if h % win or w % win:
            raise ValueError(f'CAT-Seg spatial aggregation: the {h}x{w} CLIP grid is not a '
                             f'multiple of the window {win}; set clip_resolution so that the grid '
                             'divides by window_size')
        y = self.norm1(x).reshape(n, h, w, c)
        if guidance is not None:
            y = torch.cat([y, guidance.reshape(n, h, w, -1)], dim=-1)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(y, (win, win)).reshape(-1, win * win, y.shape[-1])
        mask = shifted_window_mask(h, w, win, shift, x.device) if shift else None
        out = self.attn(windows[..., :c], windows[..., c:] if guidance is not None else None,
                        mask)
        out = window_reverse(out.reshape(-1, win, win, c), (win, win), h, w)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        x = x + out.reshape(n, h * w, c)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Two guided Swin blocks (plain then shifted windows) applied to each class's cost slice."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, shift=False),
            GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, shift=True)
        ])
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: Tensor, guidance: Optional[Tensor]) -> Tensor:
        """``x [B, C, T, h, w]``, ``guidance [B, Cg, h, w]`` -> ``[B, C, T, h, w]``."""
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)
        g = None
        if guidance is not None and self.guidance_norm is not None:
            g = guidance.flatten(2).transpose(1, 2)  # [B, hw, Cg]
            g = self.guidance_norm(g).repeat_interleave(t, dim=0)
        for blk in self.blocks:
            y = blk(y, g, (h, w))
        return y.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)


class ClassAggregation(nn.Module):
    """Linear attention across classes at each (average-pooled) location, with text guidance.

    Classes are padded with learned tokens to ``pad_len`` (0: no padding) so the attention always
    sees the same number of tokens. The pooled result (input + attention + MLP) is upsampled back
    bilinearly and added to the input, as in CAT-Seg.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int,
                 pooling_size: Optional[Sequence[int]] = (2, 2), pad_len: int = 256) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool = nn.AvgPool2d(tuple(pooling_size)) if pooling_size else nn.Identity()
        self.q = nn.Linear(dim + guidance_dim, dim)
        self.k = nn.Linear(dim + guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4, act_layer=nn.ReLU)
        self.pad_len = pad_len
        self.pad_tokens = nn.Parameter(torch.zeros(1, 1, dim)) if pad_len > 0 else None
        self.pad_guidance = nn.Parameter(torch.zeros(1, guidance_dim)) if (
            pad_len > 0 and guidance_dim > 0) else None

    def attention(self, x: Tensor, guidance: Optional[Tensor]) -> Tensor:
        """``x [N, T, C]``, ``guidance [N, T, Cg]`` -> linear attention output ``[N, T, C]``."""
        xg = x if guidance is None else torch.cat([x, guidance], dim=-1)
        n, t, c = x.shape
        q = self.q(xg).reshape(n, t, self.num_heads, -1)
        k = self.k(xg).reshape(n, t, self.num_heads, -1)
        v = self.v(x).reshape(n, t, self.num_heads, -1)
        return linear_attention(q, k, v).reshape(n, t, c)

    def forward(self, x: Tensor, text_guidance: Optional[Tensor]) -> Tensor:
        """``x [B, C, T, h, w]``, ``text_guidance [T, Cg]`` -> ``[B, C, T, h, w]``."""
        b, c, t, h, w = x.shape
        pooled = self.pool(x.transpose(1, 2).reshape(b * t, c, h, w))
        hp, wp = pooled.shape[-2:]
        tokens = pooled.reshape(b, t, c, hp * wp).permute(0, 3, 1, 2)  # [B, hw', T, C]
        g = text_guidance
        pad = self.pad_len - t if self.pad_tokens is not None and t < self.pad_len else 0
        if pad:
            tokens = torch.cat([tokens, self.pad_tokens.expand(b, hp * wp, pad, c)], dim=2)
            if g is not None and self.pad_guidance is not None:
                g = torch.cat([g, self.pad_guidance.expand(pad, -1)], dim=0)
        tokens = tokens.reshape(b * hp * wp, t + pad, c)
        if g is not None:
            g = g[None].expand(tokens.shape[0], -1, -1)
        tokens = tokens + self.attention(self.norm1(tokens), g)
        tokens = tokens + self.mlp(self.norm2(tokens))
        tokens = tokens.reshape(b, hp, wp, t + pad, c)[:, :, :, :t]
        tokens = tokens.permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
        up = F.interpolate(tokens, size=(h, w), mode='bilinear', align_corners=True)
        return x + up.reshape(b, t, c, h, w).transpose(1, 2)


class UpsampleBlock(nn.Module):
    """x2 transposed conv, concat guidance, two 3x3 conv-GroupNorm-ReLU (mmcv ``ConvModule``)."""

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels, 2, stride=2)
        norm = dict(type='GN', num_groups=max(1, out_channels // 16))
        self.convs = nn.Sequential(
            ConvModule(in_channels, out_channels, 3, padding=1, bias=False, norm_cfg=norm),
            ConvModule(out_channels, out_channels, 3, padding=1, bias=False, norm_cfg=norm))

    def forward(self, x: Tensor, guidance: Optional[Tensor]) -> Tensor:
        """``x [B*T, Cin, h, w]``, ``guidance [B, Cg, 2h, 2w]`` -> ``[B*T, Cout, 2h, 2w]``."""
        x = self.up(x)
        if guidance is not None:
            x = torch.cat([x, guidance.repeat_interleave(x.shape[0] // guidance.shape[0], 0)], 1)
        return self.convs(x)


def _conv_relu(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


@MODELS.register_module()
class CATSegHead(BaseModule):
    """Cost volume, spatial / class aggregation and the guided upsampling decoder.

    Args:
        clip_width: channels of the intermediate CLIP layers (transformer width).
        embed_dim: joint CLIP dimension ``D`` (dense map and text).
        num_prompts: templates per class ``P`` (cost-volume channels).
        hidden_dim: aggregation width (128 in CAT-Seg).
        appearance_guidance_dim / text_guidance_dim: projected guidance widths (128).
        num_layers: aggregation layers (2 in CAT-Seg's published ViT-B and ViT-L configs).
        num_heads: attention heads in both aggregations.
        window_size: Swin window (12 at a 24x24 grid).
        pooling_size: class-aggregation average pooling.
        pad_len: class-token padding / top-k length (256; 0 disables).
        clip_upsample_dims: channels of the x2 / x4 transposed convs on the two CLIP layers.
        decoder_dims / decoder_guidance_dims: upsampling-block outputs / their guidance widths.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 clip_width: int,
                 embed_dim: int,
                 num_prompts: int = 1,
                 hidden_dim: int = 128,
                 appearance_guidance_dim: int = 128,
                 text_guidance_dim: int = 128,
                 num_layers: int = 2,
                 num_heads: int = 4,
                 window_size: int = 12,
                 pooling_size: Optional[Sequence[int]] = (2, 2),
                 pad_len: int = 256,
                 clip_upsample_dims: Sequence[int] = (256, 128),
                 decoder_dims: Sequence[int] = (64, 32),
                 decoder_guidance_dims: Sequence[int] = (32, 16),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_prompts = num_prompts
        self.pad_len = pad_len
        self.clip_upsample = nn.ModuleList([
            nn.ConvTranspose2d(clip_width, clip_upsample_dims[0], 2, stride=2),
            nn.ConvTranspose2d(clip_width, clip_upsample_dims[1], 4, stride=4)
        ])
        self.cost_embed = nn.Conv2d(num_prompts, hidden_dim, 7, padding=3)
        self.appearance_proj = _conv_relu(embed_dim, appearance_guidance_dim)
        self.text_proj = nn.Sequential(nn.Linear(embed_dim, text_guidance_dim), nn.ReLU())
        self.decoder_guidance_proj = nn.ModuleList(
            [_conv_relu(c, g) for c, g in zip(clip_upsample_dims, decoder_guidance_dims)])
        self.spatial = nn.ModuleList([
            SpatialAggregation(hidden_dim, appearance_guidance_dim, num_heads, window_size)
            for _ in range(num_layers)
        ])
        self.classwise = nn.ModuleList([
            ClassAggregation(hidden_dim, text_guidance_dim, num_heads, pooling_size, pad_len)
            for _ in range(num_layers)
        ])
        self.decoder = nn.ModuleList([
            UpsampleBlock(hidden_dim, decoder_dims[0], decoder_guidance_dims[0]),
            UpsampleBlock(decoder_dims[0], decoder_dims[1], decoder_guidance_dims[1])
        ])
        self.logit = nn.Conv2d(decoder_dims[1], 1, 3, padding=1)

    def select_classes(self, corr: Tensor) -> Optional[Tensor]:
        """Indices ``[B, pad_len]`` of the classes with the highest cost when ``T > pad_len``."""
        t = corr.shape[2]
        if self.pad_len <= 0 or t <= self.pad_len:
            return None
        score = corr.transpose(1, 2).flatten(2).amax(dim=-1)  # [B, T]
        return score.topk(self.pad_len, dim=-1, sorted=False).indices

    def forward(self, dense: Tensor, layers: Sequence[Tensor], text: Tensor) -> Tensor:
        """Per-class logits.

        Args:
            dense: ``[B, D, h, w]`` dense CLIP map (not normalised).
            layers: two intermediate CLIP maps ``[B, width, h, w]`` (early, later layer).
            text: ``[T, P, D]`` per-template class embeddings.

        Returns:
            ``[B, T, 4h, 4w]`` logits (``-100`` for classes dropped by the top-``pad_len`` cut).
        """
        if text.shape[1] != self.num_prompts:
            raise ValueError(f'text has {text.shape[1]} templates per class but the head was '
                             f'built for num_prompts={self.num_prompts}')
        corr = cost_volume(dense, text)  # [B, P, T, h, w]
        keep = self.select_classes(corr)
        num_classes = text.shape[0]
        b = dense.shape[0]
        if keep is None:
            outs = [self._aggregate(corr, dense, layers, text)]
        else:  # per image: its own top-k classes (text guidance differs per image)
            outs = [self._aggregate(corr[i:i + 1, :, keep[i]], dense[i:i + 1],
                                    [g[i:i + 1] for g in layers], text[keep[i]])
                    for i in range(b)]
        if keep is None:
            return outs[0]
        full = outs[0].new_full((b, num_classes) + outs[0].shape[-2:], -100.0)
        for i in range(b):
            full[i, keep[i]] = outs[i][0]
        return full

    def _aggregate(self, corr: Tensor, dense: Tensor, layers: Sequence[Tensor],
                   text: Tensor) -> Tensor:
        b, p, t, h, w = corr.shape
        x = self.cost_embed(corr.transpose(1, 2).reshape(b * t, p, h, w))
        x = x.reshape(b, t, -1, h, w).transpose(1, 2)  # [B, C, T, h, w]
        appearance = self.appearance_proj(dense)
        text_guidance = self.text_proj(F.normalize(text.mean(dim=1), dim=-1))
        for spatial, classwise in zip(self.spatial, self.classwise):
            x = spatial(x, appearance)
            x = classwise(x, text_guidance)
        guides = [proj(up(g)) for proj, up, g in zip(self.decoder_guidance_proj,
                                                     self.clip_upsample, layers)]
        y = x.transpose(1, 2).reshape(b * t, -1, h, w)
        for block, g in zip(self.decoder, guides):
            y = block(y, g)
        return self.logit(y).reshape(b, t, *y.shape[-2:])

    @staticmethod
    def loss_by_logits(logits: Tensor, gt: Tensor, ignore_index: int = 255,
                       ignore_as_negative: bool = True) -> Tensor:
        """Per-class binary cross-entropy with logits.

        Args:
            logits: ``[B, T, H, W]`` at the label resolution.
            gt: ``[B, H, W]`` label ids (``ignore_index`` ignored).
            ignore_as_negative: CAT-Seg's loss keeps ignored pixels with all-zero targets; ``False``
                drops them.
        """
        num_classes = logits.shape[1]
        valid = gt != ignore_index
        if valid.any() and int(gt[valid].max()) >= num_classes:
            raise ValueError(f'label id {int(gt[valid].max())} is outside the {num_classes} '
                             'training classes; check train_classes against the dataset')
        target = F.one_hot(torch.where(valid, gt, 0).long(), num_classes).permute(0, 3, 1, 2)
        target = target.to(logits.dtype) * valid[:, None]
        if ignore_as_negative:
            return F.binary_cross_entropy_with_logits(logits, target)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction='none')
        return (loss * valid[:, None]).sum() / (valid.sum() * num_classes).clamp_min(1)
