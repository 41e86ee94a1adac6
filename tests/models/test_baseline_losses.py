"""Baseline losses (spec §4) against hand computations written with explicit loops."""
import math

import pytest
import torch

from densevlm_mm.models.losses.clipself_loss import CLIPSelfLoss
from densevlm_mm.models.losses.logits_kd_loss import LogitsKDLoss
from densevlm_mm.models.losses.region_clip_loss import RegionCLIPLoss


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (_norm(a) * _norm(b))


def _softmax(z):
    m = max(z)
    e = [math.exp(x - m) for x in z]
    return [x / sum(e) for x in e]


def _inputs(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


def _grads_only_to_student(student, *others):
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert student.grad.abs().sum() > 0
    for t in others:
        assert t.grad is None


def test_clipself_loss_matches_hand_computation():
    s, t = _inputs((5, 3), (5, 3))
    s.requires_grad_(True)
    t.requires_grad_(True)
    out = CLIPSelfLoss(weight=2.0)(s, t)
    cos = [_cos(s[k].tolist(), t[k].tolist()) for k in range(5)]
    expected = (1 - sum(cos) / 5) * 2.0
    assert set(out) == {'loss_cosine'}
    assert out['loss_cosine'].item() == pytest.approx(expected, rel=1e-6)
    out['loss_cosine'].backward()
    _grads_only_to_student(s, t)


def test_logits_kd_loss_matches_hand_computation():
    s, t, st, tt = _inputs((4, 3), (4, 5), (6, 3), (6, 5), seed=1)
    for x in (s, t, st, tt):
        x.requires_grad_(True)
    tau = 0.5
    out = LogitsKDLoss(weight=3.0)(s, t, st, tt, tau=tau)
    total = 0.0
    for k in range(4):
        q = _softmax([_cos(s[k].tolist(), st[c].tolist()) / tau for c in range(6)])
        p = _softmax([_cos(t[k].tolist(), tt[c].tolist()) / tau for c in range(6)])
        total += sum(p[c] * (math.log(p[c]) - math.log(q[c])) for c in range(6))
    assert out['loss_logits_kd'].item() == pytest.approx(3.0 * total / 4, rel=1e-5)
    out['loss_logits_kd'].backward()
    _grads_only_to_student(s, t, st, tt)

    # without text normalisation the class rows keep their norms
    raw = LogitsKDLoss()(s, t, st, tt, tau=tau, normalize_text=False)['loss_logits_kd'].item()
    total = 0.0
    for k in range(4):
        sk, tk = (s[k] / s[k].norm()).detach(), (t[k] / t[k].norm()).detach()
        q = _softmax([float(sk @ st[c].detach()) / tau for c in range(6)])
        p = _softmax([float(tk @ tt[c].detach()) / tau for c in range(6)])
        total += sum(p[c] * (math.log(p[c]) - math.log(q[c])) for c in range(6))
    assert raw == pytest.approx(total / 4, rel=1e-5)


def test_region_clip_loss_matches_hand_computation_with_sampling():
    f, nouns = _inputs((4, 3), (10, 3), seed=2)
    f.requires_grad_(True)
    nouns.requires_grad_(True)
    labels = torch.tensor([7, 2, 7, 5])
    loss_fn = RegionCLIPLoss(num_sampled_classes=6, weight=1.5)
    classes = loss_fn.sample_classes(labels, 10, torch.Generator().manual_seed(0)).tolist()
    assert classes[:3] == [2, 5, 7] and len(set(classes)) == 6
    assert not set(classes[3:]) & {2, 5, 7}
    out = loss_fn(f, labels, nouns, 20.0, generator=torch.Generator().manual_seed(0))

    def bce(x, y):
        sigmoid = 1 / (1 + math.exp(-x))
        return -(y * math.log(sigmoid) + (1 - y) * math.log(1 - sigmoid))

    total = 0.0
    for k in range(4):
        for c in classes:
            logit = 20.0 * _cos(f[k].tolist(), nouns[c].tolist())
            total += bce(logit, 1.0 if labels[k] == c else 0.0)
    assert out['loss_region_clip'].item() == pytest.approx(1.5 * total / 4, rel=1e-6)
    out['loss_region_clip'].backward()
    _grads_only_to_student(f, nouns)


def test_region_clip_uses_only_appeared_classes_when_enough():
    f, nouns = _inputs((3, 2), (5, 2), seed=3)
    labels = torch.tensor([4, 0, 1])
    loss_fn = RegionCLIPLoss(num_sampled_classes=2)
    assert loss_fn.sample_classes(labels, 5).tolist() == [0, 1, 4]
    # a tensor logit scale works like the float, and no generator draws from the global one
    a = loss_fn(f, labels, nouns, torch.tensor(10.0))['loss_region_clip']
    b = loss_fn(f, labels, nouns, 10.0)['loss_region_clip']
    assert a.item() == pytest.approx(b.item())
    few = RegionCLIPLoss(num_sampled_classes=100).sample_classes(labels, 5)
    assert sorted(few.tolist()) == [0, 1, 2, 3, 4]  # capped by the vocabulary
    with pytest.raises(ValueError, match='labels must be in'):
        loss_fn(f, torch.tensor([0, 1, 5]), nouns, 10.0)


@pytest.mark.parametrize('name', ['clipself', 'kd', 'region'])
def test_empty_input_gives_zero_loss_with_grad(name):
    s = torch.zeros(0, 4, requires_grad=True)
    if name == 'clipself':
        loss = CLIPSelfLoss()(s, torch.zeros(0, 4))['loss_cosine']
    elif name == 'kd':
        loss = LogitsKDLoss()(s, torch.zeros(0, 6), torch.randn(3, 4),
                              torch.randn(3, 6))['loss_logits_kd']
    else:
        loss = RegionCLIPLoss()(s, torch.zeros(0, dtype=torch.long), torch.randn(7, 4),
                                100.0)['loss_region_clip']
    assert loss.item() == 0 and not torch.isnan(loss)
    loss.backward()
    assert s.grad is not None and s.grad.shape == (0, 4)


def test_losses_are_registered():
    from mmengine.registry import DefaultScope

    from densevlm_mm.registry import MODELS
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        for name in ('CLIPSelfLoss', 'LogitsKDLoss', 'RegionCLIPLoss'):
            assert MODELS.get(name) is not None
        assert MODELS.build(dict(type='LogitsKDLoss', weight=0.5)).weight == 0.5
        for name in ('DenseVLMHead', 'CLIPSelfHead', 'RegionCLIPHead'):
            assert MODELS.get(name) is not None
        # tau is the retriever's: a loss config that sets it is refused, naming where it goes
        with pytest.raises(ValueError, match='target_generator.tau'):
            MODELS.build(dict(type='LogitsKDLoss', tau=0.02))


def test_logits_kd_from_retrieval_equals_standalone_call():
    from densevlm_mm.models.retrieval import retrieve_regions
    s, t, st, tt = _inputs((4, 3), (4, 5), (6, 3), (6, 5), seed=3)
    loss = LogitsKDLoss(weight=2.0)
    for tau, norm in ((0.5, True), (0.2, False)):
        retrieval = retrieve_regions(t, tt, torch.zeros(6, dtype=torch.bool), tau, norm)
        a = loss.from_retrieval(s, st, retrieval)['loss_logits_kd']
        b = loss(s, t, st, tt, tau=tau, normalize_text=norm)['loss_logits_kd']
        assert torch.equal(a, b)
