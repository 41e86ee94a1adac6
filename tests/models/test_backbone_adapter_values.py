"""DenseVLMBackbone and its ModifiedResNet / ConvNeXt adapters beyond the dense maps (those are in
test_dense_references.py): level bookkeeping, which stages run, locking and the freeze probe,
loading, dtype handling, and the pooling geometry (RoIAlign boxes, mask coverage weights) checked
against references computed here.
"""
import copy
from typing import List

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densevlm_mm.models.backbones import DenseVLMBackbone
from densevlm_mm.models.backbones import dense_vlm_backbone as dvb
from densevlm_mm.models.backbones import modified_resnet as mrn
from densevlm_mm.models.backbones.base import DenseAdapter, maybe_checkpoint, resolve_indices
from densevlm_mm.models.backbones.convnext import ConvNeXtAdapter
from densevlm_mm.models.backbones.dense_vlm_backbone import check_boxes
from densevlm_mm.models.clip_factory import create_clip

RN, CX, VIT = 'densevlm-tiny-rn', 'densevlm-tiny-convnext', 'densevlm-tiny-vit'
RN_QK = {'visual.attnpool.q_proj.weight', 'visual.attnpool.q_proj.bias',
         'visual.attnpool.k_proj.weight', 'visual.attnpool.k_proj.bias'}


def _randomize(visual: nn.Module, seed: int) -> None:
    """He-normal convs (the default ModifiedResNet init shrinks the signal ~10x per layer), a unit
    position table, non-trivial biases / norms / BN statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in visual.named_parameters():
            if p.dim() == 4:
                nn.init.kaiming_normal_(p, generator=g)
            elif name.endswith('positional_embedding'):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.dim() == 1 and name.endswith('weight'):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1 or name.endswith('gamma'):
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in visual.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith('running_var'):
                b.copy_(1 + 0.3 * torch.rand(b.shape, generator=g))


@pytest.fixture(scope='module')
def clips():
    out = {}
    for seed, name in enumerate((RN, CX)):
        torch.manual_seed(20 + seed)
        clip, _ = create_clip(name)
        _randomize(clip.visual, seed)
        out[name] = clip.eval()
    return out  # deep-copy before wrapping: the backbone shares (and may freeze) the modules


def _bb(clips, name, **kwargs) -> DenseVLMBackbone:
    kwargs.setdefault('freeze_unused', False)  # the probe is tested on its own
    return DenseVLMBackbone.from_open_clip(copy.deepcopy(clips[name]), model_name=name, **kwargs)


def _images(h=64, w=96, b=2, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


class _Count:
    """Forward calls of a module."""

    def __init__(self, module: nn.Module):
        self.n = 0
        module.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


def _trainable(bb) -> set:
    return {n for n, p in bb.named_parameters() if p.requires_grad}


def _names(bb, *prefixes) -> set:
    return {n for n, _ in bb.named_parameters() if n.startswith(prefixes)}


# ------------------------------------------------------------------------------------ base.py
def test_resolve_indices_boundaries():
    assert resolve_indices([-4, -1, 0, 3], 4, 'stages') == [0, 3, 0, 3]
    assert resolve_indices([-1, 0], 1, 'blocks') == [0, 0]
    assert resolve_indices([], 4, 'stages') == []
    for bad in (4, -5):
        with pytest.raises(ValueError, match=f'entry {bad} is out of range for 4 stages'):
            resolve_indices([0, bad], 4, 'stages')


def test_maybe_checkpoint_recomputes_only_when_enabled():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    calls = []

    def fn(x, scale=1.0):
        calls.append(1)
        return lin(x) * scale

    x = torch.randn(4, 3)  # the input needs no grad: the parameters still get one
    ref = fn(x, scale=2.0)
    ref.sum().backward()
    g_ref = lin.weight.grad.clone()
    for enabled, n_calls in ((False, 1), (True, 2)):  # checkpointing re-runs fn in backward
        lin.weight.grad, calls[:] = None, []
        out = maybe_checkpoint(fn, x, scale=2.0, enabled=enabled)
        out.sum().backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(lin.weight.grad, g_ref)
        assert len(calls) == n_calls, enabled
    calls[:] = []
    maybe_checkpoint(fn, x).sum().backward()  # default: not checkpointed
    assert len(calls) == 1


def test_adapter_defaults_and_generic_paths(clips):
    base = DenseAdapter()
    assert (base.family, base.stride, base.embed_dim) == ('', 0, 0)
    assert (base.group_unit, base.index_unit) == ('blocks', 'blocks')
    assert base.set_grad_checkpointing(nn.Linear(1, 1), True) is None
    # ViT uses the default units in its messages
    with pytest.raises(ValueError, match=r'unlocked_groups=4 must be in 0\.\.3 \(3 blocks in vit'):
        DenseVLMBackbone(VIT, unlocked_groups=4)
    # dense() / features() are run() with / without the dense map
    bb = _bb(clips, RN, out_indices=(1, 3)).eval()
    ad, x = bb._adapter, _images()
    with torch.no_grad():
        torch.testing.assert_close(ad.dense(bb.visual, x, False), bb.dense_features(x),
                                   rtol=0, atol=0)
        maps = ad.features(bb.visual, x, [1, 3], False)
        ref = bb(x)
    assert len(maps) == 2
    for got, want in zip(maps, ref):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


class _SpyAdapter(DenseAdapter):
    """Records what the generic ``dense`` / ``features`` ask of :meth:`run`."""

    def __init__(self):
        self.calls = []

    def run(self, visual, x, indices, with_dense, ckpt):
        self.calls.append((tuple(indices), with_dense, ckpt))
        return [x + i for i in indices], (x * 2 if with_dense else None)


def test_adapter_dense_and_features_forward_their_arguments():
    spy, x = _SpyAdapter(), torch.ones(1, 3, 2, 2)
    for ckpt in (True, False):
        spy.calls.clear()
        torch.testing.assert_close(spy.dense(None, x, ckpt), x * 2)
        maps = spy.features(None, x, [2, 0], ckpt)
        assert [m[0, 0, 0, 0].item() for m in maps] == [3.0, 1.0]
        assert spy.calls == [((), True, ckpt), ((2, 0), False, ckpt)]


# ------------------------------------------------------------------- construction and loading
def test_defaults_by_name():
    torch.manual_seed(0)
    bb = DenseVLMBackbone(RN)
    assert bb.model_name == RN and bb.family == 'resnet'
    assert bb.out_indices == (-1, ) and bb.with_dense is False
    assert bb.grad_checkpointing is False and bb.unlocked_groups is None
    assert bb.pretrained is None and bb.init_cfg is None
    assert set(bb.frozen_unused) == RN_QK  # freeze_unused defaults to True
    assert bb.training  # the probe restores the mode
    assert (bb.stride, bb.embed_dim, bb.num_features) == (32, 32, 512)
    out = bb(_images(64, 96))
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, 512, 2, 3)  # layer4, stride 32


def test_from_open_clip_model_or_tower(clips):
    clip = copy.deepcopy(clips[RN])
    whole = DenseVLMBackbone.from_open_clip(clip)
    assert whole.model_name == 'open_clip' and whole.visual is clip.visual
    tower = DenseVLMBackbone.from_open_clip(clip.visual, model_name='x', freeze_unused=False)
    assert tower.visual is clip.visual and tower.model_name == 'x'


def _tower_state(bb) -> dict:
    return {k: v.clone() for k, v in bb.visual.state_dict().items()}


def _assert_tower(bb, state):
    for k, v in bb.visual.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)


def test_pretrained_init_cfg_and_prefix(tmp_path, clips):
    a = _tower_state(_bb(clips, RN))
    torch.manual_seed(99)
    b = _tower_state(DenseVLMBackbone(RN, freeze_unused=False))
    # a checkpoint holding two towers: ``visual.*`` (a) and ``student.visual.*`` (b)
    path = tmp_path / 'two.pt'
    torch.save({**{'visual.' + k: v for k, v in a.items()},
                **{'student.visual.' + k: v for k, v in b.items()}}, path)
    with pytest.raises(ValueError, match='not both'):
        DenseVLMBackbone(RN, pretrained=str(path),
                         init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    loaded = DenseVLMBackbone(RN, pretrained=str(path), freeze_unused=False)
    _assert_tower(loaded, a)
    assert loaded.pretrained == str(path)
    bb = DenseVLMBackbone(RN, freeze_unused=False)
    bb.load_pretrained(str(path), prefix='student.')
    _assert_tower(bb, b)
    bb.load_pretrained(str(path))  # found automatically: '' first
    _assert_tower(bb, a)
    other = tmp_path / 'convnext.pt'  # a tower of another model: the error names this one
    torch.save({'visual.' + k: v for k, v in clips[CX].visual.state_dict().items()}, other)
    with pytest.raises(Exception, match=f"does not fit the image tower of '{RN}'"):
        bb.load_pretrained(str(other))
    # init_cfg Pretrained goes through the same strict loader (mmengine's would only warn)
    with pytest.raises(Exception, match=f"does not fit the image tower of '{RN}'"):
        DenseVLMBackbone(RN, freeze_unused=False,
                         init_cfg=dict(type='Pretrained', checkpoint=str(other))).init_weights()
    # init_cfg alone is accepted; init_weights loads it strictly, with its prefix
    cfg = dict(type='Pretrained', checkpoint=str(path), prefix='student.')
    bb = DenseVLMBackbone(RN, init_cfg=cfg, freeze_unused=False)
    assert not bb.is_init
    bb.init_weights()
    _assert_tower(bb, b)
    assert bb.is_init
    # a list: Pretrained, then an mmengine initialiser on the loaded weights
    bb = DenseVLMBackbone(RN, freeze_unused=False,
                          init_cfg=[dict(type='Pretrained', checkpoint=str(path)),
                                    dict(type='Constant', layer='Linear', val=0.25, bias=0.)])
    bb.init_weights()
    assert bb.is_init
    lin = bb.visual.attnpool.v_proj
    assert torch.all(lin.weight == 0.25) and torch.all(lin.bias == 0)
    torch.testing.assert_close(bb.visual.conv1.weight, a['conv1.weight'], rtol=0, atol=0)
    # empty entries of the list are skipped, the rest still applies
    bb = DenseVLMBackbone(RN, freeze_unused=False,
                          init_cfg=[{}, dict(type='Constant', layer='Linear', val=0.5, bias=0.)])
    bb.init_weights()
    assert torch.all(bb.visual.attnpool.v_proj.weight == 0.5)


def test_pretrained_must_be_a_local_file(tmp_path):
    """Checked before anything is built; the message tells a pretrained tag from a typo."""
    with pytest.raises(ValueError, match="'openai' for 'RN50' is a known open_clip pretrained"):
        DenseVLMBackbone('RN50', pretrained='openai')
    with pytest.raises(ValueError, match="'openai' for 'RN50' is not an existing file"):
        DenseVLMBackbone('RN50', pretrained='openai', model_cfg={'embed_dim': 32})
    missing = str(tmp_path / 'missing.pt')
    with pytest.raises(ValueError, match='not an existing file'):
        DenseVLMBackbone(RN, pretrained=missing)


# ---------------------------------------------------------------------- locking and the probe
def test_unlocked_groups_boundaries_resnet(clips):
    every = _names(clips[RN], 'visual.')
    pool = _names(clips[RN], 'visual.attnpool.')
    for bad in (-1, 6):
        with pytest.raises(ValueError, match='unlocked_groups'):
            _bb(clips, RN, unlocked_groups=bad)
    # all of [stem, layer1..4]; the attention pool frozen
    bb = _bb(clips, RN, unlocked_groups=5, freeze_unused=True)
    assert _trainable(bb) == every - pool and bb.frozen_unused == []
    bb = _bb(clips, RN, unlocked_groups=4)
    assert _trainable(bb) == _names(bb, *(f'visual.layer{i}.' for i in range(1, 5)))
    bb = _bb(clips, RN, unlocked_groups=2)
    assert _trainable(bb) == _names(bb, 'visual.layer3.', 'visual.layer4.')
    # BatchNorms of frozen groups are in eval mode from construction on, and after .train()
    for _ in range(2):
        assert bb.training and bb.visual.layer3[0].bn1.training and bb.visual.layer4.training
        assert not any(m.training for m in (bb.visual.bn1, bb.visual.layer1[0].bn1,
                                            bb.visual.layer2[0].bn3))
        assert bb.train() is bb
    bb.train(False)
    assert not any(m.training for m in bb.modules())
    frozen = _bb(clips, RN, unlocked_groups=0)
    assert frozen.train() is frozen and not frozen.training
    assert frozen.freeze_unused_parameters() == []


def test_unlocked_groups_convnext(clips):
    bb = _bb(clips, CX, unlocked_groups=5)  # stem + 4 stages; head norm / projection frozen
    assert _trainable(bb) == _names(bb, 'visual.trunk.stem.', 'visual.trunk.stages.')
    bb = _bb(clips, CX, unlocked_groups=4)
    assert _trainable(bb) == _names(bb, 'visual.trunk.stages.')
    with pytest.raises(ValueError, match='unlocked_groups'):
        _bb(clips, CX, unlocked_groups=6)


def test_freeze_probe_side_effects(clips, monkeypatch):
    logs: List[str] = []
    monkeypatch.setattr(dvb, 'print_log', lambda msg, **kw: logs.append(msg))
    clip = copy.deepcopy(clips[RN])
    stats = {k: v.clone() for k, v in clip.visual.state_dict().items()}
    clip.visual.train()
    bb = DenseVLMBackbone.from_open_clip(clip, model_name=RN)
    # the probe ran in eval mode (no BatchNorm update) and the training mode came back
    _assert_tower(bb, stats)
    assert bb.training and bb.visual.layer1[0].bn1.training
    assert set(bb.frozen_unused) == RN_QK
    kept = [p for p in bb.parameters() if p.requires_grad]
    assert len(logs) == 1
    assert logs[0].startswith(f'DenseVLMBackbone({RN}): {len(kept)} trainable parameter tensors '
                              f'({sum(p.numel() for p in kept):,} values); froze 4 ')
    # called again (eval mode, under no_grad, with gradients present): the gradients and the mode
    # are kept; newly trainable unreachable parameters are frozen and added to frozen_unused
    bb.eval()
    bb.visual.attnpool.q_proj.weight.requires_grad_(True)
    grads = {}
    for n, p in bb.named_parameters():
        if p.requires_grad:
            p.grad = grads[n] = torch.full_like(p, 0.5)
    with torch.no_grad():
        again = bb.freeze_unused_parameters()
    assert again == ['visual.attnpool.q_proj.weight']
    assert not bb.visual.attnpool.q_proj.weight.requires_grad
    assert len(bb.frozen_unused) == 5 and set(bb.frozen_unused) == RN_QK
    assert not bb.training
    for n, p in bb.named_parameters():
        if n in grads:
            assert p.grad is grads[n], n
    # nothing unreachable: no "froze" part in the log
    logs.clear()
    assert bb.freeze_unused_parameters() == []
    assert len(logs) == 1 and 'froze' not in logs[0]
    # five unreachable tensors: the log names the first four
    bb.visual.register_parameter('extra', nn.Parameter(torch.zeros(3)))
    for n, p in bb.named_parameters():
        if n in RN_QK:
            p.requires_grad_(True)
    logs.clear()
    froze = bb.freeze_unused_parameters()
    order = [n for n, _ in bb.named_parameters() if n in RN_QK | {'visual.extra'}]
    assert froze == order and len(froze) == 5
    assert logs[0].endswith(f'; froze 5 that forward / dense_features never reach '
                            f'(first: {order[:4]})')


def test_float64_tower_and_float32_images(clips):
    """The probe and the inputs follow the tower's dtype."""
    clip = copy.deepcopy(clips[RN]).double()
    bb = DenseVLMBackbone.from_open_clip(clip, model_name=RN).eval()
    assert set(bb.frozen_unused) == RN_QK
    x = _images(64, 96)
    with torch.no_grad():
        got = bb.dense_features(x)
        ref = bb.dense_features(x.double())
        emb = bb.encode_image(x)
    assert got.dtype == torch.float64 and emb.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_image_side_boundaries(clips):
    bb = _bb(clips, RN).eval()
    with torch.no_grad():
        assert bb.dense_features(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 1, 1)
        assert bb.encode_image(torch.zeros(1, 3, 32, 64)).shape == (1, 32)
    for h, w in ((31, 64), (64, 31), (31, 31)):
        with pytest.raises(ValueError, match='smaller than the stride'):
            bb.dense_features(torch.zeros(1, 3, h, w))


def test_normalize_options(clips):
    bb = _bb(clips, RN).eval()
    x = _images()
    with torch.no_grad():
        raw, normed = bb.encode_image(x), bb.encode_image(x, normalize=True)
        dense = bb.dense_features(x)
    torch.testing.assert_close(normed, raw / raw.norm(dim=-1, keepdim=True))
    assert (raw.norm(dim=-1) - 1).abs().min() > 1e-3  # default: not normalised
    assert (dense.norm(dim=1) - 1).abs().min() > 1e-3


# ------------------------------------------------------------------------------ ModifiedResNet
def test_resnet_position_table_must_be_square(clips):
    visual = copy.deepcopy(clips[RN].visual)
    c = visual.attnpool.positional_embedding.shape[1]
    visual.attnpool.positional_embedding = nn.Parameter(torch.randn(1 + 6, c))
    with pytest.raises(ValueError, match='not square'):
        DenseVLMBackbone.from_open_clip(visual)
    # a 3x3 table: native grid at 96 px (no resize), per location c_proj(v_proj(x + pos))
    table = torch.randn(1 + 9, c, generator=torch.Generator().manual_seed(1))
    visual.attnpool.positional_embedding = nn.Parameter(table)
    bb = DenseVLMBackbone.from_open_clip(visual).eval()
    assert bb._adapter.grid == (3, 3)
    x = _images(96, 96)
    with torch.no_grad():
        v = bb.visual
        f = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))  # [2, 512, 3, 3]
        t = f.flatten(2).transpose(1, 2) + table[1:]
        ap = v.attnpool
        ref = (t @ ap.v_proj.weight.T + ap.v_proj.bias) @ ap.c_proj.weight.T + ap.c_proj.bias
        got = bb.dense_features(x)
    torch.testing.assert_close(got, ref.transpose(1, 2).reshape(2, 32, 3, 3),
                               rtol=1e-4, atol=1e-5)


def test_resnet_levels(clips):
    bb = _bb(clips, RN)
    ad = bb._adapter
    assert ad.num_levels(bb.visual) == 4 and ad.first_block(bb.visual) is bb.visual.layer1
    for ok in ((3, ), (-4, ), (0, 1, 2, 3)):
        bb.out_indices = ok
        bb._levels()
    for bad in (4, -5):
        with pytest.raises(ValueError, match=rf'out_indices entry {bad} .*4 stages \[layer1'):
            _bb(clips, RN, out_indices=(bad, ))


def test_resnet_grad_checkpointing_only_warns(clips, monkeypatch):
    logs: List[str] = []
    monkeypatch.setattr(mrn, 'print_log', lambda msg, **kw: logs.append(msg))
    _bb(clips, RN)
    assert logs == []
    bb = _bb(clips, RN, grad_checkpointing=True)
    assert len(logs) == 1 and 'not supported' in logs[0]
    assert not getattr(bb.visual, 'grad_checkpointing', False)


def _resized_attnpool_reference(visual, x):
    """open_clip's own tower, with the attention-pool table resized (rows 1.., plain bicubic)."""
    ref = copy.deepcopy(visual)
    with torch.no_grad():
        f = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.stem(x)))))
        pos = ref.attnpool.positional_embedding
        side = int(round((pos.shape[0] - 1) ** 0.5))
        grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=f.shape[-2:], mode='bicubic', align_corners=False)
        table = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(-1, pos.shape[1])])
        ref.attnpool.positional_embedding = nn.Parameter(table)
        return ref.attnpool(f)


@pytest.mark.parametrize('hw', [(96, 160), (64, 64)])
def test_resnet_encode_image_any_size_equals_open_clip_pool(clips, hw):
    bb = _bb(clips, RN).eval()
    x = _images(*hw)
    with torch.no_grad():
        got = bb.encode_image(x)
    ref = _resized_attnpool_reference(bb.visual, x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert (got[0] - got[1]).abs().max() > 1e-2
    # in training mode (attention pool training, BatchNorms frozen) it is the same computation
    bb.train()
    for m in bb.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.encode_image(x), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', [RN, CX])
def test_only_needed_stages_run(clips, name):
    bb = _bb(clips, name, out_indices=(1, )).eval()
    v = bb.visual
    if name == RN:
        stem, stages = v.conv1, [v.layer1, v.layer2, v.layer3, v.layer4]
    else:
        stem, stages = v.trunk.stem, list(v.trunk.stages)
    counts = [_Count(m) for m in [stem] + stages]
    x = _images()

    def run():
        before = [c.n for c in counts]
        with torch.no_grad():
            out = bb(x)
        return out, [c.n - b for c, b in zip(counts, before)]

    (second, ), ran = run()
    assert ran == [1, 1, 1, 0, 0]  # nothing past the largest index
    bb.with_dense = True
    (second_d, dense), ran = run()
    assert ran == [1] * 5
    torch.testing.assert_close(second_d, second, rtol=0, atol=0)
    bb.out_indices = ()
    (dense_only, ), ran = run()
    assert ran == [1] * 5
    torch.testing.assert_close(dense_only, dense, rtol=0, atol=0)
    bb.with_dense = False
    out, ran = run()
    assert out == () and ran == [0] * 5
    assert bb._adapter.run(v, x, [], False, False) == ([], None)
    # the stage maps are the trunk's own
    bb.out_indices = (3, 0, 2)
    with torch.no_grad():
        maps = bb(x)
        if name == RN:
            ref, h = [], v.stem(x)
            for layer in stages:
                h = layer(h)
                ref.append(h)
        else:
            ref = v.trunk.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    for got, i in zip(maps, (3, 0, 2)):
        torch.testing.assert_close(got, ref[i], rtol=1e-5, atol=1e-6)
    if name == CX:
        torch.testing.assert_close(maps[0], v.trunk.forward_features(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------ ConvNeXt
def _convnext_cfg(**vision):
    base = {'timm_model_name': 'densevlm_tiny_convnext', 'timm_model_pretrained': False,
            'timm_pool': '', 'timm_proj': 'linear', 'timm_drop': 0.0, 'timm_drop_path': 0.0,
            'image_size': 64}
    return {'embed_dim': 32, 'vision_cfg': {**base, **vision},
            'text_cfg': {'context_length': 77, 'vocab_size': 49408, 'width': 32, 'heads': 2,
                         'layers': 2}}


def test_convnext_heads():
    torch.manual_seed(0)
    with pytest.raises(NotImplementedError, match='attention pooling'):
        DenseVLMBackbone('cx-attn', model_cfg=_convnext_cfg(timm_pool='abs_attn', timm_proj=''))
    with pytest.raises(NotImplementedError, match='projection'):
        DenseVLMBackbone('cx-none', model_cfg=_convnext_cfg(timm_proj='none'))
    # mlp projection head: D is the last Linear's output (the hidden layer is 2 D wide)
    bb = DenseVLMBackbone('cx-mlp', model_cfg=_convnext_cfg(timm_proj='mlp')).eval()
    assert bb.embed_dim == 32 and bb.stride == 32 and bb.num_features == 64
    with torch.no_grad():
        assert bb.dense_features(_images(64, 96)).shape == (2, 32, 2, 3)
    visual = copy.deepcopy(bb.visual)
    visual.trunk.head = nn.Identity()
    with pytest.raises(NotImplementedError, match='NormMlpClassifierHead'):
        ConvNeXtAdapter(visual)


def test_convnext_levels_and_checkpointing(clips):
    bb = _bb(clips, CX)
    ad, v = bb._adapter, bb.visual
    assert ad.num_levels(v) == 4 and ad.first_block(v) is v.trunk.stages[0]
    assert ad.num_features(v) == 64 and bb.num_features == 64
    for ok in ((3, ), (-4, )):
        bb.out_indices = ok
        bb._levels()
    for bad in (4, -5):
        with pytest.raises(ValueError, match=rf'out_indices entry {bad} .*4 stages'):
            _bb(clips, CX, out_indices=(bad, ))
    assert not any(s.grad_checkpointing for s in v.trunk.stages)
    on = _bb(clips, CX, grad_checkpointing=True)
    assert all(s.grad_checkpointing for s in on.visual.trunk.stages)
    # checkpointed training pass: same map and gradients
    x = _images(64, 64)
    for m in (bb, on):
        m.train()
        m.dense_features(x).square().sum().backward()
    for (n, p), q in zip(bb.named_parameters(), on.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=n)


# ------------------------------------------------------------------------------------- pooling
@pytest.fixture(scope='module')
def dense_rn(clips):
    bb = _bb(clips, RN).eval()
    with torch.no_grad():
        dense = bb.dense_features(_images(3 * 32, 4 * 32))  # [2, 32, 3, 4]
    return bb, dense


def test_roi_three_cells_is_their_mean_and_dtypes(dense_rn):
    bb, dense = dense_rn
    s = bb.stride
    normed = F.normalize(dense, dim=1)
    boxes = [torch.tensor([[0., 0., 3 * s, s]]), torch.tensor([[s, 0., 2 * s, 3 * s]])]
    ref = torch.stack([normed[0, :, 0, 0:3].mean(-1), normed[1, :, 0:3, 1].mean(-1)])
    torch.testing.assert_close(bb.roi_features(dense, boxes), ref, rtol=1e-5, atol=1e-6)
    got64 = bb.roi_features(dense.double(), boxes)
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, ref.double(), rtol=1e-5, atol=1e-6)
    got16 = bb.roi_features(dense.half(), boxes)
    assert got16.dtype == torch.float32
    torch.testing.assert_close(got16, ref, rtol=1e-2, atol=2e-3)
    assert bb.roi_features(dense.double(), [torch.zeros(0, 4)] * 2).dtype == torch.float64
    empty = bb.roi_features(dense[:0], [])
    assert empty.shape == (0, 32) and empty.dtype == torch.float32


def test_roi_empty_box_shapes(dense_rn):
    bb, dense = dense_rn
    box = torch.tensor([[0., 0., 32., 32.]])
    for empty in (torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, 5)):
        out = bb.roi_features(dense, [empty, box])
        torch.testing.assert_close(out, F.normalize(dense, dim=1)[1:, :, 0, 0])
    with pytest.raises(ValueError, match=r'boxes\[0\] must be \[K, 4\]'):
        bb.roi_features(dense, [torch.zeros(0, 1, 4), box])
    with pytest.raises(ValueError, match=r'boxes\[1\] must be \[K, 4\]'):
        bb.roi_features(dense, [box, torch.zeros(4)])


def test_check_boxes_on_a_non_square_image():
    size = (64, 96)  # H, W
    full = torch.tensor([[0., 0., 96., 64.]])
    assert check_boxes(full, size) is full
    assert check_boxes(torch.zeros(0, 4), size).shape == (0, 4)
    bad = {
        'negative coordinate': [[5., -1., 10., 10.], [-1., 5., 10., 10.]],
        'outside the image': [[0., 0., 10., 65.], [0., 0., 97., 10.]],
        'inverted': [[0., 20., 10., 5.], [20., 0., 5., 10.]],
        'zero area': [[0., 5., 10., 5.], [5., 0., 5., 10.]],
        'not finite': [[0., 0., 10., float('inf')], [float('nan'), 0., 10., 10.]],
    }
    for what, boxes in bad.items():
        for box in boxes:
            with pytest.raises(ValueError, match=rf'boxes\[3\]\[1\] = .*{what}'):
                check_boxes(torch.tensor([[1., 1., 8., 8.], box]), size, index=3)
    clipped = check_boxes(torch.tensor([[-5., -7., 200., 300.], [90., 60., 100., 70.]]), size,
                          clip=True)
    torch.testing.assert_close(clipped, torch.tensor([[0., 0., 96., 64.], [90., 60., 96., 64.]]))


def test_mask_features_order_and_dtypes(dense_rn):
    bb, dense = dense_rn
    normed = F.normalize(dense, dim=1)
    wts = torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(3))
    ref = torch.stack([(normed[1] * m).sum((1, 2)) / m.sum() for m in wts])
    got = bb.mask_features(dense, [torch.zeros(0, 3, 4), wts])  # an empty image first
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    got64 = bb.mask_features(dense.double(), [torch.zeros(0, 3, 4), wts.double()])
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, ref.double(), rtol=1e-5, atol=1e-6)
    got16 = bb.mask_features(dense.half(), [torch.zeros(0, 3, 4), wts])
    assert got16.dtype == torch.float32
    torch.testing.assert_close(got16, ref, rtol=1e-2, atol=2e-3)
    empty = bb.mask_features(dense[:0], [])
    assert empty.shape == (0, 32) and empty.dtype == torch.float32
    assert bb.mask_features(dense.double(), [torch.zeros(0, 3, 4)] * 2).dtype == torch.float64
    with pytest.raises(ValueError, match=r'masks\[1\] must be \[K, h, w\]'):
        bb.mask_features(dense, [wts, torch.ones(3, 4)])
    with pytest.raises(ValueError, match='masks has 1 entries'):
        bb.mask_features(dense, [wts])


def _overlap_weights(mask: torch.Tensor, grid, span_y: float, span_x: float) -> torch.Tensor:
    """Reference coverage: pixel ``(y, x)`` spans ``[y*span_y, (y+1)*span_y) x [x*span_x, ...)``
    in feature cells; ``w[i, j]`` = Σ mask · area of that span inside cell ``(i, j)``."""
    def lengths(n_cells, n_pix, span):
        out = torch.zeros(n_cells, n_pix, dtype=torch.float64)
        for i in range(n_cells):
            for y in range(n_pix):
                out[i, y] = max(0.0, min(i + 1, (y + 1) * span) - max(i, y * span))
        return out

    ay = lengths(grid[0], mask.shape[-2], span_y)
    ax = lengths(grid[1], mask.shape[-1], span_x)
    return (ay @ mask.double() @ ax.T).float()


def test_mask_weights_geometry(dense_rn):
    bb, _ = dense_rn
    s = bb.stride  # 32
    g = torch.Generator().manual_seed(5)
    same = torch.rand(2, 3, 4, generator=g) > 0.5
    w = bb.mask_weights(same, (3, 4))
    assert w.dtype == torch.float32 and torch.equal(w, same.float())
    # not a multiple of the grid, spanning it proportionally (the default for a small mask)
    small = torch.rand(2, 5, 7, generator=g)
    ref = torch.stack([_overlap_weights(m, (3, 4), 3 / 5, 4 / 7) for m in small])
    for in_pixels in (None, False):
        torch.testing.assert_close(bb.mask_weights(small, (3, 4), in_pixels=in_pixels), ref)
    # input pixels (default when h'//stride, w'//stride give the grid): remainder dropped
    pix = torch.rand(1, 3 * s + 7, 4 * s + 9, generator=g)
    ref = torch.stack([_overlap_weights(m, (3, 4), 1 / s, 1 / s) for m in pix])
    for in_pixels in (None, True):
        torch.testing.assert_close(bb.mask_weights(pix, (3, 4), in_pixels=in_pixels), ref,
                                   rtol=1e-5, atol=1e-4)
    # only the rows are in input pixels: the mask spans the grid proportionally
    rows = torch.rand(1, 3 * s, 4, generator=g)
    torch.testing.assert_close(bb.mask_weights(rows, (3, 4)),
                               _overlap_weights(rows[0], (3, 4), 1 / s, 1.0)[None],
                               rtol=1e-5, atol=1e-4)
    cols = torch.rand(1, 3, 4 * s, generator=g)
    torch.testing.assert_close(bb.mask_weights(cols, (3, 4)),
                               _overlap_weights(cols[0], (3, 4), 1.0, 1 / s)[None],
                               rtol=1e-5, atol=1e-4)


def test_mask_features_in_pixels_and_epsilon(dense_rn):
    bb, dense = dense_rn
    s = bb.stride
    normed = F.normalize(dense, dim=1)
    g = torch.Generator().manual_seed(6)
    pix = torch.rand(2, 3 * s + 7, 4 * s + 9, generator=g)  # input-pixel sized (+ remainder)
    for in_pixels, span in ((None, (1 / s, 1 / s)), (False, (3 / (3 * s + 7), 4 / (4 * s + 9)))):
        w = torch.stack([_overlap_weights(m, (3, 4), *span) for m in pix])
        ref = torch.stack([(normed[0] * m).sum((1, 2)) / m.sum() for m in w])
        got = bb.mask_features(dense, [pix, torch.zeros(0, 3, 4)], in_pixels=in_pixels)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # feature = Σ(map·w) / (Σw + 1e-12): a total weight of 1e-12 gives half the cell's vector
    tiny = torch.zeros(1, 3, 4)
    tiny[0, 1, 2] = 1e-12
    got = bb.mask_features(dense[:1], [tiny])
    torch.testing.assert_close(got[0], normed[0, :, 1, 2] / 2, rtol=1e-5, atol=1e-7)
    # a mask grid without pixels cannot be pooled: a clear error naming the masks
    for shape in ((2, 0, 4), (2, 4, 0)):
        with pytest.raises(ValueError, match=r'masks\[0\] must be \[K, h, w\] with h, w > 0'):
            bb.mask_features(dense[:1], [torch.ones(*shape)])
    assert bb.mask_features(dense[:1], [torch.ones(0, 3, 4)]).shape == (0, dense.shape[1])


def test_mask_pooling_follows_the_map_device(dense_rn):
    """Masks (and the coverage tables) move to the map's device: checked on the meta device."""
    bb, dense = dense_rn
    s = bb.stride
    meta = torch.empty(2, 32, 3, 4, device='meta')
    masks = [torch.rand(2, 3 * s + 7, 4 * s + 9), torch.rand(1, 3, 4) > 0.5]
    out = bb.mask_features(meta, masks)
    assert out.device.type == 'meta' and out.shape == (3, 32) and out.dtype == torch.float32


def test_mask_coverage_is_computed_in_float64(dense_rn):
    """Cell edges at multiples of 0.1 (30 mask rows on 3 cells): float64 lengths, then float32."""
    bb, _ = dense_rn
    for y in range(30):
        mask = torch.zeros(1, 30, 4)
        mask[0, y, 1] = 1.0
        w = bb.mask_weights(mask, (3, 4))
        i = int(y // 10)
        length = min(i + 1, (y + 1) * 0.1) - max(i, y * 0.1)  # Python float64
        want = torch.zeros(1, 3, 4)
        want[0, i, 1] = length
        torch.testing.assert_close(w, want, rtol=0, atol=0)


def test_roi_integer_boxes_and_empty_half(dense_rn):
    bb, dense = dense_rn
    normed = F.normalize(dense, dim=1)
    boxes = [torch.tensor([[0, 0, 64, 64]]), torch.tensor([[32, 32, 96, 96]], dtype=torch.int32)]
    ref = torch.stack([normed[0, :, 0:2, 0:2].mean((1, 2)), normed[1, :, 1:3, 1:3].mean((1, 2))])
    torch.testing.assert_close(bb.roi_features(dense, boxes), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bb.roi_features(dense, [[[0, 0, 64, 64]], [[32, 32, 96, 96]]]),
                               ref, rtol=1e-5, atol=1e-6)
    half = dense.half()
    assert bb.roi_features(half, [torch.zeros(0, 4)] * 2).dtype == torch.float32
    assert bb.mask_features(half, [torch.zeros(0, 3, 4)] * 2).dtype == torch.float32


def test_check_boxes_messages_name_the_fix():
    size = (64, 96)
    fix = 'pass clip=True to clip boxes to the image'
    cases = [
        ([0., float('nan'), 10., 10.], 'is not finite', 'remove NaN / inf boxes'),
        ([5., -1., 10., 10.], 'has a negative coordinate', fix),
        ([0., 0., 97., 10.], 'reaches outside the image', fix),
        ([5., 0., -1., 10.], 'is inverted (x2 < x1 or y2 < y1)', 'boxes are x1, y1, x2, y2'),
        ([5., 0., 5., 10.], 'has zero area', 'drop empty boxes'),
    ]
    for box, what, hint in cases:
        with pytest.raises(ValueError) as err:
            check_boxes(torch.tensor([box]), size)  # index defaults to 0, clip to False
        text = str(err.value)
        assert text.startswith('boxes[0][0] = [') and text.endswith(
            f'] {what} (image 64x96); {hint}'), text
    # clip=True: a box past the far edge or before the near one collapses to zero area
    for box in ([0., 70., 10., 80.], [100., 0., 120., 10.], [-20., 0., -10., 10.],
                [0., -20., 10., -10.]):
        with pytest.raises(ValueError, match='has zero area'):
            check_boxes(torch.tensor([box]), size, clip=True)


def test_checkpointing_reaches_every_path_of_the_wrapper():
    """grad_checkpointing in training mode: a block's inner modules re-run in backward for
    dense_features, encode_image and forward (not in eval mode or without the flag)."""
    torch.manual_seed(0)
    bb = DenseVLMBackbone(VIT, freeze_unused=False, grad_checkpointing=True,
                          out_indices=(0, ), with_dense=True).train()
    ln = _Count(bb.visual.transformer.resblocks[0].ln_1)
    x = _images(64, 64)
    for call in (bb.dense_features, bb.encode_image, lambda im: bb(im)[0]):
        ln.n = 0
        call(x).float().sum().backward()
        assert ln.n == 2
    bb.grad_checkpointing = False
    ln.n = 0
    bb.dense_features(x).sum().backward()
    assert ln.n == 1
