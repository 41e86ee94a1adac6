"""DecoupledAlignLoss against a hand computation (paper Table 2 modes, both reductions)."""
import math

import pytest
import torch

from densevlm_mm.models.losses import DecoupledAlignLoss

SUBSETS = {  # mode -> (classes of a thing region's softmax, of a stuff region's softmax)
    'all': ('all', 'all'),
    'fully_decoupled': ('thing', 'stuff'),
    'thing_all': ('all', 'stuff'),
    'densevlm': ('thing', 'all'),
}


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _softmax(z):
    m = max(z)
    e = [math.exp(x - m) for x in z]
    s = sum(e)
    return [x / s for x in e]


def hand_loss(sf, tf, st, tt, is_thing, mode, tau, theta, reduction):
    """Plain-Python loops over regions and classes."""
    C = len(is_thing)
    groups = {'thing': [], 'stuff': []}
    for s_vec, t_vec in zip(sf, tf):
        t_hat, s_hat = _unit(t_vec), _unit(s_vec)
        tz = [sum(a * b for a, b in zip(t_hat, _unit(row))) / tau for row in tt]
        sz = [sum(a * b for a, b in zip(s_hat, _unit(row))) / tau for row in st]
        p = _softmax(tz)
        conf = max(p)
        label = p.index(conf)
        if not conf > theta:
            continue
        group = 'thing' if is_thing[label] else 'stuff'
        subset = SUBSETS[mode][0 if group == 'thing' else 1]
        cols = [c for c in range(C)
                if subset == 'all' or (subset == 'thing') == bool(is_thing[c])]
        pt = _softmax([tz[c] for c in cols])
        qs = _softmax([sz[c] for c in cols])
        groups[group].append(sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, qs)))
    if reduction == 'reference':
        total = sum(sum(v) / len(v) for v in groups.values() if v)
    else:
        kls = groups['thing'] + groups['stuff']
        total = sum(kls) / len(kls) if kls else 0.0
    return total, len(groups['thing']), len(groups['stuff'])


@pytest.mark.parametrize('mode', sorted(SUBSETS))
@pytest.mark.parametrize('reduction', ['reference', 'mean'])
def test_matches_hand_computation(mode, reduction):
    g = torch.Generator().manual_seed(0)
    K, C, Ds, Dt = 12, 7, 5, 6
    sf, tf = torch.randn(K, Ds, generator=g), torch.randn(K, Dt, generator=g)
    st, tt = torch.randn(C, Ds, generator=g), torch.randn(C, Dt, generator=g)
    is_thing = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    tau, theta = 0.2, 0.3
    loss = DecoupledAlignLoss(mode=mode, theta=theta, reduction=reduction)
    out = loss(sf.double(), tf.double(), st.double(), tt.double(), is_thing, tau=tau)
    expected, n_thing, n_stuff = hand_loss(sf.tolist(), tf.tolist(), st.tolist(), tt.tolist(),
                                           is_thing.tolist(), mode, tau, theta, reduction)
    assert n_thing > 0 and n_stuff > 0, 'fixture must exercise both groups'
    assert out['num_thing'].item() == n_thing and out['num_stuff'].item() == n_stuff
    assert out['num_kept'].item() == n_thing + n_stuff
    assert out['loss_align'].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_modes_differ_and_threshold_is_strict():
    g = torch.Generator().manual_seed(1)
    sf, tf = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    st, tt = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    is_thing = torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool)
    values = {m: DecoupledAlignLoss(mode=m, theta=0.0)(sf, tf, st, tt, is_thing, tau=0.5)
              ['loss_align'].item() for m in SUBSETS}
    assert len(set(round(v, 6) for v in values.values())) == 4
    # conf can never exceed 1: theta=1 keeps nothing.
    out = DecoupledAlignLoss(theta=1.0)(sf, tf, st, tt, is_thing)
    assert out['num_kept'].item() == 0


def test_zero_kept_is_finite_with_grad_path():
    sf = torch.randn(6, 4, requires_grad=True)
    tf, st, tt = torch.randn(6, 4), torch.randn(3, 4), torch.randn(3, 4)
    out = DecoupledAlignLoss(theta=1.0)(sf, tf, st, tt, torch.tensor([1, 0, 0]).bool())
    assert out['loss_align'].item() == 0.0 and torch.isfinite(out['loss_align'])
    out['loss_align'].backward()
    assert sf.grad is not None and torch.count_nonzero(sf.grad) == 0
    # zero regions at all
    sf0 = torch.zeros(0, 4, requires_grad=True)
    out = DecoupledAlignLoss()(sf0, torch.zeros(0, 4), st, tt, torch.tensor([1, 0, 0]).bool())
    assert out['loss_align'].item() == 0.0
    out['loss_align'].backward()


def test_gradient_reaches_student_only():
    sf = torch.randn(8, 4, requires_grad=True)
    tf = torch.randn(8, 4, requires_grad=True)
    st = torch.randn(3, 4, requires_grad=True)
    tt = torch.randn(3, 4, requires_grad=True)
    out = DecoupledAlignLoss(theta=0.0)(sf, tf, st, tt, torch.tensor([1, 0, 0]).bool(), tau=0.5)
    out['loss_align'].backward()
    assert sf.grad.abs().sum() > 0
    # the teacher side is a target: no gradient reaches it
    assert tf.grad is None and tt.grad is None
    assert st.grad.abs().sum() > 0


def test_normalize_text_switch_changes_logits():
    g = torch.Generator().manual_seed(3)
    sf, tf = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    st, tt = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    is_thing = torch.tensor([1, 0, 0]).bool()
    loss = DecoupledAlignLoss(theta=0.0)
    a = loss(sf, tf, st * 0.9, tt * 0.9, is_thing, tau=0.5)['loss_align']
    b = loss(sf, tf, st, tt, is_thing, tau=0.5)['loss_align']
    c = loss(sf, tf, st * 0.9, tt * 0.9, is_thing, tau=0.5, normalize_text=False)['loss_align']
    assert torch.allclose(a, b)  # normalised: the row scale does not matter
    assert not torch.allclose(b, c)  # reference mode: scale acts as a per-class temperature


@pytest.mark.parametrize('bad', ['dim', 'count', 'classes', 'mode'])
def test_bad_inputs_raise(bad):
    sf, tf, st, tt = torch.randn(4, 4), torch.randn(4, 6), torch.randn(3, 4), torch.randn(3, 6)
    is_thing = torch.tensor([1, 0, 0]).bool()
    loss = DecoupledAlignLoss()
    with pytest.raises(ValueError):
        if bad == 'dim':
            loss(sf, tf, torch.randn(3, 5), tt, is_thing)
        elif bad == 'count':
            loss(sf, tf[:2], st, tt, is_thing)
        elif bad == 'classes':
            loss(sf, tf, st, tt[:2], is_thing)
        else:
            DecoupledAlignLoss(mode='nope')


def test_kl_is_torch_kl_div_with_log_targets():
    """``_kl`` is ``F.kl_div(log_q, log_p, log_target=True)`` summed over classes:
    Σ p (log p − log q)."""
    g = torch.Generator().manual_seed(4)
    t, s = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g,
                                                                            dtype=torch.float64)
    log_p, log_q = t.log_softmax(-1), s.log_softmax(-1)
    explicit = (log_p.exp() * (log_p - log_q)).sum(-1)
    assert torch.allclose(DecoupledAlignLoss._kl(t, s), explicit, rtol=0, atol=1e-12)


@pytest.mark.parametrize('mode', sorted(SUBSETS))
def test_from_retrieval_equals_standalone_call(mode):
    """The training path (one retrieval, handed to the loss) gives the standalone numbers."""
    from densevlm_mm.models.retrieval import retrieve_regions
    g = torch.Generator().manual_seed(5)
    sf, tf = torch.randn(9, 4, generator=g), torch.randn(9, 6, generator=g)
    st, tt = torch.randn(5, 4, generator=g), torch.randn(5, 6, generator=g)
    is_thing = torch.tensor([1, 1, 0, 1, 0]).bool()
    loss = DecoupledAlignLoss(mode=mode, theta=0.2)
    for tau, norm in ((0.5, True), (0.3, False)):
        retrieval = retrieve_regions(tf, tt, is_thing, tau, norm)
        a = loss.from_retrieval(sf, st, retrieval)
        b = loss(sf, tf, st, tt, is_thing, tau=tau, normalize_text=norm)
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
        # the student is scored with the retrieval's tau: another tau gives another loss
        other = dict(retrieval, tau=tau * 2)
        assert not torch.allclose(loss.from_retrieval(sf, st, other)['loss_align'],
                                  a['loss_align'])


@pytest.mark.parametrize('key', ['tau', 'normalize_text'])
def test_retrieval_settings_are_refused_in_the_loss_config(key):
    with pytest.raises(ValueError, match=f'{key}.*target_generator.{key}'):
        DecoupledAlignLoss(**{key: 0.01 if key == 'tau' else False})
