"""``RegionRetriever.forward`` by value: the P-VLM's region features equal its backbone's dense map
pooled over the boxes, and the retrieval (logits, probabilities, confidences, labels, thing flags,
settings) equals the cosine / τ softmax computed here step by step with the retriever's own τ
and text normalisation; no gradient leaves it, and ``inference_mode`` returns ordinary tensors
with the same values, and is really on inside the tower when asked for (mutation testing,
issue 15)."""
import os.path as osp
import warnings

import pytest
import torch
import torch.nn.functional as F

from densevlm_mm.apis.tiny_demo import TEACHER
from densevlm_mm.models.retrieval import RegionRetriever
from densevlm_mm.utils import register_all_modules

register_all_modules(init_default_scope=True)


def _retriever(demo, **kwargs) -> RegionRetriever:
    torch.manual_seed(0)
    backbone = dict(type='DenseVLMBackbone', model_name=TEACHER,
                    pretrained=osp.join(demo, 'checkpoints', 'teacher.pt'))
    return RegionRetriever(backbone, osp.join(demo, 'text', 'teacher_vocabulary.pt'), **kwargs)


@pytest.fixture(scope='module')
def inputs():
    g = torch.Generator().manual_seed(5)
    images = torch.randn(2, 3, 64, 96, generator=g)
    boxes = [torch.tensor([[0., 0., 48., 32.], [16., 8., 96., 64.], [40., 20., 72., 60.]]),
             torch.tensor([[8., 8., 40., 56.], [0., 0., 96., 64.]])]
    return images, boxes


def _reference(retriever, images, boxes, tau, normalize_text):
    bb = retriever.backbone
    with torch.no_grad():
        feats = bb.roi_features(bb.dense_features(images), boxes).float()
    text = retriever.text
    rows = F.normalize(text, dim=-1) if normalize_text else text
    logits = F.normalize(feats, dim=-1) @ rows.t() / tau
    probs = torch.exp(logits - logits.logsumexp(-1, keepdim=True))
    return feats, logits, probs


@pytest.mark.parametrize('tau,normalize_text', [(0.01, True), (0.05, False)])
def test_forward_equals_step_by_step_retrieval(demo, inputs, tau, normalize_text):
    retriever = _retriever(demo, tau=tau, normalize_text=normalize_text)
    images, boxes = inputs
    out = retriever(images, boxes)
    feats, logits, probs = _reference(retriever, images, boxes, tau, normalize_text)
    assert set(out) == {'feats', 'logits', 'probs', 'conf', 'labels', 'region_is_thing', 'text',
                        'class_is_thing', 'tau', 'normalize_text'}
    k, c = 5, len(retriever.class_names)
    assert out['feats'].shape == (k, retriever.backbone.embed_dim)
    assert out['logits'].shape == out['probs'].shape == (k, c)
    torch.testing.assert_close(out['feats'], feats, rtol=0, atol=0)
    torch.testing.assert_close(out['logits'], logits, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out['probs'], probs, rtol=1e-5, atol=1e-6)
    conf, labels = probs.max(-1)
    top2 = probs.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-4  # no near-tie: labels are well defined
    assert torch.equal(out['labels'], labels)
    torch.testing.assert_close(out['conf'], conf, rtol=1e-5, atol=1e-6)
    assert torch.equal(out['region_is_thing'], retriever.class_is_thing[labels])
    assert torch.equal(out['text'], retriever.text)
    assert torch.equal(out['class_is_thing'], retriever.class_is_thing)
    assert (out['tau'], out['normalize_text']) == (tau, normalize_text)
    for key in ('feats', 'logits', 'probs', 'conf'):
        assert out[key].dtype == torch.float32, key


def test_no_gradient_leaves_the_teacher(demo, inputs):
    retriever = _retriever(demo)
    images, boxes = inputs
    images = images.clone().requires_grad_(True)
    # even with the tower's weights trainable, the forward records no graph
    retriever.backbone.requires_grad_(True)
    out = retriever(images, boxes)
    for key in ('feats', 'logits', 'probs', 'conf'):
        assert not out[key].requires_grad and out[key].grad_fn is None, key
    assert torch.is_grad_enabled()  # grad mode restored after the call


def test_fp32_forward_does_not_touch_autocast(demo, inputs):
    """fp32 asks for no autocast at all (an fp32 autocast request warns and is switched off)."""
    retriever = _retriever(demo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        retriever(*inputs)
    assert not [w for w in caught if 'autocast' in str(w.message).lower()]


@pytest.mark.parametrize('inference_mode', [False, True])
def test_inference_mode_returns_ordinary_tensors(demo, inputs, inference_mode):
    retriever = _retriever(demo, inference_mode=inference_mode)
    seen, handles = [], []
    for m in retriever.backbone.modules():
        if isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(lambda mod, args, out: seen.append(
                (torch.is_inference_mode_enabled(), torch.is_grad_enabled()))))
    try:
        out = retriever(*inputs)
    finally:
        for h in handles:
            h.remove()
    # inside the tower: inference mode exactly when asked for, and never a gradient
    assert seen and all(s == (inference_mode, False) for s in seen), seen
    for key in ('feats', 'logits', 'probs', 'conf', 'labels', 'region_is_thing'):
        assert not out[key].is_inference(), key
    # the loss may use the features in an autograd graph
    w = torch.ones(out['feats'].shape[1], requires_grad=True)
    (out['feats'] * w).sum().backward()
    assert w.grad is not None
    assert not torch.is_inference_mode_enabled()
    feats, _, _ = _reference(retriever, *inputs, 0.01, True)
    torch.testing.assert_close(out['feats'], feats, rtol=0, atol=0)


def test_embedding_file_of_another_model_is_refused(demo, tmp_path):
    """The P-VLM checks the file's text tower against its own model name (a file made with the
    student's, or another model's, text tower would retrieve in the wrong space)."""
    src = torch.load(osp.join(demo, 'text', 'teacher_vocabulary.pt'),
                     map_location='cpu', weights_only=True)
    backbone = dict(type='DenseVLMBackbone', model_name=TEACHER,
                    pretrained=osp.join(demo, 'checkpoints', 'teacher.pt'))
    other = tmp_path / 'other.pt'
    torch.save(dict(src, model_name='another-model'), other)
    with pytest.raises(ValueError, match=rf"text tower of 'another-model'.*{TEACHER}"):
        RegionRetriever(backbone, str(other))
    same = tmp_path / 'same.pt'
    torch.save(dict(src, model_name=TEACHER), same)
    assert RegionRetriever(backbone, str(same)).class_names == list(src['class_names'])


class _NamelessBackbone(torch.nn.Module):
    """A duck-typed P-VLM backbone without ``model_name`` (e.g. a user's own tower)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.embed_dim = inner.embed_dim

    def dense_features(self, images):
        return self.inner.dense_features(images)

    def roi_features(self, dense, boxes):
        return self.inner.roi_features(dense, boxes)


def test_backbone_without_a_model_name_skips_the_model_check(demo, inputs, tmp_path):
    named = _retriever(demo)
    src = torch.load(osp.join(demo, 'text', 'teacher_vocabulary.pt'), map_location='cpu',
                     weights_only=True)
    other = tmp_path / 'other.pt'
    torch.save(dict(src, model_name='another-model'), other)
    retriever = RegionRetriever(_NamelessBackbone(named.backbone), str(other))
    images, boxes = inputs
    torch.testing.assert_close(retriever(images, boxes)['logits'], named(images, boxes)['logits'])
