"""DenseVLMBackbone(out_indices=..., with_dense=True): maps + dense map from one trunk pass, and
the backbone-owned freezing of parameters the used paths never reach."""
import copy

import pytest
import torch

from densevlm_mm.models.backbones import DenseVLMBackbone
from densevlm_mm.models.clip_factory import create_clip

NAMES = {
    'vit': 'densevlm-tiny-vit',
    'eva02': 'densevlm-tiny-eva02',
    'resnet': 'densevlm-tiny-rn',
    'convnext': 'densevlm-tiny-convnext',
}
FAMILIES = list(NAMES)
#: (out_indices with an intermediate level, first block / stage module path)
LEVELS = {'vit': (0, 1, 2), 'eva02': (0, 1, -1), 'resnet': (0, 2, 3), 'convnext': (1, 3)}


def _first_block(bb):
    v = bb.visual
    return {'vit': lambda: v.transformer.resblocks[0], 'eva02': lambda: v.trunk.blocks[0],
            'resnet': lambda: v.layer1, 'convnext': lambda: v.trunk.stages[0]}[bb.family]()


@pytest.fixture(scope='module')
def clips():
    out = {}
    for i, (family, name) in enumerate(NAMES.items()):
        torch.manual_seed(10 + i)
        clip, _ = create_clip(name)
        with torch.no_grad():  # non-trivial biases / BN statistics
            for n, p in clip.visual.named_parameters():
                if p.dim() == 1:
                    p.add_(0.1 * torch.randn_like(p))
        out[family] = clip.eval()
    return out  # deep-copy before wrapping: the backbone shares (and may freeze) the modules


def _images(h=64, w=96, seed=0):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


class _Counter:
    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


@pytest.mark.parametrize('family', FAMILIES)
def test_one_pass_equals_separate_calls(clips, family):
    idx = LEVELS[family]
    both = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]), out_indices=idx,
                                           with_dense=True).eval()
    maps_only = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]),
                                                out_indices=idx).eval()
    x = _images()
    counter = _Counter(_first_block(both))
    with torch.no_grad():
        out = both(x)
        assert counter.n == 1  # block 0 / stage 0 ran once for all maps and the dense map
        ref_maps = maps_only(x)
        ref_dense = both.dense_features(x)
    counter.handle.remove()
    assert len(out) == len(idx) + 1 and len(ref_maps) == len(idx)
    for got, ref in zip(out[:-1], ref_maps):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert out[-1].shape == ref_dense.shape == (2, 32, 64 // both.stride, 96 // both.stride)
    torch.testing.assert_close(out[-1], ref_dense, rtol=0, atol=0)
    if family in ('vit', 'eva02'):  # index L-1 is the value-only last block the dense map reuses
        assert out[len(idx) - 1].shape[1] == both.num_features


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_early_indices_with_dense_run_the_rest_once(clips, family):
    bb = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]), out_indices=(0, ),
                                         with_dense=True).eval()
    blocks = bb.visual.transformer.resblocks if family == 'vit' else bb.visual.trunk.blocks
    # the value-only last block calls its sub-modules, not its forward: count its second norm
    counters = [_Counter(b.ln_2 if family == 'vit' else b.norm2) for b in blocks]
    with torch.no_grad():
        first, dense = bb(_images())
    assert [c.n for c in counters] == [1] * len(blocks)
    with torch.no_grad():
        torch.testing.assert_close(dense, bb.dense_features(_images()), rtol=0, atol=0)
    # without the dense map, blocks past the largest index are not run
    bb.with_dense = False
    before = [c.n for c in counters]
    with torch.no_grad():
        (again, ) = bb(_images())
    assert [c.n - b for c, b in zip(counters, before)] == [1] + [0] * (len(blocks) - 1)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_grad_through_one_pass_matches_two_passes(clips, family):
    a = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]), out_indices=(1, -1),
                                        with_dense=True).train()
    b = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]), out_indices=(1, -1)).train()
    x = _images(64, 64, seed=3)
    m1, m2, dense = a(x)
    (m1.square().mean() + m2.mean() + dense.square().mean()).backward()
    r1, r2 = b(x)
    (r1.square().mean() + r2.mean() + b.dense_features(x).square().mean()).backward()
    gb = dict(b.named_parameters())
    for n, p in a.named_parameters():
        if p.grad is None:
            assert gb[n].grad is None, n
        else:
            torch.testing.assert_close(p.grad, gb[n].grad, rtol=1e-5, atol=1e-7)


FROZEN_LAST_QK = {  # what freeze_unused freezes in the whole-tower-trains case, per family
    'vit': set(),  # fused in_proj: the q/k rows get zero (not None) gradients, stays trainable
    'eva02': {'visual.trunk.blocks.2.attn.q_proj.weight', 'visual.trunk.blocks.2.attn.q_proj.bias',
              'visual.trunk.blocks.2.attn.k_proj.weight'},
    'resnet': {'visual.attnpool.q_proj.weight', 'visual.attnpool.q_proj.bias',
               'visual.attnpool.k_proj.weight', 'visual.attnpool.k_proj.bias'},
    'convnext': set(),
}


@pytest.mark.parametrize('family', FAMILIES)
def test_freeze_unused_probe(clips, family):
    bb = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]))
    assert set(bb.frozen_unused) == FROZEN_LAST_QK[family]
    for n, p in bb.named_parameters():
        assert p.requires_grad == (n not in FROZEN_LAST_QK[family]), n
    # every trainable parameter now gets a gradient from forward + dense map (DDP-complete)
    bb.out_indices, bb.with_dense = (0, ), True
    bb.train()
    out = bb(_images(64, 64))
    sum(o.float().mean() for o in out).backward()
    assert all(p.grad is not None for p in bb.parameters() if p.requires_grad)
    if family == 'vit':
        w = bb.visual.transformer.resblocks[-1].attn.in_proj_weight
        assert w.grad[:2 * w.shape[1]].abs().max() == 0 and w.grad[2 * w.shape[1]:].abs().max() > 0
    off = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[family]), freeze_unused=False)
    assert off.frozen_unused == [] and all(p.requires_grad for p in off.parameters())


def test_fully_frozen_stays_in_eval(clips):
    bb = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips['resnet']), unlocked_groups=0)
    bb.train()
    assert not bb.training and not any(m.training for m in bb.modules())
    assert bb.frozen_unused == [] and not any(p.requires_grad for p in bb.parameters())
    part = DenseVLMBackbone.from_open_clip(copy.deepcopy(clips['resnet']), unlocked_groups=1)
    part.train()
    assert part.training and part.visual.layer4.training


def test_out_indices_checked_at_build():
    with pytest.raises(ValueError, match='out_indices entry 7 is out of range for 3 blocks'):
        DenseVLMBackbone('densevlm-tiny-vit', out_indices=(7, ))
    with pytest.raises(ValueError, match='out_indices entry -5'):
        DenseVLMBackbone('densevlm-tiny-rn', out_indices=(-5, ))


def test_roi_features_on_patch_boundaries_of_a_patch_14_grid():
    """A box whose edges fall on patch boundaries of a stride-14 grid pools exactly its cells.

    Through ``spatial_scale=1/14`` torchvision would see 28 * (1/14) = 2.0000002 and take 3x3
    samples instead of 2x2 (an extra row and column): the boxes are mapped to feature units first.
    """
    import torch.nn.functional as F

    from densevlm_mm.models.backbones import DenseVLMBackbone
    backbone = DenseVLMBackbone('densevlm-tiny-vit', freeze_unused=False)
    backbone.stride = 14
    torch.manual_seed(0)
    dense = torch.randn(1, 8, 6, 6)
    feats = backbone.roi_features(dense, [torch.tensor([[14., 28., 42., 56.]])])
    expected = F.normalize(dense, dim=1)[0, :, 2:4, 1:3].mean(dim=(1, 2))
    torch.testing.assert_close(feats[0], expected, rtol=0, atol=1e-6)
