"""DenseVLMBackbone on the bundled tiny random open_clip models (CPU, fast)."""
import math

import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.models.backbones import DenseVLMBackbone, eva_rope_embed, resample_pos_embed
from densevlm_mm.models.clip_factory import create_clip
from densevlm_mm.registry import MODELS

NAMES = {
    'vit': 'densevlm-tiny-vit',
    'eva02': 'densevlm-tiny-eva02',
    'resnet': 'densevlm-tiny-rn',
    'convnext': 'densevlm-tiny-convnext',
}
FAMILIES = list(NAMES)
NATIVE = {'vit': 64, 'eva02': 64, 'resnet': 64, 'convnext': 64}


@pytest.fixture(scope='module')
def clips():
    out = {}
    for i, (family, name) in enumerate(NAMES.items()):
        torch.manual_seed(i)
        clip, _ = create_clip(name)
        _randomize(clip)
        out[family] = clip.eval()
    return out


def _randomize(clip):
    """Give zero-initialised parts (biases, tiny heads, BN stats) non-trivial values."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in clip.visual.named_parameters():
            if p.dim() == 1 or name.endswith('head.weight') or 'bn3' in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in clip.visual.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith('running_var'):
                b.copy_(1 + 0.2 * torch.rand(b.shape, generator=g))


@pytest.fixture(scope='module')
def backbones(clips):
    return {f: DenseVLMBackbone.from_open_clip(c, model_name=NAMES[f]).eval()
            for f, c in clips.items()}


def _images(h=80, w=112, b=2, seed=1):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- manual references
def _ln(x, mod):
    return F.layer_norm(x, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


def _bicubic_pos(pos, old, new):
    cls, grid = pos[:1], pos[1:]
    grid = grid.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode='bicubic', align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)])


def _attention(q, k, v, heads):
    b, n, c = q.shape
    q, k, v = (t.reshape(b, n, heads, -1).transpose(1, 2) for t in (q, k, v))
    a = (q @ k.transpose(-1, -2) / math.sqrt(c // heads)).softmax(-1)
    return (a @ v).transpose(1, 2).reshape(b, n, c)


def _manual_vit_dense(visual, images):
    w_conv = visual.conv1.weight
    p = w_conv.shape[-1]
    x = F.conv2d(images, w_conv, stride=p)
    b, c, h, w = x.shape
    x = torch.cat([visual.class_embedding.expand(b, 1, c), x.flatten(2).transpose(1, 2)], 1)
    x = x + _bicubic_pos(visual.positional_embedding, visual.grid_size, (h, w))
    x = _ln(x, visual.ln_pre)
    blocks = visual.transformer.resblocks
    for i, blk in enumerate(blocks):
        wq, wk, wv = blk.attn.in_proj_weight.chunk(3)
        bq, bk, bv = blk.attn.in_proj_bias.chunk(3)
        y = _ln(x, blk.ln_1)
        if i < len(blocks) - 1:
            a = _attention(y @ wq.T + bq, y @ wk.T + bk, y @ wv.T + bv, blk.attn.num_heads)
        else:  # value-only last block
            a = y @ wv.T + bv
        x = x + a @ blk.attn.out_proj.weight.T + blk.attn.out_proj.bias
        y = _ln(x, blk.ln_2)
        y = F.gelu(y @ blk.mlp.c_fc.weight.T + blk.mlp.c_fc.bias)
        x = x + y @ blk.mlp.c_proj.weight.T + blk.mlp.c_proj.bias
    x = _ln(x[:, 1:], visual.ln_post) @ visual.proj
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _rope_formula(rope, h, w):
    """Spec §9.2: positions arange(S)/S*ref, bands 10000^(-j/nb), interleaved pairs, [h | w]."""
    nb = rope.dim // 4
    bands = 10000.0 ** (-torch.arange(nb, dtype=torch.float64) / nb)
    rh, rw = rope.ref_feat_shape
    th = torch.arange(h, dtype=torch.float64) / h * rh
    tw = torch.arange(w, dtype=torch.float64) / w * rw
    fh = (th[:, None] * bands)[:, None, :].expand(h, w, nb)
    fw = (tw[:, None] * bands)[None, :, :].expand(h, w, nb)
    ang = torch.cat([fh, fw], -1).reshape(h * w, 2 * nb).repeat_interleave(2, dim=-1)
    return torch.cat([ang.sin(), ang.cos()], -1).float()


def _rotate(x, table):
    sin, cos = table.chunk(2, dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rot = torch.stack([-x2, x1], dim=-1).reshape(x.shape)  # interleaved rotate_half
    return x * cos + rot * sin


def _manual_eva_dense(visual, images):
    t = visual.trunk
    p = t.patch_embed.proj.weight.shape[-1]
    x = F.conv2d(images, t.patch_embed.proj.weight, t.patch_embed.proj.bias, stride=p)
    b, c, h, w = x.shape
    x = torch.cat([t.cls_token.expand(b, 1, c), x.flatten(2).transpose(1, 2)], 1)
    x = x + _bicubic_pos(t.pos_embed[0], t.patch_embed.grid_size, (h, w))
    table = _rope_formula(t.rope, h, w)
    for i, blk in enumerate(t.blocks):
        at = blk.attn
        y = _ln(x, blk.norm1)
        v = y @ at.v_proj.weight.T + at.v_proj.bias
        if i < len(t.blocks) - 1:
            q = y @ at.q_proj.weight.T + at.q_proj.bias
            k = y @ at.k_proj.weight.T
            nh = at.num_heads
            q, k = (z.reshape(b, -1, nh, c // nh).transpose(1, 2) for z in (q, k))
            q = torch.cat([q[:, :, :1], _rotate(q[:, :, 1:], table)], 2)
            k = torch.cat([k[:, :, :1], _rotate(k[:, :, 1:], table)], 2)
            q, k = (z.transpose(1, 2).reshape(b, -1, c) for z in (q, k))
            v = _attention(q, k, v, nh)
        x = x + _ln(v, at.norm) @ at.proj.weight.T + at.proj.bias
        y = _ln(x, blk.norm2)
        m = blk.mlp
        y = F.silu(y @ m.fc1_g.weight.T + m.fc1_g.bias) * (y @ m.fc1_x.weight.T + m.fc1_x.bias)
        x = x + _ln(y, m.norm) @ m.fc2.weight.T + m.fc2.bias
    x = _ln(x[:, 1:], t.norm) @ t.head.weight.T + t.head.bias
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------ tests
def test_attributes_and_registry(backbones):
    expect = {'vit': (16, 32), 'eva02': (16, 32), 'resnet': (32, 32), 'convnext': (32, 32)}
    for family, bb in backbones.items():
        assert bb.family == family
        assert (bb.stride, bb.embed_dim) == expect[family]
        assert all(k.startswith('visual.') for k in bb.state_dict())
    built = MODELS.build(dict(type='DenseVLMBackbone', model_name='densevlm-tiny-vit'))
    assert isinstance(built, DenseVLMBackbone)
    assert not any(k.startswith(('text.', 'transformer.', 'token_embedding'))
                   for k in built.state_dict())


def test_vit_dense_equals_manual(backbones):
    bb = backbones['vit']
    images = _images(80, 120)  # 5 x 7 grid, 120 not a multiple of 16
    with torch.no_grad():
        got = bb.dense_features(images)
        ref = _manual_vit_dense(bb.visual, images)
    assert got.shape == (2, 32, 5, 7)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    normed = bb.dense_features(images, normalize=True)
    torch.testing.assert_close(normed.norm(dim=1), torch.ones(2, 5, 7))


def test_eva02_dense_equals_manual(backbones):
    bb = backbones['eva02']
    images = _images(96, 64)  # 6 x 4 grid: non-square, RoPE from (h, w)
    with torch.no_grad():
        got = bb.dense_features(images)
        ref = _manual_eva_dense(bb.visual, images)
    assert got.shape == (2, 32, 6, 4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_pos_embed_resample_plain_bicubic_not_antialiased():
    from timm.layers import resample_abs_pos_embed
    torch.manual_seed(0)
    pos = torch.randn(1 + 4 * 4, 8)
    got = resample_pos_embed(pos, (4, 4), (5, 7), num_prefix=1)
    torch.testing.assert_close(got, _bicubic_pos(pos, (4, 4), (5, 7)))
    assert torch.equal(got[0], pos[0])
    timm_aa = resample_abs_pos_embed(pos[None], new_size=(5, 7), old_size=(4, 4),
                                     num_prefix_tokens=1)[0]
    assert (timm_aa - got).abs().max() > 1e-3  # antialiased resampling is a different kernel
    assert resample_pos_embed(pos, (4, 4), (4, 4)) is pos
    # non-square source table, two prefix rows, leading batch dim (timm's layout)
    pos2 = torch.randn(1, 2 + 3 * 5, 8)
    got2 = resample_pos_embed(pos2, (3, 5), (4, 6), num_prefix=2)
    grid = pos2[0, 2:].reshape(1, 3, 5, 8).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(4, 6), mode='bicubic', align_corners=False)
    ref2 = torch.cat([pos2[0, :2], grid.permute(0, 2, 3, 1).reshape(24, 8)])[None]
    torch.testing.assert_close(got2, ref2, rtol=0, atol=0)
    with pytest.raises(ValueError, match='does not match'):
        resample_pos_embed(pos, (3, 3), (5, 5))


def test_eva02_rope_non_square_matches_formula(backbones):
    rope = backbones['eva02'].visual.trunk.rope
    for h, w in [(3, 7), (6, 4), (4, 4)]:
        torch.testing.assert_close(eva_rope_embed(rope, h, w), _rope_formula(rope, h, w))
    torch.testing.assert_close(eva_rope_embed(rope, 4, 4), rope.get_embed())  # native grid


@pytest.mark.parametrize('family', FAMILIES)
def test_global_embedding_equals_open_clip(clips, backbones, family):
    images = _images(NATIVE[family], NATIVE[family])
    with torch.no_grad():
        ref = clips[family].encode_image(images)
        got = backbones[family].encode_image(images)
        other = backbones[family].encode_image(_images(96, 80))  # any size works
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert other.shape == (2, 32)


@pytest.mark.parametrize('family', FAMILIES)
def test_roi_box_on_grid_is_area_mean(backbones, family):
    bb = backbones[family]
    s = bb.stride
    with torch.no_grad():
        dense = bb.dense_features(_images(3 * s + 5, 4 * s))  # 3 x 4 grid (+5 px dropped)
    normed = F.normalize(dense, dim=1)
    boxes = [torch.tensor([[s, 0., 3 * s, 2 * s], [0., s, s, 3 * s]]),
             torch.tensor([[0., 0., 4 * s, 3 * s]])]
    got = bb.roi_features(dense, boxes)
    ref = torch.stack([normed[0, :, 0:2, 1:3].mean((1, 2)), normed[0, :, 1:3, 0:1].mean((1, 2)),
                       normed[1].mean((1, 2))])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert bb.roi_features(dense, [torch.zeros(0, 4), torch.zeros(0, 4)]).shape == (0, 32)
    with pytest.raises(ValueError, match='boxes'):
        bb.roi_features(dense, boxes[:1])


@pytest.mark.parametrize('family', FAMILIES)
def test_mask_pooling_weighted_mean(backbones, family):
    bb = backbones[family]
    with torch.no_grad():
        dense = bb.dense_features(_images(3 * bb.stride, 4 * bb.stride))
    normed = F.normalize(dense, dim=1)
    wts = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(3))
    masks = [wts, torch.zeros(0, 3, 4)]
    got = bb.mask_features(dense, masks)
    ref = torch.stack([(normed[0] * m).sum((1, 2)) / (m.sum() + 1e-12) for m in wts])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert bb.mask_features(dense, [torch.zeros(0, 3, 4)] * 2).shape == (0, 32)
    empty = bb.mask_features(dense[:1], [torch.zeros(1, 3, 4, dtype=torch.bool)])
    assert torch.isfinite(empty).all() and empty.abs().max() == 0


def test_mask_resize_to_feature_grid(backbones):
    bb = backbones['vit']  # stride 16
    s = bb.stride
    g = torch.Generator().manual_seed(4)
    # input-pixel bool mask, size a multiple of the stride: coverage == area pooling
    pix = torch.rand(2, 3 * s, 4 * s, generator=g) > 0.6
    w = bb.mask_weights(pix, (3, 4))
    torch.testing.assert_close(w, F.adaptive_avg_pool2d(pix.float(), (3, 4)))
    # input-pixel mask, size not a multiple: pixels past h*stride are dropped (like the conv)
    pix2 = torch.zeros(1, 3 * s + 7, 4 * s + 9, dtype=torch.bool)
    pix2[0, 3 * s:, :] = True  # only outside the covered area
    pix2[0, :s // 2, :s] = True  # half of cell (0, 0)
    w2 = bb.mask_weights(pix2, (3, 4))
    ref2 = torch.zeros(1, 3, 4)
    ref2[0, 0, 0] = 0.5
    torch.testing.assert_close(w2, ref2)
    # a coarser mask spans the grid proportionally: 2x2 -> 3x4 exact area coverage
    coarse = torch.tensor([[[1., 0.], [0., 0.]]])
    w3 = bb.mask_weights(coarse, (3, 4))
    ref3 = torch.tensor([[[1., 1., 0., 0.], [.5, .5, 0., 0.], [0., 0., 0., 0.]]])
    torch.testing.assert_close(w3, ref3)
    # and the pooled feature uses those weights
    with torch.no_grad():
        dense = bb.dense_features(_images(3 * s, 4 * s))
    normed = F.normalize(dense, dim=1)
    got = bb.mask_features(dense, [pix, torch.zeros(0, 3 * s, 4 * s)])
    ref = torch.stack([(normed[0] * m).sum((1, 2)) / m.sum() for m in w])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


EXPECTED_GROUP = {  # parameter-name prefixes of the last unlocked group, per family
    'vit': ('visual.transformer.resblocks.2.', ),
    'eva02': ('visual.trunk.blocks.2.', ),
    'resnet': ('visual.layer4.', ),
    'convnext': ('visual.trunk.stages.3.', ),
}


@pytest.mark.parametrize('family', FAMILIES)
def test_unlocked_groups(clips, family):
    import copy
    clip = copy.deepcopy(clips[family])
    bb = DenseVLMBackbone.from_open_clip(clip, unlocked_groups=0)
    assert not any(p.requires_grad for p in bb.parameters())
    bb = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]), unlocked_groups=1)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    expected = {n for n, _ in bb.named_parameters() if n.startswith(EXPECTED_GROUP[family])}
    # freeze_unused: the value-only last EVA02 block never uses q/k (ViT: fused in_proj rows
    # get zero gradients and stay trainable)
    unused = {n for n in expected if family == 'eva02' and ('.q_proj.' in n or '.k_proj.' in n)}
    assert set(bb.frozen_unused) == unused
    assert trainable == expected - unused and trainable
    bb.train()
    if family == 'resnet':  # BN of frozen groups stays in eval, unlocked layer4 trains
        assert not bb.visual.layer1[0].bn1.training and bb.visual.layer4[0].bn1.training
    loss = bb.dense_features(_images(64, 96, seed=5)).square().mean()
    loss.backward()
    for n, p in bb.named_parameters():
        if n in trainable and not (family == 'eva02' and ('.q_proj.' in n or '.k_proj.' in n)):
            assert p.grad is not None, n  # (the value-only last EVA block never uses q/k)
        else:
            assert p.grad is None, n
    with pytest.raises(ValueError, match='unlocked_groups'):
        DenseVLMBackbone.from_open_clip(clips[family], unlocked_groups=6)
    full = DenseVLMBackbone('densevlm-tiny-vit')
    assert all(p.requires_grad for p in full.parameters())


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_grad_checkpointing_same_result(clips, family):
    import copy
    a = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family])).train()
    b = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]),
                                        grad_checkpointing=True).train()
    images = _images(64, 80)
    la, lb = (m.dense_features(images).square().sum() for m in (a, b))
    la.backward()
    lb.backward()
    torch.testing.assert_close(la, lb)
    ga = dict(a.named_parameters())
    for n, p in b.named_parameters():
        torch.testing.assert_close(p.grad, ga[n].grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('family', FAMILIES)
def test_forward_out_indices(backbones, family):
    bb = backbones[family]
    bb.out_indices = (0, -1)
    images = _images(64, 96)
    with torch.no_grad():
        first, last = bb(images)
        dense = bb.dense_features(images)
    assert first.dim() == last.dim() == 4 and last.shape[-2:] == dense.shape[-2:]
    assert last.shape[1] == bb.num_features
    if family == 'vit':  # the last index is the value-only block of the dense path
        v = bb.visual
        tokens = last.flatten(2).transpose(1, 2)
        proj = (v.ln_post(tokens) @ v.proj).transpose(1, 2).reshape(dense.shape)
        torch.testing.assert_close(proj, dense, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='out_indices'):
        bb.out_indices = (9, )
        bb(images)
    bb.out_indices = (-1, )


def test_bad_images_raise(backbones):
    bb = backbones['vit']
    bads = [torch.zeros(3, 64, 64), torch.zeros(1, 1, 64, 64), [[0.0]], torch.zeros(1, 3, 8, 8)]
    for bad in bads:
        with pytest.raises(ValueError, match='images'):
            bb.dense_features(bad)
    with pytest.raises(ValueError, match='images'):
        bb.encode_image(torch.zeros(2, 4, 64, 64))


def test_from_open_clip_matches_name_and_checkpoint(tmp_path, clips):
    clip = clips['eva02']
    path = tmp_path / 'tiny_eva.pt'
    torch.save(clip.state_dict(), path)
    by_name = DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(path)).eval()
    wrapped = DenseVLMBackbone.from_open_clip(clip)
    assert wrapped.visual is clip.visual
    images = _images(64, 64)
    with torch.no_grad():
        torch.testing.assert_close(by_name.dense_features(images),
                                   wrapped.dense_features(images))
    # a saved backbone (image tower only) loads back by name as well
    torch.save(by_name.state_dict(), tmp_path / 'bb.pt')
    again = DenseVLMBackbone('densevlm-tiny-eva02', pretrained=str(tmp_path / 'bb.pt')).eval()
    with torch.no_grad():
        torch.testing.assert_close(again.encode_image(images), wrapped.encode_image(images))


def test_roi_box_validation(backbones):
    bb = backbones['vit']  # stride 16
    with torch.no_grad():
        dense = bb.dense_features(_images(64, 96))  # 4 x 6 grid, input 64 x 96
    good = torch.tensor([[0., 0., 96., 64.]])  # touching the canvas edge is valid
    ref = bb.roi_features(dense, [good, good], image_size=(64, 96))
    torch.testing.assert_close(ref[0], F.normalize(dense, dim=1)[0].mean((1, 2)))
    bad = {
        'negative coordinate': [-1., 0., 10., 10.],
        'outside the image': [0., 0., 97., 10.],
        'zero area': [5., 5., 5., 20.],
        'inverted': [20., 5., 10., 20.],
        'not finite': [0., float('nan'), 10., 10.],
    }
    for what, box in bad.items():
        boxes = [good, torch.tensor([[1., 1., 8., 8.], box])]
        with pytest.raises(ValueError, match=rf'boxes\[1\]\[1\] = .*{what}'):
            bb.roi_features(dense, boxes, image_size=(64, 96))
    with pytest.raises(ValueError, match='not finite'):
        bb.roi_features(dense, [good, torch.tensor([[0., 0., float('inf'), 8.]])])
    with pytest.raises(ValueError, match=r'boxes\[0\] must be \[K, 4\].*\(1, 5\)'):
        bb.roi_features(dense, [torch.zeros(1, 5), good])
    # without image_size the bound is the largest input giving this grid: (4*16+15, 6*16+15)
    bb.roi_features(dense, [good, torch.tensor([[0., 0., 111., 79.]])])
    with pytest.raises(ValueError, match='outside the image'):
        bb.roi_features(dense, [good, torch.tensor([[0., 0., 112., 10.]])])
    # clip=True clips to the image first; an entirely outside box then has zero area
    clipped = bb.roi_features(dense, [good, torch.tensor([[-20., -5., 300., 64.]])],
                              image_size=(64, 96), clip=True)
    torch.testing.assert_close(clipped[1], ref[1])
    with pytest.raises(ValueError, match='zero area'):
        bb.roi_features(dense, [good, torch.tensor([[100., 0., 120., 10.]])],
                        image_size=(64, 96), clip=True)
