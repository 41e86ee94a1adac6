"""``DenseVLM`` construction and dispatch checked at their boundaries: the default data
preprocessor, ``init_cfg``, ``eval_topk`` bounds and its message, the student / head / P-VLM /
evaluation embedding consistency checks (dimension, text tower, class list), the evaluation text
buffer (unit rows, not in checkpoints), and ``forward``'s modes ('tensor' by default, 'loss',
'predict', anything else rejected)."""
import copy
import os.path as osp
import re

import numpy as np
import pytest
import torch
from torch import nn

from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
from densevlm_mm.models.algorithms.densevlm import DenseVLM
from densevlm_mm.models.data_preprocessor import DenseVLMDataPreprocessor
from densevlm_mm.registry import MODELS
from densevlm_mm.utils import register_all_modules

register_all_modules(init_default_scope=True)


@pytest.fixture(scope='module')
def parts(demo):
    """Config and built parts of the tiny demo, shared (built once) by the tests."""
    cfg = copy.deepcopy(load_tiny_demo_config(demo).model.to_dict())
    torch.manual_seed(0)
    return dict(cfg=cfg, root=demo,
                backbone=MODELS.build(cfg['backbone']),
                head=MODELS.build(cfg['head']),
                target_generator=MODELS.build(cfg['target_generator']),
                student_text=osp.join(demo, 'text', 'student_vocabulary.pt'),
                teacher_text=osp.join(demo, 'text', 'teacher_vocabulary.pt'),
                vocabulary=cfg['head']['vocabulary'])


def _model(parts, **kwargs) -> DenseVLM:
    """DenseVLM around the shared student backbone (other parts as given)."""
    kwargs.setdefault('backbone', parts['backbone'])
    return DenseVLM(**kwargs)


def _embedding_file(parts, tmp_path, name, **changes) -> str:
    """A copy of the student embedding file with fields changed (``None`` removes one)."""
    obj = torch.load(parts['student_text'], map_location='cpu', weights_only=True)
    for key, value in changes.items():
        if value is None:
            obj.pop(key)
        else:
            obj[key] = value
    path = str(tmp_path / name)
    torch.save(obj, path)
    return path


def _head(parts, text_embeddings, **kwargs) -> nn.Module:
    cfg = copy.deepcopy(parts['cfg']['head'])
    cfg.update(text_embeddings=text_embeddings, **kwargs)
    return MODELS.build(cfg)


class _DimHead(nn.Module):
    """A head that reports only its embedding dimension (no embedding file attribute)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim


class _PlainBackbone(nn.Module):
    """A student without an open_clip model name (embeds into ``embed_dim``)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.proj = nn.Linear(3, embed_dim)


# ------------------------------------------------------------------ defaults and plain settings
def test_defaults_data_preprocessor_and_init_cfg(parts):
    model = _model(parts)
    assert isinstance(model.data_preprocessor, DenseVLMDataPreprocessor)
    assert model.eval_topk == 5  # the spec's top-5 accuracy
    assert model.eval_class_names is None and not hasattr(model, 'eval_text')
    assert not model.with_head and not model.with_target_generator
    # a given preprocessor and init_cfg are kept
    pre = DenseVLMDataPreprocessor()
    init_cfg = dict(type='Pretrained', checkpoint='student.pth')
    model = _model(parts, data_preprocessor=pre, init_cfg=init_cfg)
    assert model.data_preprocessor is pre
    assert model.init_cfg == init_cfg


@pytest.mark.parametrize('topk', [1, 2, 7])
def test_eval_topk_accepts_from_one(parts, topk):
    assert _model(parts, eval_topk=topk).eval_topk == topk


@pytest.mark.parametrize('topk', [0, -1, 2.5, '5', True])
def test_eval_topk_rejects_below_one_and_non_integers(parts, topk):
    with pytest.raises(ValueError,
                       match=r'^DenseVLM: eval_topk must be an integer in .*, e\.g\. eval_topk=5\.$'):
        _model(parts, eval_topk=topk)


# -------------------------------------------------------------- the student head's embeddings
def test_head_dimension_mismatch_names_the_file(parts, tmp_path):
    path = parts['teacher_text']  # the P-VLM's file: another dimension
    with pytest.raises(ValueError, match=r'\(' + re.escape(path) + r'\) are \d+-d'):
        _model(parts, head=_head(parts, path))


def test_head_dimension_mismatch_names_the_noun_file(parts, tmp_path):
    nouns = str(tmp_path / 'nouns.npy')
    np.save(nouns, np.random.RandomState(0).randn(4, parts['backbone'].embed_dim + 1))
    head = MODELS.build(dict(type='RegionCLIPHead', noun_embeddings=nouns))
    with pytest.raises(ValueError, match=r'\(' + re.escape(nouns) + r'\) are \d+-d'):
        _model(parts, head=head)
    # the same head at the student's dimension is accepted (it records no text model)
    np.save(nouns, np.random.RandomState(0).randn(4, parts['backbone'].embed_dim))
    head = MODELS.build(dict(type='RegionCLIPHead', noun_embeddings=nouns))
    assert _model(parts, head=head).head is head


def test_head_without_file_or_dimension(parts):
    dim = parts['backbone'].embed_dim
    with pytest.raises(ValueError, match=r'\(the class embeddings\) are 7-d'):
        _model(parts, head=_DimHead(7))
    assert isinstance(_model(parts, head=_DimHead(dim)).head, _DimHead)
    plain = nn.Linear(dim, dim)  # no embed_dim, no text model: nothing to check
    assert _model(parts, head=plain).head is plain


def test_head_text_tower_must_be_the_students(parts, tmp_path):
    other = _embedding_file(parts, tmp_path, 'other.pt', model_name='another-clip')
    with pytest.raises(ValueError, match="made with the text tower of 'another-clip'"):
        _model(parts, head=_head(parts, other))
    # files without a recorded model are accepted
    unknown = _embedding_file(parts, tmp_path, 'unknown.pt', model_name=None)
    assert _model(parts, head=_head(parts, unknown)).head.text_model_name == 'unknown'
    npy = str(tmp_path / 'student.npy')
    rows = torch.load(parts['student_text'], weights_only=True)['embeddings']
    np.save(npy, rows.numpy())
    head = _head(parts, npy, vocabulary=parts['vocabulary'])
    assert _model(parts, head=head).head.text_model_name == 'unknown (.npy)'
    # a student without a model name cannot be checked: accepted
    plain = _PlainBackbone(parts['backbone'].embed_dim)
    assert _model(parts, backbone=plain, head=_head(parts, other)).backbone is plain


def test_head_and_retriever_must_share_the_class_list(parts):
    model = _model(parts, head=parts['head'], target_generator=parts['target_generator'])
    assert model.head.class_names == model.target_generator.class_names
    # a target generator that lists no classes does not match the head
    with pytest.raises(ValueError, match='list different classes'):
        _model(parts, head=parts['head'], target_generator=nn.Linear(1, 1))


# ----------------------------------------------------------------- evaluation text embeddings
def test_eval_text_is_unit_rows_and_not_saved(parts, tmp_path):
    # rows scaled away from unit norm: the buffer holds the L2-normalised rows
    obj = torch.load(parts['student_text'], weights_only=True)
    scale = torch.arange(1, len(obj['class_names']) + 1, dtype=torch.float32)[:, None]
    path = _embedding_file(parts, tmp_path, 'scaled.pt', embeddings=obj['embeddings'] * scale)
    model = _model(parts, eval_text_embeddings=path)
    assert model.eval_class_names == list(obj['class_names'])
    rows = obj['embeddings'].float()
    expected = rows / rows.norm(dim=1, keepdim=True)
    assert model.eval_text.dtype == torch.float32
    torch.testing.assert_close(model.eval_text, expected)
    torch.testing.assert_close(model.eval_text.norm(dim=1), torch.ones(len(rows)))
    assert not any(k.endswith('eval_text') for k in model.state_dict())


def test_eval_text_must_match_the_student(parts, tmp_path):
    with pytest.raises(ValueError, match='dimensions'):
        _model(parts, eval_text_embeddings=parts['teacher_text'])
    other = _embedding_file(parts, tmp_path, 'other.pt', model_name='another-clip')
    with pytest.raises(ValueError, match="made with the text tower of 'another-clip'"):
        _model(parts, eval_text_embeddings=other)
    plain = _PlainBackbone(parts['backbone'].embed_dim)
    model = _model(parts, backbone=plain, eval_text_embeddings=other)
    assert model.eval_text.shape == (8, plain.embed_dim)


# ----------------------------------------------------------------------------------- forward
def test_forward_modes(parts):
    model = _model(parts).eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        default = model(images)
        tensor = model(images, mode='tensor')
        direct = model.backbone(images)
    assert len(default) == len(direct) >= 1
    for a, b, c in zip(default, tensor, direct):
        assert torch.equal(a, c) and torch.equal(b, c)
    for mode in ('TENSOR', 'features', 'Predict'):
        with pytest.raises(RuntimeError, match='Invalid mode'):
            model(images, mode=mode)
    # 'predict' and 'loss' reach their methods (here: missing parts are reported)
    with pytest.raises(RuntimeError, match='eval_text_embeddings'):
        model(images, [], mode='predict')
    with pytest.raises(RuntimeError, match='needs a head and a target_generator'):
        model(images, [], mode='loss')


def test_loss_needs_both_head_and_target_generator(parts):
    images = torch.zeros(1, 3, 64, 64)
    for kwargs in (dict(head=parts['head']), dict(target_generator=parts['target_generator'])):
        model = _model(parts, **kwargs)
        with pytest.raises(RuntimeError, match='needs a head and a target_generator'):
            model(images, [], mode='loss')
