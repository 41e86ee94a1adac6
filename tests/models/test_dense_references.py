"""Independent step-by-step references (spec §1.3, §1.4) for the ModifiedResNet and ConvNeXt dense
maps, on non-square inputs.

Each reference recomputes the whole tower from its weights with plain ``torch.nn.functional``
calls (no module ``forward`` is called), so a bug in the adapters (a position table shifted by one
row, a missing head LayerNorm2d, the mean token kept, a transposed grid...) changes the result.
"""
import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.models.backbones import DenseVLMBackbone
from densevlm_mm.models.clip_factory import create_clip


def _randomize(visual: torch.nn.Module, seed: int, rescale_convs: bool) -> None:
    """Non-trivial values for zero/one-initialised parts (biases, norms, BN statistics, the
    zero-initialised last BN of each bottleneck); with ``rescale_convs`` (ModifiedResNet, whose
    default conv init shrinks the signal by ~10x per layer) He-normal conv weights and a unit
    position table, so that image content and position entries both shape the dense map."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in visual.named_parameters():
            if rescale_convs and p.dim() == 4:
                torch.nn.init.kaiming_normal_(p, generator=g)
            elif rescale_convs and name.endswith('positional_embedding'):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() == 1 and ('bn' in name or 'downsample.2' in name) and \
                    name.endswith('weight'):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1 or name.endswith('gamma'):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in visual.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith('running_var'):
                b.copy_(1 + 0.3 * torch.rand(b.shape, generator=g))


@pytest.fixture(scope='module')
def towers():
    out = {}
    for seed, (family, name) in enumerate((('resnet', 'densevlm-tiny-rn'),
                                           ('convnext', 'densevlm-tiny-convnext'))):
        torch.manual_seed(10 + seed)
        clip, _ = create_clip(name)
        _randomize(clip.visual, seed, rescale_convs=family == 'resnet')
        out[family] = DenseVLMBackbone.from_open_clip(clip, model_name=name).eval()
    return out


def _images(h, w, b=2, seed=7):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- ModifiedResNet
def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _conv_bn_relu(x, conv, bn, relu=True):
    x = _bn(F.conv2d(x, conv.weight, None, conv.stride, conv.padding), bn)
    return F.relu(x) if relu else x


def _bottleneck(x, blk):
    out = _conv_bn_relu(x, blk.conv1, blk.bn1)
    out = _conv_bn_relu(out, blk.conv2, blk.bn2)
    if blk.stride > 1:
        out = F.avg_pool2d(out, blk.stride)
    out = _bn(F.conv2d(out, blk.conv3.weight), blk.bn3)
    identity = x
    if blk.downsample is not None:
        identity = F.avg_pool2d(x, blk.stride) if blk.stride > 1 else x
        identity = _bn(F.conv2d(identity, blk.downsample[1].weight), blk.downsample[2])
    return F.relu(out + identity)


def _bicubic_grid(table, old, new):
    """``[old_h*old_w, C]`` position rows -> ``[new_h*new_w, C]`` (plain bicubic, spec §1.1)."""
    grid = table.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode='bicubic', align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)


def manual_resnet_dense(v, images):
    """Spec §1.3 v2: stem, layer1..4, then per location ``c_proj(v_proj(x + pos))``."""
    x = images
    for conv, bn in ((v.conv1, v.bn1), (v.conv2, v.bn2), (v.conv3, v.bn3)):
        x = _conv_bn_relu(x, conv, bn)
    x = F.avg_pool2d(x, 2)
    for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
        for blk in layer:
            x = _bottleneck(x, blk)
    b, c, h, w = x.shape
    ap = v.attnpool
    pos = ap.positional_embedding  # row 0 = the mean token's entry, rows 1.. = the grid
    side = int(round((pos.shape[0] - 1) ** 0.5))
    grid_pos = _bicubic_grid(pos[1:], (side, side), (h, w))
    t = x.flatten(2).transpose(1, 2) + grid_pos  # [B, h*w, C]
    t = t @ ap.v_proj.weight.T + ap.v_proj.bias
    t = t @ ap.c_proj.weight.T + ap.c_proj.bias
    return t.reshape(b, h, w, -1).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------- ConvNeXt
def _ln2d(x, ln):
    """LayerNorm over channels of an NCHW map."""
    mu = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    x = (x - mu) / torch.sqrt(var + ln.eps)
    return x * ln.weight[:, None, None] + ln.bias[:, None, None]


def _convnext_block(x, blk):
    y = F.conv2d(x, blk.conv_dw.weight, blk.conv_dw.bias, padding=3, groups=x.shape[1])
    y = y.permute(0, 2, 3, 1)
    y = F.layer_norm(y, y.shape[-1:], blk.norm.weight, blk.norm.bias, blk.norm.eps)
    y = F.gelu(y @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias)
    y = y @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias
    y = y.permute(0, 3, 1, 2)
    if getattr(blk, 'gamma', None) is not None:
        y = y * blk.gamma[:, None, None]
    return x + y


def manual_convnext_dense(v, images):
    """Spec §1.4 dense: trunk features, head LayerNorm2d per location, projection per location."""
    t = v.trunk
    x = F.conv2d(images, t.stem[0].weight, t.stem[0].bias, stride=4)
    x = _ln2d(x, t.stem[1])
    for i, stage in enumerate(t.stages):
        if i > 0:
            ln, conv = stage.downsample[0], stage.downsample[1]
            x = F.conv2d(_ln2d(x, ln), conv.weight, conv.bias, stride=2)
        for blk in stage.blocks:
            x = _convnext_block(x, blk)
    x = _ln2d(x, t.head.norm)  # the head's LayerNorm2d, applied per location (no pooling)
    proj = v.head.proj
    y = x.permute(0, 2, 3, 1) @ proj.weight.T
    if proj.bias is not None:
        y = y + proj.bias
    return y.permute(0, 3, 1, 2)


MANUAL = {'resnet': manual_resnet_dense, 'convnext': manual_convnext_dense}


@pytest.mark.parametrize('family', ['resnet', 'convnext'])
@pytest.mark.parametrize('hw,grid', [((96, 160), (3, 5)), ((170, 100), (5, 3)),
                                     ((64, 64), (2, 2))])
def test_dense_map_equals_step_by_step_reference(towers, family, hw, grid):
    """Non-square grids (position table resized to 3x5 / 5x3, 170 px not a multiple of 32) and the
    native 2x2 grid (no resize)."""
    bb = towers[family]
    images = _images(*hw)
    with torch.no_grad():
        got = bb.dense_features(images)
        ref = MANUAL[family](bb.visual, images)
    assert got.shape == (2, bb.embed_dim, *grid)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # sanity of the reference itself: images differ -> maps differ; a spatial layout exists
    assert (ref[0] - ref[1]).abs().max() > 1e-3
    assert (ref[..., 0, 0] - ref[..., -1, -1]).abs().max() > 1e-3
    normed = bb.dense_features(images, normalize=True)
    torch.testing.assert_close(normed, F.normalize(ref, dim=1), rtol=1e-4, atol=1e-5)


def test_resnet_position_rows_matter(towers):
    """The grid entries (rows 1..) of the attention-pool table reach the dense map, each at its
    own location; the mean-token row 0 does not."""
    bb = towers['resnet']
    ap = bb.visual.attnpool
    images = _images(96, 160)
    saved = ap.positional_embedding.detach().clone()
    try:
        with torch.no_grad():
            base = bb.dense_features(images)
            ap.positional_embedding[0].add_(5.0)  # the mean token's entry: unused per location
            torch.testing.assert_close(bb.dense_features(images), base)
            ap.positional_embedding.copy_(saved)
            ap.positional_embedding[1].add_(5.0)  # grid cell (0, 0) of the 2x2 table
            moved = bb.dense_features(images)
    finally:
        with torch.no_grad():
            ap.positional_embedding.copy_(saved)
    diff = (moved - base).abs().amax(dim=(0, 1))  # [3, 5]
    assert diff[0, 0] > 1e-2 and diff[-1, -1] < diff[0, 0] * 1e-2


def test_resnet_dense_ignores_query_key_and_uses_value_output(towers):
    """Per location only v_proj and c_proj act (no attention): q/k weights do not change the map."""
    bb = towers['resnet']
    ap = bb.visual.attnpool
    images = _images(64, 96)
    saved = {n: p.detach().clone() for n, p in ap.named_parameters()}
    try:
        with torch.no_grad():
            base = bb.dense_features(images)
            ap.q_proj.weight.mul_(3.0)
            ap.k_proj.bias.add_(1.0)
            torch.testing.assert_close(bb.dense_features(images), base)
            ap.c_proj.bias.add_(1.0)
            torch.testing.assert_close(bb.dense_features(images), base + 1.0)
    finally:
        with torch.no_grad():
            for n, p in ap.named_parameters():
                p.copy_(saved[n])


def test_convnext_head_norm_is_applied_per_location(towers):
    """Scaling the head LayerNorm2d's weight scales the (bias-free) projection input: the map is
    affine in it, which it is not without the norm."""
    bb = towers['convnext']
    norm = bb.visual.trunk.head.norm
    images = _images(96, 64)
    saved_w, saved_b = norm.weight.detach().clone(), norm.bias.detach().clone()
    try:
        with torch.no_grad():
            norm.bias.zero_()
            one = bb.dense_features(images)
            norm.weight.mul_(2.0)
            two = bb.dense_features(images)
    finally:
        with torch.no_grad():
            norm.weight.copy_(saved_w)
            norm.bias.copy_(saved_b)
    torch.testing.assert_close(two, 2 * one, rtol=1e-5, atol=1e-6)
