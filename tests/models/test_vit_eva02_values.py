"""ViT / EVA02 dense adapters on tower variants the bundled tiny configs do not cover (spec §1.1,
§1.2, §9.2): open_clip's custom ViT block (head scale, inner / attention norms, layer scale), a
sequence-first open_clip transformer, timm EVA trunks with fused qkv, layer scale and a gated
attention, the three open_clip projection heads; the unsupported towers they reject; the dtype seen
inside the tower under autocast; activation checkpointing (blocks recomputed in backward).

The references recompute the towers from their weights with ``torch.nn.functional`` (no module
``forward``); the global embeddings are compared with the stock open_clip forward.
"""
import copy
import math
import types
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from open_clip.timm_model import TimmModel
from open_clip.transformer import Transformer, VisionTransformer
from timm.layers import LayerNorm as TimmLayerNorm
from timm.layers.pos_embed_sincos import RotaryEmbeddingCat
from timm.models.eva import Eva, EvaBlock
from torch import nn

from densevlm_mm.models.backbones import DenseVLMBackbone, eva_rope_embed
from densevlm_mm.models.backbones.eva02 import EVA02Adapter
from densevlm_mm.models.backbones.factory import register_timm_variant
from densevlm_mm.models.backbones.vit import ViTAdapter

EVA_BASE = 'eva02_base_patch16_clip_224'
#: tiny EVA02-CLIP-like trunk (separate q/k/v, SwiGLU, inner attention norm, RoPE); 64 px = 4x4
EVA_TINY = dict(img_size=64, embed_dim=32, depth=3, num_heads=2, ref_feat_shape=(4, 4))


def _images(h, w, b=2, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial values for the one/zero-initialised parts (norms, biases, layer / head scales,
    the tiny timm head)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() <= 1 or 'head_scale' in name or name.endswith(('gamma', 'gamma_1',
                                                                          'gamma_2')):
                p.add_(0.3 * torch.randn(p.shape, generator=g))
            elif 'head' in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


# ------------------------------------------------------------------------------- references
def _norm(x, mod):
    """A LayerNorm (or Identity) from its parameters."""
    if isinstance(mod, nn.Identity):
        return x
    return F.layer_norm(x.float(), mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def _bicubic_pos(pos, old, new):
    """``[1 + Gh*Gw, C]`` -> ``[1 + h*w, C]``: CLS row kept, grid plain bicubic (spec §1.1)."""
    grid = pos[1:].reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode='bicubic', align_corners=False)
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)])


def _softmax_attention(q, k, v, heads, rope=None):
    """``[B, N, C]`` q/k/v -> per-head softmax attention ``[B, heads, N, C/heads]``; RoPE (sin |
    cos table) on the patch tokens (all but the first) of q and k."""
    b, n, c = q.shape
    q, k, v = (t.reshape(b, n, heads, -1).transpose(1, 2) for t in (q, k, v))
    if rope is not None:
        q = torch.cat([q[:, :, :1], _rotate(q[:, :, 1:], rope)], 2)
        k = torch.cat([k[:, :, :1], _rotate(k[:, :, 1:], rope)], 2)
    a = (q @ k.transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
    return a @ v


def _merge(x):
    """``[B, heads, N, d]`` -> ``[B, N, heads*d]``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _rotate(x, table):
    sin, cos = table.chunk(2, dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return x * cos + torch.stack([-x2, x1], dim=-1).reshape(x.shape) * sin


def _rope_table(rope, h, w):
    """Spec §9.2: positions ``arange(S)/S*ref``, bands ``10000^(-j/nb)``, pairs, ``[h | w]``."""
    nb = rope.bands.numel()
    bands = 10000.0 ** (-torch.arange(nb, dtype=torch.float64) / nb)
    rh, rw = rope.ref_feat_shape
    th = torch.arange(h, dtype=torch.float64) / h * rh
    tw = torch.arange(w, dtype=torch.float64) / w * rw
    fh = (th[:, None] * bands)[:, None, :].expand(h, w, nb)
    fw = (tw[:, None] * bands)[None, :, :].expand(h, w, nb)
    ang = torch.cat([fh, fw], -1).reshape(h * w, 2 * nb).repeat_interleave(2, dim=-1)
    return torch.cat([ang.sin(), ang.cos()], -1).float()


def _layer_scale(x, ls):
    return x if isinstance(ls, nn.Identity) else x * ls.gamma


def ref_vit_dense(v, images):
    """Spec §1.1 v2 for open_clip ViTs with default or custom blocks: all blocks but the last
    with attention, the last value-only, ``ln_post`` and ``proj`` per patch token."""
    p = v.conv1.weight.shape[-1]
    x = F.conv2d(images, v.conv1.weight, stride=p)
    b, c, h, w = x.shape
    x = torch.cat([v.class_embedding.expand(b, 1, c), x.flatten(2).transpose(1, 2)], 1)
    x = _norm(x + _bicubic_pos(v.positional_embedding, v.grid_size, (h, w)), v.ln_pre)
    blocks = v.transformer.resblocks
    for i, blk in enumerate(blocks):
        at = blk.attn
        heads = at.num_heads
        wq, wk, wv = at.in_proj_weight.chunk(3)
        bq, bk, bv = at.in_proj_bias.chunk(3)
        y = _norm(x, blk.ln_1)
        val = y @ wv.T + bv
        if i < len(blocks) - 1:
            a = _softmax_attention(y @ wq.T + bq, y @ wk.T + bk, val, heads)
        else:  # value-only: every token sees only itself
            a = val.reshape(b, -1, heads, c // heads).transpose(1, 2)
        if getattr(at, 'head_scale', None) is not None:
            a = a * at.head_scale
        a = _norm(_merge(a), getattr(at, 'ln_inner', nn.Identity()))
        a = a @ at.out_proj.weight.T + at.out_proj.bias
        a = _norm(a, getattr(blk, 'ln_attn', nn.Identity()))
        x = x + _layer_scale(a, blk.ls_1)
        m = blk.mlp
        y = F.gelu(_norm(x, blk.ln_2) @ m.c_fc.weight.T + m.c_fc.bias)
        y = _norm(y, getattr(m, 'ln', nn.Identity()))
        x = x + _layer_scale(y @ m.c_proj.weight.T + m.c_proj.bias, blk.ls_2)
    x = _norm(x[:, 1:], v.ln_post) @ v.proj
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _linear(x, lin):
    return x @ lin.weight.T + (lin.bias if lin.bias is not None else 0)


def _eva_mlp(x, m):
    if hasattr(m, 'fc1_g'):  # SwiGLU
        y = F.silu(_linear(x, m.fc1_g)) * _linear(x, m.fc1_x)
    else:
        y = F.gelu(_linear(x, m.fc1))
    return _linear(_norm(y, m.norm), m.fc2)


def _head(x, head):
    """open_clip ``TimmModel.head``: empty, ``drop + proj`` (Linear) or ``mlp`` (timm Mlp)."""
    for mod in head:
        if isinstance(mod, nn.Linear):
            x = _linear(x, mod)
        elif hasattr(mod, 'fc1'):
            x = _linear(F.gelu(_linear(x, mod.fc1)), mod.fc2)
    return x


def ref_eva_dense(visual, images):
    """Spec §1.2 / §9.2 for timm EVA trunks (fused or separate q/k/v, optional layer scale and
    attention gate): blocks with RoPE attention, the last value-only, final norm, head per token."""
    t = visual.trunk
    p = t.patch_embed.proj.weight.shape[-1]
    x = F.conv2d(images, t.patch_embed.proj.weight, t.patch_embed.proj.bias, stride=p)
    b, c, h, w = x.shape
    x = torch.cat([t.cls_token.expand(b, 1, c), x.flatten(2).transpose(1, 2)], 1)
    x = x + _bicubic_pos(t.pos_embed[0], t.patch_embed.grid_size, (h, w))
    rope = _rope_table(t.rope, h, w)
    for i, blk in enumerate(t.blocks):
        at = blk.attn
        y = _norm(x, blk.norm1)
        if at.qkv is not None:
            wq, wk, wv = at.qkv.weight.chunk(3)
            zero = torch.zeros_like(at.q_bias) if at.q_bias is not None else 0
            q, k = y @ wq.T + (at.q_bias if at.q_bias is not None else 0), y @ wk.T + zero
            val = y @ wv.T + (at.v_bias if at.v_bias is not None else 0)
        else:
            q, k, val = _linear(y, at.q_proj), _linear(y, at.k_proj), _linear(y, at.v_proj)
        if i < len(t.blocks) - 1:
            val = _merge(_softmax_attention(q, k, val, at.num_heads, rope))
        a = _norm(val, at.norm)
        if getattr(at, 'gate', None) is not None:
            a = a * torch.sigmoid(_linear(y, at.gate))
        a = _linear(a, at.proj)
        x = x + (a * blk.gamma_1 if blk.gamma_1 is not None else a)
        y = _eva_mlp(_norm(x, blk.norm2), blk.mlp)
        x = x + (y * blk.gamma_2 if blk.gamma_2 is not None else y)
    x = _norm(_norm(x[:, 1:], t.norm), t.fc_norm)
    if isinstance(t.head, nn.Linear):
        x = _linear(x, t.head)
    x = _head(x, visual.head)
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------ the towers
def _vit(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(image_size=64, patch_size=16, width=32, layers=3, heads=2, mlp_ratio=2.0,
                output_dim=24)
    args.update(kw)
    v = VisionTransformer(**args)
    _randomize(v, seed)
    return v.eval()


def _seq_first(v):
    """The same tower with a sequence-first (``batch_first=False``) open_clip transformer."""
    v = copy.deepcopy(v)
    t = Transformer(32, 3, 2, mlp_ratio=2.0, batch_first=False)
    t.load_state_dict(v.transformer.state_dict())
    v.transformer = t
    return v.eval()


def _eva(variant, seed=0, proj=None, swap_blocks=None, **overrides):
    name = register_timm_variant(f'densevlm_test_eva_{variant}', EVA_BASE,
                                 **{**EVA_TINY, **overrides})
    torch.manual_seed(seed)
    v = TimmModel(name, 24, image_size=64, pool='token', proj=proj, proj_bias=True)
    if swap_blocks is not None:
        v.trunk.blocks = nn.ModuleList([swap_blocks() for _ in v.trunk.blocks])
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # timm leaves the parameters of a bare block uninitialised
            for n, p in v.trunk.blocks.named_parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
                else:
                    p.fill_(1.0 if n.endswith(('norm1.weight', 'norm2.weight', 'norm.weight'))
                            else 0.5 if 'gamma' in n else 0.0)
    _randomize(v, seed)
    return v.eval()


def _gated_block():
    """EVA02-CLIP block whose attention output is gated (timm ``gated_attn``)."""
    return EvaBlock(32, 2, qkv_fused=False, mlp_ratio=4 * 2 / 3, swiglu_mlp=True, scale_mlp=True,
                    scale_attn_inner=True, gated_attn=True, init_values=0.5,
                    attn_only_layer_scale=True, norm_layer=partial(TimmLayerNorm, eps=1e-6))


@pytest.fixture(scope='module')
def towers():
    custom = _vit(scale_heads=True, scale_attn_inner=True, scale_attn=True, scale_fc=True,
                  ls_init_value=0.5)
    plain = _vit(seed=1)
    return {
        'vit_custom': custom,
        'vit_seq_first': _seq_first(plain),
        'vit_plain': plain,
        # fused qkv with q/v biases, layer scale on both branches, no inner norm, GELU MLP
        'eva_fused': _eva('fused', seed=2, proj='linear', qkv_fused=True, init_values=0.5,
                          scale_attn_inner=False, swiglu_mlp=False, scale_mlp=False,
                          mlp_ratio=2.0),
        # gated attention, layer scale on the attention branch only, MLP projection head
        'eva_gated': _eva('clip', seed=3, proj='mlp', swap_blocks=_gated_block),
        'eva_clip': _eva('clip', seed=4),
    }


def _backbone(visual, **kw):
    return DenseVLMBackbone('test-tower', visual=visual, **kw).eval()


# ------------------------------------------------------------------------------------- ViT
@pytest.mark.parametrize('name', ['vit_custom', 'vit_seq_first', 'vit_plain'])
@pytest.mark.parametrize('hw', [(80, 112), (64, 64)])
def test_vit_dense_and_global_embedding_equal_references(towers, name, hw):
    """Custom blocks (head scale, ``ln_inner``, ``ln_attn``, MLP norm, layer scale) and a
    sequence-first transformer: the value-only last block and the dense map follow spec §1.1; the
    global embedding equals open_clip's own forward."""
    v = towers[name]
    bb = _backbone(v)
    images = _images(*hw)
    with torch.no_grad():
        got = bb.dense_features(images)
        ref = ref_vit_dense(v, images)
        glob = bb.encode_image(images[..., :64, :64])
        stock = v(images[..., :64, :64])
    assert got.shape == (2, 24, hw[0] // 16, hw[1] // 16)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(glob, stock, rtol=1e-4, atol=1e-5)
    assert (ref[0] - ref[1]).abs().max() > 1e-2  # the reference depends on the image


def test_vit_custom_block_parts_reach_the_dense_map(towers):
    """Sanity of the custom-tower test: each custom part of the value-only last block changes the
    dense map (so the reference comparison above checks it)."""
    v = copy.deepcopy(towers['vit_custom'])
    bb = _backbone(v)
    images = _images(64, 80)
    last = v.transformer.resblocks[-1]
    with torch.no_grad():
        base = bb.dense_features(images)
        for p in (last.attn.head_scale, last.attn.ln_inner.weight, last.ls_1.gamma,
                  last.attn.in_proj_bias):
            saved = p.detach().clone()
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
            assert (bb.dense_features(images) - base).abs().max() > 1e-3, p.shape
            p.copy_(saved)


def test_vit_head_scale_is_per_head(towers):
    """Scaling head 0 of the value-only block changes what head 0 contributes only: with zero
    output-projection columns for head 1 the map is unchanged by head 1's scale."""
    v = copy.deepcopy(towers['vit_custom'])
    last = v.transformer.resblocks[-1]
    images = _images(64, 64)
    with torch.no_grad():
        last.attn.ln_inner = nn.Identity()  # keep the heads separate up to out_proj
        last.attn.out_proj.weight[:, 16:] = 0
        bb = _backbone(v)
        base = bb.dense_features(images)
        last.attn.head_scale[1].mul_(3.0)
        torch.testing.assert_close(bb.dense_features(images), base)
        last.attn.head_scale[0].mul_(3.0)
        assert (bb.dense_features(images) - base).abs().max() > 1e-3
        torch.testing.assert_close(bb.dense_features(images), ref_vit_dense(v, images),
                                   rtol=1e-4, atol=1e-5)


def test_vit_value_only_block_without_in_proj_bias(towers):
    """A last block whose attention has no input bias (``in_proj_bias is None``): the value path
    is ``out_proj(W_v ln_1(x))``, for open_clip's custom and default attention."""
    for name in ('vit_custom', 'vit_plain'):
        v = copy.deepcopy(towers[name])
        at = v.transformer.resblocks[-1].attn
        images = _images(64, 96)
        with torch.no_grad():
            bias = at.in_proj_bias.detach().clone()
            bias[:2 * 32] = 0  # q/k biases do not act on the value path
            at.in_proj_bias.zero_()
            zero_b = _backbone(v).dense_features(images)
            at.in_proj_bias.copy_(bias)
            with_b = _backbone(v).dense_features(images)
            assert (zero_b - with_b).abs().max() > 1e-3
            at.in_proj_bias = None
            torch.testing.assert_close(_backbone(v).dense_features(images), zero_b)


def test_vit_custom_block_without_ln_attn(towers):
    """A custom block without ``ln_attn`` (open_clip versions before it): no attention norm."""
    v = copy.deepcopy(towers['vit_custom'])
    del v.transformer.resblocks[-1].ln_attn  # the value-only block
    images = _images(64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ViTAdapter(v).run(v, images, (), True, False)[1],
                                   ref_vit_dense(v, images), rtol=1e-4, atol=1e-5)


def test_vit_transformer_without_batch_first_runs_sequence_first(towers):
    """open_clip < 2.24 transformers have no ``batch_first`` and sequence-first blocks
    (``nn.MultiheadAttention(batch_first=False)``): the blocks get ``[L, B, C]`` tokens."""
    v = copy.deepcopy(towers['vit_seq_first'])
    del v.transformer.batch_first
    images = _images(80, 64)
    with torch.no_grad():
        got = ViTAdapter(v).run(v, images, (1, ), True, False)
        ref = ref_vit_dense(v, images)
    torch.testing.assert_close(got[1], ref, rtol=1e-4, atol=1e-5)
    assert got[0][0].shape == (2, 32, 5, 4)


def test_vit_adapter_attributes_and_groups(towers):
    v = towers['vit_custom']
    ad = ViTAdapter(v)
    assert (ad.family, ad.stride, ad.embed_dim, ad.grid) == ('vit', 16, 24, (4, 4))
    assert ad.num_features(v) == 32 and ad.num_levels(v) == 3
    assert ad.first_block(v) is v.transformer.resblocks[0]
    assert all(a is b for a, b in zip(ad.groups(v), v.transformer.resblocks))
    assert len(ad.groups(v)) == 3


def test_vit_rejects_unsupported_towers():
    with pytest.raises(NotImplementedError, match='attentional pooler'):
        ViTAdapter(_vit(attentional_pool=True, attn_pooler_heads=2, attn_pooler_queries=4))
    pruned = _vit()
    pruned.proj = None
    with pytest.raises(NotImplementedError, match='without projection'):
        ViTAdapter(pruned)
    with pytest.raises(NotImplementedError, match='non-square patches'):
        ViTAdapter(_vit(patch_size=(16, 8)))
    ViTAdapter(_vit(image_size=(64, 48)))  # non-square image with square patches is fine


# ------------------------------------------------------------------------------------ EVA02
@pytest.mark.parametrize('name', ['eva_fused', 'eva_gated', 'eva_clip'])
def test_eva_dense_and_global_embedding_equal_references(towers, name):
    """Fused qkv (q/v biases), layer scale on one or both branches, gated attention, GELU or
    SwiGLU MLP, linear / MLP / no extra projection head, on a non-square 6 x 4 grid."""
    v = towers[name]
    bb = _backbone(v)
    images = _images(96, 64)
    with torch.no_grad():
        got = bb.dense_features(images)
        ref = ref_eva_dense(v, images)
        glob = bb.encode_image(images[..., :64, :64])
        stock = v(images[..., :64, :64])
    assert got.shape == (2, 24, 6, 4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(glob, stock, rtol=1e-4, atol=1e-5)
    assert (ref[0] - ref[1]).abs().max() > 1e-2


def test_eva_value_only_parts_reach_the_dense_map(towers):
    """Sanity of the EVA variants: the fused v bias, the gate and the layer scales of the value-only
    last block change the dense map."""
    images = _images(64, 64)
    for name, params in (('eva_fused', ('attn.v_bias', 'gamma_1', 'gamma_2')),
                         ('eva_gated', ('attn.gate.weight', 'gamma_1'))):
        v = copy.deepcopy(towers[name])
        bb = _backbone(v)
        last = dict(v.trunk.blocks[-1].named_parameters())
        with torch.no_grad():
            base = bb.dense_features(images)
            for n in params:
                saved = last[n].detach().clone()
                last[n].add_(0.5 * torch.randn(saved.shape,
                                               generator=torch.Generator().manual_seed(1)))
                assert (bb.dense_features(images) - base).abs().max() > 1e-3, (name, n)
                last[n].copy_(saved)


def test_eva_fused_qkv_without_biases():
    """``qkv_fused`` with ``qkv_bias=False`` (no q/v biases)."""
    v = _eva('fused_nobias', seed=5, proj='linear', qkv_fused=True, qkv_bias=False)
    assert v.trunk.blocks[-1].attn.v_bias is None
    images = _images(64, 80)
    with torch.no_grad():
        torch.testing.assert_close(_backbone(v).dense_features(images), ref_eva_dense(v, images),
                                   rtol=1e-4, atol=1e-5)


def test_eva_without_gate_attribute(towers):
    """An ``EvaAttention`` without a ``gate`` attribute (timm versions before gated attention)."""
    v = copy.deepcopy(towers['eva_clip'])
    del v.trunk.blocks[-1].attn.gate  # the value-only block (the others run timm's forward)
    images = _images(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_backbone(v).dense_features(images), ref_eva_dense(v, images),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('proj,dim', [(None, 24), ('linear', 24), ('mlp', 24), ('none', 32)])
def test_eva_embed_dim_of_each_projection_head(proj, dim):
    """The joint-space width: the trunk head (``proj=None``), the extra Linear / Mlp head, or the
    trunk width when there is no projection at all."""
    v = _eva('clip', seed=6, proj=proj)
    bb = _backbone(v)
    assert bb.embed_dim == dim
    with torch.no_grad():
        dense = bb.dense_features(_images(64, 48))
        glob = bb.encode_image(_images(64, 64))
    assert dense.shape == (2, dim, 4, 3) and glob.shape == (2, dim)
    if proj == 'mlp':  # two Linears: the output width is the last one's
        assert v.head.mlp.fc1.out_features == 48 and v.head.mlp.fc2.out_features == 24


def test_eva_adapter_attributes_and_groups(towers):
    v = towers['eva_clip']
    ad = EVA02Adapter(v)
    assert (ad.family, ad.stride, ad.embed_dim, ad.grid) == ('eva02', 16, 24, (4, 4))
    assert ad.num_features(v) == 32 and ad.num_levels(v) == 3
    assert ad.first_block(v) is v.trunk.blocks[0]
    assert all(a is b for a, b in zip(ad.groups(v), v.trunk.blocks)) and len(ad.groups(v)) == 3
    v = copy.deepcopy(v)
    ad.set_grad_checkpointing(v, True)
    assert v.trunk.grad_checkpointing is True
    ad.set_grad_checkpointing(v, False)
    assert v.trunk.grad_checkpointing is False


def _trunk(**kw):
    args = dict(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=1, num_classes=8,
                global_pool='token')
    args.update(kw)
    return types.SimpleNamespace(trunk=Eva(**args), head=nn.Sequential())


@pytest.mark.parametrize('kw,problem', [
    (dict(class_token=False, global_pool='avg'), 'needs exactly one class token with a position '
                                                 'entry'),
    (dict(num_reg_tokens=1), 'needs exactly one class token with a position entry'),
    (dict(no_embed_class=True), 'needs exactly one class token with a position entry'),
    (dict(use_abs_pos_emb=False), 'needs an absolute position table'),
    (dict(global_pool='map'), 'attention pooling / mixed RoPE are not supported'),
    (dict(use_rot_pos_emb=True, rope_type='mixed'),
     'attention pooling / mixed RoPE are not supported'),
    (dict(use_post_norm=True), 'needs pre-norm EvaBlock / EvaAttention blocks'),
    (dict(attn_type='rope', use_rot_pos_emb=True), 'needs pre-norm EvaBlock / EvaAttention '
                                                   'blocks'),
])
def test_eva_rejects_unsupported_trunks(kw, problem):
    """Each unsupported trunk is refused with the problem named (alone: nothing else listed)."""
    with pytest.raises(NotImplementedError, match=rf'^EVA trunk Eva: {problem}$'):
        EVA02Adapter(_trunk(**kw))


def test_eva_lists_every_problem_and_accepts_the_rest():
    with pytest.raises(NotImplementedError, match=r'^EVA trunk Eva: needs exactly one class '
                       r'token with a position entry; needs an absolute position table$'):
        EVA02Adapter(_trunk(no_embed_class=True, use_abs_pos_emb=False))
    with pytest.raises(NotImplementedError, match='non-square patches'):
        EVA02Adapter(_trunk(patch_size=(16, 8)))
    ad = EVA02Adapter(_trunk(img_size=(32, 48)))  # non-square image, square patches: fine
    assert (ad.stride, ad.grid, ad.embed_dim) == (16, (2, 3), 8)
    assert EVA02Adapter(_trunk(num_classes=0)).embed_dim == 16  # no head: the trunk width
    older = _trunk()  # a timm Eva from before mixed RoPE has no ``rope_mixed``: accepted
    del older.trunk.rope_mixed
    assert EVA02Adapter(older).embed_dim == 8


def test_eva_rope_embed_none_and_unsupported(towers):
    assert eva_rope_embed(None, 3, 5) is None
    with pytest.raises(NotImplementedError, match='RoPE module'):
        eva_rope_embed(nn.Identity(), 3, 5)
    rope = towers['eva_clip'].trunk.rope
    table = eva_rope_embed(rope, 3, 5)
    assert table.dtype == torch.float32 and table.shape == (15, 2 * 16)
    torch.testing.assert_close(table, _rope_table(rope, 3, 5))


def test_eva_rope_embed_without_newer_attributes(towers):
    """A RoPE module of a timm version without ``grid_type`` / ``normalize_coords`` (the defaults:
    plain grid, per-axis normalisation) gives the same table."""
    rope = copy.deepcopy(towers['eva_clip'].trunk.rope)
    ref = eva_rope_embed(rope, 5, 3)
    for attr in ('grid_type', 'normalize_coords'):
        if hasattr(rope, attr):
            delattr(rope, attr)
    torch.testing.assert_close(eva_rope_embed(rope, 5, 3), ref, rtol=0, atol=0)
    torch.testing.assert_close(ref, _rope_table(rope, 5, 3))


ROPE_SETTINGS = [
    dict(in_pixels=True),
    dict(in_pixels=False, ref_feat_shape=(4, 4), grid_offset=0.5, grid_indexing='xy',
         rotate_half=True),
    dict(in_pixels=False, grid_type='centered', normalize_coords='max'),
]


@pytest.mark.parametrize('settings', ROPE_SETTINGS)
def test_eva_rope_embed_honours_every_rope_setting(settings):
    """Pixel / inverse-frequency bands, reference shape, grid offset, ``xy`` indexing, the half
    layout, centered grids normalised by the longer side: the table for a non-square ``3 x 5`` grid
    is the one the RoPE module itself builds for that grid."""
    rope = RotaryEmbeddingCat(16, feat_shape=None, **settings).eval()
    got = eva_rope_embed(rope, 3, 5)
    assert got.shape == (15, 32) and got.dtype == torch.float32
    torch.testing.assert_close(got, rope.get_embed([3, 5]), rtol=0, atol=0)
    plain = RotaryEmbeddingCat(16, feat_shape=None, in_pixels=False).eval()
    assert (got - plain.get_embed([3, 5])).abs().max() > 1e-3  # the settings matter here


def test_eva_rope_embed_defaults_for_missing_settings():
    """A RoPE module without ``normalize_coords`` uses timm's default (per-axis, 'separate');
    without ``grid_type`` (older timm) its ``in_pixels`` selects the grid (pixel or index)."""
    for in_pixels in (True, False):
        rope = RotaryEmbeddingCat(16, feat_shape=None, in_pixels=in_pixels).eval()
        ref = rope.get_embed([3, 5])
        del rope.grid_type
        torch.testing.assert_close(eva_rope_embed(rope, 3, 5), ref, rtol=0, atol=0)
    rope = RotaryEmbeddingCat(16, feat_shape=None, in_pixels=False, grid_type='centered',
                              normalize_coords='max').eval()
    del rope.normalize_coords
    separate = RotaryEmbeddingCat(16, feat_shape=None, in_pixels=False, grid_type='centered',
                                  normalize_coords='separate').eval()
    torch.testing.assert_close(eva_rope_embed(rope, 3, 5), separate.get_embed([3, 5]),
                               rtol=0, atol=0)


# ------------------------------------------------------------------------ both adapters
FAMILY_TOWERS = {'vit': 'vit_plain', 'eva02': 'eva_clip'}


def _blocks(v):
    return v.transformer.resblocks if hasattr(v, 'transformer') else v.trunk.blocks


def _second_norm(blk):
    """A sub-module every block (attention or value-only) calls exactly once per forward."""
    return blk.ln_2 if hasattr(blk, 'ln_2') else blk.norm2


class _Count:
    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_nothing_requested_runs_nothing(towers, family):
    """No level and no dense map: ``([], None)`` without running the patch embedding."""
    v = towers[FAMILY_TOWERS[family]]
    bb = _backbone(v, out_indices=())
    stem = v.conv1 if family == 'vit' else v.trunk.patch_embed.proj
    counter = _Count(stem)
    with torch.no_grad():
        assert bb._adapter.run(v, _images(64, 64), (), False, False) == ([], None)
        assert bb(_images(64, 64)) == ()
    counter.handle.remove()
    assert counter.n == 0


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_levels_without_dense_map(towers, family):
    """``out_indices`` without the dense map: block ``i``'s output tokens as ``[B, C, h, w]``;
    the last index is the value-only last block (whose tokens give the dense map)."""
    v = towers[FAMILY_TOWERS[family]]
    bb = _backbone(v, out_indices=(1, 2))
    images = _images(48, 80)
    with torch.no_grad():
        one, two = bb(images)
        dense = bb.dense_features(images)
    assert one.shape == two.shape == (2, 32, 3, 5)
    with torch.no_grad():
        maps, none = bb._adapter.run(v, images, (2, 1), False, False)
    assert none is None and len(maps) == 2
    torch.testing.assert_close(maps[0], two, rtol=0, atol=0)
    torch.testing.assert_close(maps[1], one, rtol=0, atol=0)
    assert not torch.allclose(one, two)
    tokens = two.flatten(2).transpose(1, 2)
    if family == 'vit':
        proj = _norm(tokens, v.ln_post) @ v.proj
    else:
        proj = v.trunk.head(_norm(tokens, v.trunk.norm))
    torch.testing.assert_close(proj.transpose(1, 2).reshape(dense.shape), dense,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_autocast_keeps_low_precision_tokens(towers, family):
    """Under bf16 autocast the class token and the position table are cast to the patch
    embedding's dtype: the first block sees bf16 tokens (not an fp32 stream)."""
    v = towers[FAMILY_TOWERS[family]]
    bb = _backbone(v)
    seen = []
    handle = _blocks(v)[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    try:
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            dense = bb.dense_features(_images(64, 80))
            glob = bb.encode_image(_images(64, 64))
            tokens = bb._adapter.tokens(v, _images(64, 80))[0]
    finally:
        handle.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert tokens.dtype == torch.bfloat16
    assert torch.isfinite(dense.float()).all() and torch.isfinite(glob.float()).all()


@pytest.mark.parametrize('family', ['vit', 'eva02'])
@pytest.mark.parametrize('what', ['dense', 'global'])
def test_grad_checkpointing_recomputes_blocks(towers, family, what):
    """With ``grad_checkpointing`` every block (the value-only last one included) runs again in
    the backward pass (activations not kept); without it, once."""
    counts = {}
    for ckpt in (False, True):
        v = copy.deepcopy(towers[FAMILY_TOWERS[family]])
        bb = DenseVLMBackbone('test-tower', visual=v, grad_checkpointing=ckpt).train()
        counters = [_Count(_second_norm(b)) for b in _blocks(v)]
        images = _images(64, 64)
        out = bb.dense_features(images) if what == 'dense' else bb.encode_image(images)
        out.square().sum().backward()
        counts[ckpt] = [c.n for c in counters]
    assert counts[False] == [1, 1, 1]
    assert counts[True] == [2, 2, 2]
