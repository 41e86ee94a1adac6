"""CAT-Seg head values against independent computations (spec §11.2).

The references below are written from the method, not from the code: window attention as full
attention restricted to the pairs a (shifted) Swin window lets meet (computed from the original
grid positions), class aggregation with explicit 2x2 pooling and a hand-made align-corners
bilinear upsampling, the decoder with functional convolutions / GroupNorm, and the whole head
composed from those pieces. Tiny widths (4-8 channels) on a non-square 4x6 grid.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.models.segmentors.catseg_head import (CATSegHead, ClassAggregation,
                                                      GuidedSwinBlock, GuidedWindowAttention,
                                                      SpatialAggregation, UpsampleBlock,
                                                      linear_attention, shifted_window_mask)

ATOL = dict(atol=1e-9, rtol=1e-9)  # float64 throughout: small effects stay visible
# torch's align-corners bilinear weights are float32-accurate (~1e-7) even in float64
ATOL_UP = dict(atol=1e-6, rtol=1e-6)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Random weights, biases, norm affines and pad tokens (all non-trivial)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)


# --------------------------------------------------------------------- reference pieces
def _region(r: int, n: int, win: int, shift: int) -> int:
    """Swin's 3 regions along one axis of the shifted (rolled) grid."""
    return 0 if r < n - win else (1 if r < n - shift else 2)


def _allowed(h: int, w: int, win: int, shift: int) -> torch.Tensor:
    """``[hw, hw]`` bool: token p may attend token q (original row-major positions) when both
    fall in the same window of the grid rolled by ``-shift`` and, when shifted, came from the
    same side of the wrap-around."""
    pos = [(i, j) for i in range(h) for j in range(w)]
    out = torch.zeros(h * w, h * w, dtype=torch.bool)
    for a, (i, j) in enumerate(pos):
        ri, rj = (i - shift) % h, (j - shift) % w
        for b, (k, m) in enumerate(pos):
            rk, rm = (k - shift) % h, (m - shift) % w
            same_window = ri // win == rk // win and rj // win == rm // win
            same_region = (not shift) or (
                _region(ri, h, win, shift) == _region(rk, h, win, shift)
                and _region(rj, w, win, shift) == _region(rm, w, win, shift))
            out[a, b] = same_window and same_region
    return out


def _attend(attn: GuidedWindowAttention, x, g, allowed):
    """``x [L, C]``, ``g [L, Cg]`` or None, ``allowed [L, L]``: softmax attention per head over
    the allowed keys; queries/keys see ``[x, g]``, values ``x``; output projection."""
    xg = x if g is None else torch.cat([x, g], 1)
    q = F.linear(xg, attn.q.weight, attn.q.bias)
    k = F.linear(xg, attn.k.weight, attn.k.bias)
    v = F.linear(x, attn.v.weight, attn.v.bias)
    c = x.shape[1]
    d = c // attn.num_heads
    out = torch.zeros_like(x)
    for hd in range(attn.num_heads):
        sl = slice(hd * d, (hd + 1) * d)
        s = q[:, sl] @ k[:, sl].T / math.sqrt(d)
        s = s.masked_fill(~allowed, float('-inf'))
        out[:, sl] = torch.softmax(s, dim=1) @ v[:, sl]
    return F.linear(out, attn.proj.weight, attn.proj.bias)


def _mlp(mlp, x, act):
    return F.linear(act(F.linear(x, mlp.fc1.weight, mlp.fc1.bias)), mlp.fc2.weight, mlp.fc2.bias)


def _block(blk: GuidedSwinBlock, x, g, h, w):
    """Pre-norm Swin block on one class slice ``x [hw, C]`` (window clipped to the grid, shifted
    by half a window unless the window covers the grid)."""
    c = x.shape[1]
    win = min(blk.window_size, h, w)
    shift = win // 2 if blk.shift and win < min(h, w) else 0
    n1 = F.layer_norm(x, (c, ), blk.norm1.weight, blk.norm1.bias)
    x = x + _attend(blk.attn, n1, g, _allowed(h, w, win, shift))
    n2 = F.layer_norm(x, (c, ), blk.norm2.weight, blk.norm2.bias)
    return x + _mlp(blk.mlp, n2, F.gelu)


def _spatial(layer: SpatialAggregation, x, guidance):
    """``x [B, C, T, h, w]``, guidance ``[B, Cg, h, w]``: both blocks on every class slice."""
    b, c, t, h, w = x.shape
    out = torch.empty_like(x)
    for bi in range(b):
        g = None
        if guidance is not None and layer.guidance_norm is not None:
            g = guidance[bi].reshape(guidance.shape[1], h * w).T
            g = F.layer_norm(g, (g.shape[1], ), layer.guidance_norm.weight,
                             layer.guidance_norm.bias)
        for ti in range(t):
            tokens = x[bi, :, ti].reshape(c, h * w).T
            for blk in layer.blocks:
                tokens = _block(blk, tokens, g, h, w)
            out[bi, :, ti] = tokens.T.reshape(c, h, w)
    return out


def _bilinear_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """``[n_out, n_in]`` align-corners linear interpolation weights."""
    m = torch.zeros(n_out, n_in)
    for o in range(n_out):
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[o, i0] += 1 - frac
        m[o, i1] += frac
    return m


def _class_agg(layer: ClassAggregation, x, guidance, pool: int, pad_len=None):
    """Mean over ``pool x pool`` blocks, linear attention across the (padded) classes at each
    pooled location, the updated tokens upsampled (align corners) and added to ``x``."""
    b, c, t, h, w = x.shape
    hp, wp = h // pool, w // pool
    pooled = x.reshape(b, c, t, hp, pool, wp, pool).mean((4, 6))
    new = torch.empty(b, c, t, hp, wp, dtype=x.dtype)
    phi = lambda z: F.elu(z) + 1  # noqa: E731
    heads = layer.num_heads
    d = c // heads
    for bi in range(b):
        for y in range(hp):
            for xi in range(wp):
                tokens, g = pooled[bi, :, :, y, xi].T, guidance
                pad_len = layer.pad_len if pad_len is None else pad_len
                n_pad = pad_len - t if pad_len > t else 0
                if n_pad:
                    tokens = torch.cat([tokens, layer.pad_tokens[0].expand(n_pad, c)])
                    if g is not None and layer.pad_guidance is not None:
                        g = torch.cat([g, layer.pad_guidance.expand(n_pad, -1)])
                n1 = F.layer_norm(tokens, (c, ), layer.norm1.weight, layer.norm1.bias)
                qk_in = n1 if g is None else torch.cat([n1, g], 1)
                q = F.linear(qk_in, layer.q.weight, layer.q.bias)
                k = F.linear(qk_in, layer.k.weight, layer.k.bias)
                v = F.linear(n1, layer.v.weight, layer.v.bias)
                att = torch.zeros_like(tokens)
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    wts = phi(q[:, sl]) @ phi(k[:, sl]).T
                    att[:, sl] = wts @ v[:, sl] / (wts.sum(1, keepdim=True) + 1e-6)
                y1 = tokens + att
                n2 = F.layer_norm(y1, (c, ), layer.norm2.weight, layer.norm2.bias)
                y2 = y1 + _mlp(layer.mlp, n2, F.relu)
                new[bi, :, :, y, xi] = y2[:t].T
    my, mx = _bilinear_matrix(h, hp).to(x.dtype), _bilinear_matrix(w, wp).to(x.dtype)
    up = torch.einsum('yi,bctij,xj->bctyx', my, new, mx)
    return x + up


def _upsample(block: UpsampleBlock, x, guidance, groups):
    """x2 transposed conv, the image's guidance appended to each of its class rows, then twice
    3x3 conv (no bias) -> GroupNorm -> ReLU."""
    y = F.conv_transpose2d(x, block.up.weight, block.up.bias, stride=2)
    if guidance is not None:
        per = x.shape[0] // guidance.shape[0]
        g = torch.stack([guidance[r // per] for r in range(x.shape[0])])
        y = torch.cat([y, g], 1)
    for cm in block.convs:
        y = F.conv2d(y, cm.conv.weight, None, padding=1)
        y = F.relu(F.group_norm(y, groups, cm.norm.weight, cm.norm.bias, eps=1e-5))
    return y


# --------------------------------------------------------------------------- the pieces
@pytest.mark.parametrize('h,w,win,shift', [(4, 6, 2, 1), (6, 6, 3, 1), (4, 4, 4, 2), (6, 4, 2, 1)])
def test_shifted_window_mask_from_grid_positions(h, w, win, shift):
    mask = shifted_window_mask(h, w, win, shift)
    allowed = _allowed(h, w, win, shift)
    # windows of the rolled grid in row-major order, tokens row-major inside each window
    windows = []
    for wy in range(h // win):
        for wx in range(w // win):
            rolled = [(wy * win + a, wx * win + b) for a in range(win) for b in range(win)]
            windows.append([((r + shift) % h) * w + (c + shift) % w for r, c in rolled])
    assert mask.shape == (len(windows), win * win, win * win)
    for n, idx in enumerate(windows):
        expect = torch.where(allowed[idx][:, idx], 0.0, -100.0)
        assert torch.equal(mask[n], expect), n
    assert mask.dtype == torch.float32


def test_shifted_window_mask_on_the_input_device():
    """The mask is made on the features' device (the meta device stands in for a GPU here)."""
    assert shifted_window_mask(4, 6, 2, 1, device='meta').device.type == 'meta'
    blk = GuidedSwinBlock(8, 3, num_heads=2, window_size=2, shift=True).to('meta')
    out = blk(torch.empty(2, 24, 8, device='meta'), torch.empty(2, 24, 3, device='meta'), (4, 6))
    assert out.device.type == 'meta' and out.shape == (2, 24, 8)


@pytest.mark.parametrize('with_guidance', [True, False])
def test_window_attention_equals_per_head_softmax(with_guidance):
    torch.manual_seed(0)
    attn = GuidedWindowAttention(8, 3 if with_guidance else 0, num_heads=2).double()
    _randomize(attn)
    x = torch.randn(3, 4, 8).double()  # 3 windows of 4 tokens
    g = torch.randn(3, 4, 3).double() if with_guidance else None
    allowed = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 1]]).bool()
    mask = torch.where(allowed, 0.0, -100.0).double()[None].expand(3, -1, -1)
    out = attn(x, g, mask[:1])  # one window mask for every window
    for n in range(3):
        expect = _attend(attn, x[n], None if g is None else g[n], allowed)
        torch.testing.assert_close(out[n], expect, **ATOL)
    # a mask per window, repeated over the images of a batch
    masks = torch.stack([torch.zeros(4, 4), torch.where(allowed, 0.0, -100.0)]).double()
    x2 = torch.randn(4, 4, 8).double()  # 2 images x 2 windows
    g2 = torch.randn(4, 4, 3).double() if with_guidance else None
    out = attn(x2, g2, masks)
    for n in range(4):
        keep = torch.ones(4, 4, dtype=torch.bool) if n % 2 == 0 else allowed
        expect = _attend(attn, x2[n], None if g2 is None else g2[n], keep)
        torch.testing.assert_close(out[n], expect, **ATOL)
    # no mask: every token of the window
    out = attn(x, g, None)
    expect = _attend(attn, x[1], None if g is None else g[1], torch.ones(4, 4, dtype=torch.bool))
    torch.testing.assert_close(out[1], expect, **ATOL)


@pytest.mark.parametrize('h,w,window,shift', [
    (4, 6, 2, False), (4, 6, 2, True), (6, 4, 2, True), (4, 4, 4, True), (4, 4, 8, True),
    (6, 6, 3, True), (2, 4, 4, True), (4, 2, 4, True)])
def test_swin_block_equals_position_reference(h, w, window, shift):
    torch.manual_seed(1)
    blk = GuidedSwinBlock(8, 3, num_heads=2, window_size=window, shift=shift).double()
    _randomize(blk, seed=2)
    x, g = torch.randn(2, h * w, 8).double(), torch.randn(2, h * w, 3).double()
    out = blk(x, g, (h, w))
    for n in range(2):
        torch.testing.assert_close(out[n], _block(blk, x[n], g[n], h, w), **ATOL)
    assert blk.mlp.fc1.out_features == 32  # mlp_ratio 4


def test_swin_block_without_guidance_and_bad_grid():
    torch.manual_seed(1)
    blk = GuidedSwinBlock(8, 0, num_heads=2, window_size=2, shift=True).double()
    _randomize(blk, seed=3)
    x = torch.randn(1, 24, 8).double()
    torch.testing.assert_close(blk(x, None, (4, 6))[0], _block(blk, x[0], None, 4, 6), **ATOL)
    blk3 = GuidedSwinBlock(8, 0, num_heads=2, window_size=3, shift=False)
    with pytest.raises(ValueError, match='4x6 CLIP grid is not a multiple of the window 3'):
        blk3(x, None, (4, 6))
    with pytest.raises(ValueError, match='6x4 CLIP grid is not a multiple of the window 3'):
        blk3(x, None, (6, 4))
    blk3(torch.randn(1, 18, 8), None, (3, 6))  # multiple of 3 both ways: accepted


@pytest.mark.parametrize('guidance_dim', [3, 1, 0])
def test_spatial_aggregation_equals_reference(guidance_dim):
    torch.manual_seed(0)
    layer = SpatialAggregation(8, guidance_dim, num_heads=2, window_size=2).double()
    _randomize(layer, seed=4)
    assert [b.shift for b in layer.blocks] == [False, True]
    assert (layer.guidance_norm is None) == (guidance_dim == 0)
    x = torch.randn(2, 8, 3, 4, 6).double()
    g = torch.randn(2, guidance_dim, 4, 6).double() if guidance_dim else None
    torch.testing.assert_close(layer(x, g), _spatial(layer, x, g), **ATOL)
    if not guidance_dim:  # a layer without guidance ignores a guidance map
        other = torch.randn(2, 5, 4, 6).double()
        torch.testing.assert_close(layer(x, other), _spatial(layer, x, None), **ATOL)


@pytest.mark.parametrize('t,pad_len,guidance_dim', [(3, 5, 4), (3, 0, 4), (5, 5, 4), (3, 5, 0),
                                                    (3, 5, 1), (5, 3, 4)])
def test_class_aggregation_with_pooling_equals_reference(t, pad_len, guidance_dim):
    """Default 2x2 pooling: the pooled tokens attend across the classes and come back by an
    align-corners bilinear upsampling."""
    torch.manual_seed(0)
    layer = ClassAggregation(8, guidance_dim, num_heads=2, pad_len=pad_len).double()
    _randomize(layer, seed=5)
    assert layer.mlp.fc1.out_features == 32
    x = torch.randn(2, 8, t, 4, 6).double()
    g = torch.randn(t, guidance_dim).double() if guidance_dim else None
    torch.testing.assert_close(layer(x, g), _class_agg(layer, x, g, 2), **ATOL_UP)


def test_linear_attention_default_eps():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 3, 1, 2), torch.randn(1, 4, 1, 2), torch.randn(1, 4, 1, 2)
    phi = lambda z: F.elu(z) + 1  # noqa: E731
    w = phi(q[0, :, 0]) @ phi(k[0, :, 0]).T
    expect = w @ v[0, :, 0] / (w.sum(1, keepdim=True) + 1e-6)
    torch.testing.assert_close(linear_attention(q, k, v)[0, :, 0], expect, atol=1e-6, rtol=1e-6)
    # eps is added to the normaliser: phi(q) = e^-10, phi(k) = 1 for 2 keys, v = 1
    out = linear_attention(torch.full((1, 1, 1, 1), -10.), torch.zeros(1, 2, 1, 1),
                           torch.ones(1, 2, 1, 1))
    a = math.exp(-10.0)
    assert out.item() == pytest.approx(2 * a / (2 * a + 1e-6), rel=1e-4)
    # eps keeps a zero normaliser finite
    zero = linear_attention(torch.full((1, 1, 1, 1), -50.), torch.full((1, 2, 1, 1), -50.),
                            torch.ones(1, 2, 1, 1))
    assert torch.isfinite(zero).all()


@pytest.mark.parametrize('out_channels,groups', [(32, 2), (8, 1), (48, 3)])
def test_upsample_block_equals_functional_reference(out_channels, groups):
    """GroupNorm with one group per 16 channels (at least one), as CAT-Seg's decoder."""
    torch.manual_seed(0)
    block = UpsampleBlock(12, out_channels, guidance_channels=4).double()
    _randomize(block, seed=6)
    assert block.up.out_channels == 8 and block.up.stride == (2, 2)
    # 2 images x 3 classes
    x, g = torch.randn(6, 12, 2, 3).double(), torch.randn(2, 4, 4, 6).double()
    out = block(x, g)
    assert out.shape == (6, out_channels, 4, 6)
    torch.testing.assert_close(out, _upsample(block, x, g, groups), **ATOL)
    nog = UpsampleBlock(8, out_channels, guidance_channels=0).double()
    _randomize(nog, seed=7)
    x = torch.randn(2, 8, 2, 3).double()
    torch.testing.assert_close(nog(x, None), _upsample(nog, x, None, groups), **ATOL)


# ------------------------------------------------------------------------------ the head
TINY = dict(clip_width=6, embed_dim=8, num_prompts=2, hidden_dim=8, appearance_guidance_dim=4,
            text_guidance_dim=4, num_layers=2, num_heads=2, window_size=2, pooling_size=(2, 2),
            pad_len=5, clip_upsample_dims=(8, 6), decoder_dims=(8, 4),
            decoder_guidance_dims=(4, 2))


def _tiny_head(**kw):
    cfg = dict(TINY)
    cfg.update(kw)
    torch.manual_seed(0)
    head = CATSegHead(**cfg).double()
    _randomize(head, seed=8, std=0.2)
    return head


def _inputs(b=2, t=4, h=4, w=6, seed=9):
    torch.manual_seed(seed)
    return (torch.randn(b, 8, h, w).double(),
            [torch.randn(b, 6, h, w).double(), torch.randn(b, 6, h, w).double()],
            torch.randn(t, 2, 8).double())


def _head_reference(head: CATSegHead, dense, layers, text):
    """The head from the method: cosine cost volume -> 7x7 conv per class -> (spatial, class)
    aggregation layers guided by the projected dense map and the normalised template-mean text ->
    two upsampling blocks guided by the x2 / x4 upsampled CLIP layers -> 3x3 conv to a logit."""
    b, _, h, w = dense.shape
    t = text.shape[0]
    dn = dense / dense.norm(dim=1, keepdim=True)
    tn = text / text.norm(dim=-1, keepdim=True)
    corr = torch.einsum('bdyx,tpd->btpyx', dn, tn).reshape(b * t, -1, h, w)
    x = F.conv2d(corr, head.cost_embed.weight, head.cost_embed.bias, padding=3)
    x = x.reshape(b, t, -1, h, w).transpose(1, 2)
    ap = head.appearance_proj[0]
    appearance = F.relu(F.conv2d(dense, ap.weight, ap.bias, padding=1))
    mean = text.mean(1)
    tp = head.text_proj[0]
    text_g = F.relu(F.linear(mean / mean.norm(dim=-1, keepdim=True), tp.weight, tp.bias))
    for spatial, classwise in zip(head.spatial, head.classwise):
        x = _spatial(spatial, x, appearance)
        x = _class_agg(classwise, x, text_g, 2, pad_len=head.pad_len)
    guides = []
    for i, (up, proj) in enumerate(zip(head.clip_upsample, head.decoder_guidance_proj)):
        s = 2 * (i + 1)
        g = F.conv_transpose2d(layers[i], up.weight, up.bias, stride=s)
        guides.append(F.relu(F.conv2d(g, proj[0].weight, proj[0].bias, padding=1)))
    y = x.transpose(1, 2).reshape(b * t, -1, h, w)
    for block, g in zip(head.decoder, guides):
        y = _upsample(block, y, g, 1)
    out = F.conv2d(y, head.logit.weight, head.logit.bias, padding=1)
    return out.reshape(b, t, 4 * h, 4 * w)


def test_head_equals_the_composed_reference():
    head = _tiny_head()
    dense, layers, text = _inputs()
    out = head(dense, layers, text)
    assert out.shape == (2, 4, 16, 24)
    assert [cw.pad_len for cw in head.classwise] == [5, 5]  # the head's pad_len
    torch.testing.assert_close(out, _head_reference(head, dense, layers, text), **ATOL_UP)


def test_head_keeps_the_top_classes_per_image():
    """More classes than ``pad_len``: per image, the ``pad_len`` classes with the highest cost
    (max over templates and positions) are aggregated as a class set of their own; the other
    classes get -100."""
    head = _tiny_head(num_layers=1)
    dense, layers, text = _inputs(t=7)
    dn = dense / dense.norm(dim=1, keepdim=True)
    tn = text / text.norm(dim=-1, keepdim=True)
    best = torch.einsum('bdyx,tpd->btpyx', dn, tn).flatten(2).max(-1).values  # [B, T]
    out = head(dense, layers, text)
    assert out.shape == (2, 7, 16, 24)
    for i in range(2):
        order = best[i].argsort(descending=True)
        kept, dropped = sorted(order[:5].tolist()), order[5:].tolist()
        sel = head.select_classes(torch.einsum('bdyx,tpd->bptyx', dn, tn))[i]
        assert sorted(sel.tolist()) == kept
        assert torch.all(out[i, dropped] == -100.0)
        ref = _head_reference(head, dense[i:i + 1], [g[i:i + 1] for g in layers], text[kept])
        torch.testing.assert_close(out[i, kept], ref[0], **ATOL_UP)


def test_top_classes_of_a_single_image():
    head = _tiny_head(num_layers=1, pad_len=3)
    dense, layers, text = _inputs(b=1, t=5)
    out = head(dense, layers, text)
    kept = head.select_classes(torch.einsum(
        'bdyx,tpd->bptyx', F.normalize(dense, dim=1), F.normalize(text, dim=-1)))[0]
    kept = sorted(kept.tolist())
    assert out.shape == (1, 5, 16, 24)
    ref = _head_reference(head, dense, layers, text[kept])
    torch.testing.assert_close(out[0, kept], ref[0], **ATOL_UP)
    assert int((out[0] == -100.0).flatten(1).all(1).sum()) == 2


def test_head_init_cfg_is_applied():
    head = CATSegHead(**dict(TINY, init_cfg=dict(type='Constant', val=0.5, bias=0.0,
                                                 layer='Linear')))
    head.init_weights()
    assert torch.all(head.text_proj[0].weight == 0.5) and torch.all(head.text_proj[0].bias == 0)


@pytest.mark.parametrize('t,pad_len,selects', [(5, 5, False), (6, 5, True), (6, 0, False),
                                               (4, 5, False), (3, 1, True), (1, 1, False)])
def test_class_selection_boundary(t, pad_len, selects):
    head = _tiny_head(pad_len=pad_len, num_layers=1)
    corr = torch.randn(2, 2, t, 4, 6)
    keep = head.select_classes(corr)
    assert (keep is not None) == selects
    if selects:
        assert keep.shape == (2, pad_len)


def test_head_rejects_a_template_count_mismatch():
    head = _tiny_head(num_layers=1)
    dense, layers, _ = _inputs()
    with pytest.raises(ValueError, match='3 templates per class .* num_prompts=2'):
        head(dense, layers, torch.randn(4, 3, 8))
    with pytest.raises(ValueError, match='1 templates per class'):
        head(dense, layers, torch.randn(4, 1, 8))


def test_head_defaults_are_catseg_values():
    """Spec §11.2 / CAT-Seg: 128-d aggregation and guidance, 2 layers, 7x7 cost embedding,
    Swin window 12 (plain then shifted), 2x2 pooled class aggregation padded to 256 classes,
    CLIP layers upsampled by transposed convs to 256 / 128 channels, decoder 64 / 32 channels
    guided by 32 / 16, one prompt per class, 4 heads."""
    head = CATSegHead(clip_width=16, embed_dim=8)
    assert head.num_prompts == 1 and head.pad_len == 256
    ce = head.cost_embed
    assert (ce.in_channels, ce.out_channels, ce.kernel_size, ce.padding) == (1, 128, (7, 7),
                                                                               (3, 3))
    assert len(head.spatial) == 2 and len(head.classwise) == 2
    for sp, cw in zip(head.spatial, head.classwise):
        assert [(b.window_size, b.shift) for b in sp.blocks] == [(12, False), (12, True)]
        assert sp.blocks[0].attn.num_heads == 4 and cw.num_heads == 4
        assert sp.blocks[0].attn.q.in_features == 256  # 128 cost + 128 appearance
        assert cw.q.in_features == 256 and cw.pad_len == 256  # 128 cost + 128 text
        assert cw.pool.kernel_size == (2, 2)
    up = head.clip_upsample
    assert (up[0].in_channels, up[0].out_channels, up[0].kernel_size, up[0].stride) == (
        16, 256, (2, 2), (2, 2))
    assert (up[1].in_channels, up[1].out_channels, up[1].kernel_size, up[1].stride) == (
        16, 128, (4, 4), (4, 4))
    assert [p[0].out_channels for p in head.decoder_guidance_proj] == [32, 16]
    assert head.appearance_proj[0].out_channels == 128
    assert head.text_proj[0].out_features == 128
    dec = head.decoder
    assert (dec[0].up.in_channels, dec[0].up.out_channels) == (128, 96)
    assert dec[0].convs[1].conv.out_channels == 64 and dec[0].convs[0].norm.num_groups == 4
    assert (dec[1].up.in_channels, dec[1].up.out_channels) == (64, 48)
    assert dec[1].convs[1].conv.out_channels == 32 and dec[1].convs[0].norm.num_groups == 2
    assert head.logit.in_channels == 32 and head.logit.out_channels == 1


def test_class_aggregation_default_pooling_and_padding():
    layer = ClassAggregation(8, 4, num_heads=2)
    assert layer.pool.kernel_size == (2, 2) and layer.pad_len == 256
    assert layer.pad_tokens.shape == (1, 1, 8) and layer.pad_guidance.shape == (1, 4)
    none = ClassAggregation(8, 4, num_heads=2, pad_len=0)
    assert none.pad_tokens is None and none.pad_guidance is None
    assert ClassAggregation(8, 0, num_heads=2).pad_guidance is None


# ------------------------------------------------------------------------------- the loss
def test_loss_label_range_boundary_and_all_ignored():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 3.0]], [[0.0, 1.0]]]])  # 3 classes, 1x2
    CATSegHead.loss_by_logits(logits, torch.tensor([[[2, 0]]]))  # the last class: accepted
    with pytest.raises(ValueError, match='label id 3 is outside the 3 training classes'):
        CATSegHead.loss_by_logits(logits, torch.tensor([[[3, 0]]]))
    # all pixels ignored: CAT-Seg's loss treats them as negatives; dropping them leaves 0
    gt = torch.full((1, 1, 2), 255)
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    assert CATSegHead.loss_by_logits(logits, gt).item() == pytest.approx(neg.item(), abs=1e-6)
    assert CATSegHead.loss_by_logits(logits, gt, ignore_as_negative=False).item() == 0.0
    # a single class and a single valid pixel: the mean over that one term
    one = torch.tensor([[[[1.5, -2.0]]]])
    expect = F.binary_cross_entropy_with_logits(torch.tensor(1.5), torch.tensor(1.0))
    assert CATSegHead.loss_by_logits(one, torch.tensor([[[0, 255]]]),
                                     ignore_as_negative=False).item() == pytest.approx(
                                         expect.item(), abs=1e-6)
    # another ignore index
    gt = torch.tensor([[[1, 7]]])
    z = logits[0, :, 0, 0]
    expect = F.binary_cross_entropy_with_logits(z, torch.tensor([0., 1., 0.]))
    assert CATSegHead.loss_by_logits(logits, gt, ignore_index=7,
                                     ignore_as_negative=False).item() == pytest.approx(
                                         expect.item(), abs=1e-6)
