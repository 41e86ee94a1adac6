"""F-ViT box head values against independent computations (spec §8.2).

The classifier is ``T_det · normalize(x) · E`` over the L2-normalised class rows plus a background
column (the file's background row, CLIPSelf's default / zero / learned); the training loss is
softmax CE without the novel columns, weighted 1 (base) / 0 (novel) / ``bg_weight``
(background); at test time the detector and VLM probabilities are ensembled ``s^(1-λ) · v^λ`` (``λ = α`` base and background,
``β`` novel) and used as probabilities, boxes decoded with DeltaXYWH (stds 0.1, 0.1, 0.2, 0.2).
Everything here is recomputed by hand (numpy / functional ops) or with mmdet's own
``ConvFCBBoxHead.forward`` on tiny heads (4-d embeddings, 8-channel 2x2 RoI features).
"""
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict

EMB = torch.tensor([[2., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 3., 1.]])  # a, b, c (not unit)
BG = torch.tensor([1., 1., 0., 0.])  # the file's background row (not unit)
NAMES = ['a', 'b', 'c']
STDS = [0.1, 0.1, 0.2, 0.2]


def _save(path, emb, names, background=None):
    from densevlm_mm.text_embeddings import TextEmbeddings
    TextEmbeddings(emb, list(names), torch.ones(len(names), dtype=torch.bool), model_name='x',
                   normalized=False, background=background).save(str(path))
    return str(path)


@pytest.fixture()
def emb_file(tmp_path):
    """Three classes and the background row, as tools/text_embeddings.py writes."""
    return _save(tmp_path / 'abc.pt', EMB, NAMES, background=BG)


@pytest.fixture()
def old_file(tmp_path):
    """The same classes without a background row (files written before it was added)."""
    return _save(tmp_path / 'old.pt', EMB, NAMES)


def _head(path, **kw):
    from mmengine.registry import DefaultScope

    from densevlm_mm.models.detectors import FViTBBoxHead
    args = dict(in_channels=8, roi_feat_size=2, num_classes=3, num_shared_convs=0,
                num_shared_fcs=1, num_cls_fcs=1, num_reg_fcs=1, fc_out_channels=4,
                reg_class_agnostic=True, text_embeddings=path, base_classes=['a', 'c'],
                bbox_coder=dict(type='mmdet.DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                target_stds=STDS),
                loss_bbox=dict(type='mmdet.L1Loss', loss_weight=1.0))
    args.update(kw)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return FViTBBoxHead(**args)


def _classifier(path, **kw):
    from densevlm_mm.models.detectors.fvit_bbox_head import TextEmbeddingClassifier
    args = dict(in_features=4, out_features=4, text_embeddings=path)
    args.update(kw)
    return TextEmbeddingClassifier(**args)


def _unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)  # as F.normalize


def _softmax(z):
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _randomize(module, seed=0):
    """Random weights and biases (the temperature stays at its initial 50)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.endswith('temperature'):
                p.normal_(0, 0.5)


# ------------------------------------------------------------------------------ classifier
def test_classifier_default_is_the_files_background_row(emb_file):
    """CLIPSelf's F-ViT (``learn_bg=False``): the columns are the normalised class rows and the
    normalised background row of the file, all fixed."""
    cls = _classifier(emb_file)
    assert cls.background == 'embedding' and cls.class_names == NAMES
    assert cls.embedding_model == 'x'
    expect = np.concatenate([_unit(EMB.numpy()).T, _unit(BG.numpy())[:, None]], axis=1)
    np.testing.assert_allclose(cls.embeddings.numpy(), expect, atol=1e-7)
    assert set(dict(cls.named_buffers())) >= {'bg_embedding', 'class_embeddings'}
    assert not any('embedding' in n for n, _ in cls.named_parameters())
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    np.testing.assert_allclose(cls(x).detach().numpy(), 50.0 * _unit(x.numpy()) @ expect,
                               rtol=1e-5, atol=1e-5)


def test_classifier_zero_background_and_learnable_temperature_50(emb_file):
    """Spec: column-normalised class embeddings, T_det learnable, initialised 50."""
    cls = _classifier(emb_file, background='zero')
    assert cls.background == 'zero' and cls.class_names == NAMES
    assert cls.in_features == 4 and cls.text_embeddings == emb_file
    assert isinstance(cls.temperature, torch.nn.Parameter) and cls.temperature.requires_grad
    assert float(cls.temperature.detach()) == 50.0
    expect = np.concatenate([_unit(EMB.numpy()).T, np.zeros((4, 1))], axis=1)  # [D, C+1]
    np.testing.assert_allclose(cls.embeddings.detach().numpy(), expect, atol=1e-7)
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    np.testing.assert_allclose(cls.cosine(x).detach().numpy(), _unit(x.numpy()) @ expect,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cls(x).detach().numpy(), 50.0 * _unit(x.numpy()) @ expect,
                               rtol=1e-5, atol=1e-5)
    # the zero column is a buffer (not trained), the class rows too
    assert 'bg_embedding' in dict(cls.named_buffers())
    assert 'class_embeddings' in dict(cls.named_buffers())


def test_classifier_keeps_leading_dims_and_dtype(emb_file):
    """Like the ``nn.Linear`` it replaces: any leading dims, the input's dtype."""
    cls = _classifier(emb_file, background='zero')
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    out = cls(x)
    assert out.shape == (2, 3, 4) and out.dtype == torch.float64
    e = np.concatenate([_unit(EMB.numpy()).T, np.zeros((4, 1))], axis=1)
    np.testing.assert_allclose(out.detach().numpy(), 50.0 * _unit(x.numpy()) @ e, rtol=1e-6)
    np.testing.assert_allclose(cls.cosine(x).detach().numpy(), _unit(x.numpy()) @ e, rtol=1e-6)


@pytest.mark.parametrize('learn', [True, False])
def test_classifier_temperature_argument(emb_file, learn):
    cls = _classifier(emb_file, temperature=20.0, learn_temperature=learn, background='zero')
    assert isinstance(cls.temperature, torch.nn.Parameter) == learn
    assert ('temperature' in dict(cls.named_buffers())) == (not learn)
    x = torch.tensor([[1., 2., 0., -1.]])
    expect = 20.0 * _unit(x.numpy()) @ np.concatenate([_unit(EMB.numpy()).T, np.zeros((4, 1))], 1)
    np.testing.assert_allclose(cls(x).detach().numpy(), expect, rtol=1e-5, atol=1e-5)


def test_classifier_learned_background_starts_at_the_files_row(emb_file):
    """CLIPSelf's ``learn_bg=True``: a parameter initialised to the file's background row,
    re-normalised when used."""
    cls = _classifier(emb_file, background='learned')
    assert isinstance(cls.bg_embedding, torch.nn.Parameter)
    np.testing.assert_allclose(cls.embeddings[:, -1].detach().numpy(), _unit(BG.numpy()),
                               atol=1e-7)
    with torch.no_grad():
        cls.bg_embedding.add_(torch.tensor([[0.], [0.], [1.], [0.]]))
    np.testing.assert_allclose(cls.embeddings[:, -1].detach().numpy(),
                               _unit(_unit(BG.numpy()) + [0, 0, 1, 0]), atol=1e-6)


def test_classifier_learned_background_starts_at_the_negative_mean(old_file):
    """A file without the row: the normalised negative mean of the class rows."""
    cls = _classifier(old_file, background='learned')
    assert isinstance(cls.bg_embedding, torch.nn.Parameter)
    assert cls.bg_embedding.shape == (4, 1)
    expect = _unit(-_unit(EMB.numpy()).mean(0))
    np.testing.assert_allclose(cls.embeddings[:, -1].detach().numpy(), expect, atol=1e-6)
    # the learned vector is re-normalised when used
    with torch.no_grad():
        cls.bg_embedding.mul_(3.0)
    np.testing.assert_allclose(cls.embeddings[:, -1].detach().numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(cls.embeddings[:, :3].detach().numpy(), _unit(EMB.numpy()).T,
                               atol=1e-7)


def test_classifier_background_row_of_the_file(tmp_path):
    """``background='embedding'``: the file's background row (anywhere in the file) is the fixed
    last column; the other rows keep their order."""
    rows = torch.tensor([[2., 0., 0., 0.], [1., 1., 1., 1.], [0., 1., 0., 0.], [0., 0., 3., 1.]])
    path = _save(tmp_path / 'bg.pt', rows, ['a', 'background', 'b', 'c'])
    cls = _classifier(path, background='embedding', class_names=NAMES)
    assert cls.class_names == NAMES
    assert 'bg_embedding' in dict(cls.named_buffers())
    expect = np.concatenate([_unit(EMB.numpy()).T, _unit(rows[1].numpy())[:, None]], axis=1)
    np.testing.assert_allclose(cls.embeddings.numpy(), expect, atol=1e-7)
    # the head built on that file has 3 classes (background is not one of them)
    head = _head(path, background='embedding', class_names=NAMES)
    assert head.class_names == NAMES
    assert head.loss_cls.class_weight == [1.0, 0.0, 1.0, 1.0]
    # a background class with another background mode is refused, as is a file without one
    with pytest.raises(ValueError, match="has a 'background' class"):
        _classifier(path, background='zero')
    with pytest.raises(ValueError, match="has a 'background' class"):
        _classifier(path, background='learned')


def test_file_without_a_background_row(old_file):
    """``background='embedding'`` (the default) refuses it, naming the file, the model, the
    command that rewrites it and the other choices; ``'zero'`` / ``'learned'`` accept it."""
    for build in (_classifier, lambda p, **k: _head(p, **k)):
        with pytest.raises(ValueError) as err:
            build(old_file, class_names='ovcoco_65_all' if build is _classifier else NAMES)
        msg = str(err.value)
        assert repr(old_file) in msg and 'no background row' in msg
        assert "background='zero'" in msg and "'learned'" in msg
        assert 'python tools/text_embeddings.py x CHECKPOINT' in msg and old_file in msg
    with pytest.raises(ValueError, match='text_embeddings.py x CHECKPOINT ovcoco_65_all '):
        _classifier(old_file, class_names='ovcoco_65_all')
    assert _classifier(old_file, background='zero').background == 'zero'
    assert _head(old_file, background='learned').fc_cls.background == 'learned'


def test_classifier_rejects_bad_arguments(emb_file):
    with pytest.raises(ValueError, match="background must be"):
        _classifier(emb_file, background='none')
    with pytest.raises(ValueError, match='num_classes=4'):
        _classifier(emb_file, out_features=5)
    with pytest.raises(ValueError, match='num_classes=2'):
        _classifier(emb_file, out_features=3)
    _classifier(emb_file, out_features=4)


@pytest.mark.parametrize('expected,msg', [
    (['a', 'x', 'c'], r"class 1 is 'b' in the file but 'x' in the detector classes \(3 classes "
                      r"in the file, 3 in the detector classes\)"),
    (['a', 'b'], r"class 2 is 'c' in the file but missing in the detector classes \(3 classes in "
                 r"the file, 2 in the detector classes\)"),
    (['a', 'b', 'c', 'd'], r"class 3 is missing in the file but 'd' in the detector classes \(3 "
                           r"classes in the file, 4 in the detector classes\)"),
    (['z', 'b', 'c'], r"class 0 is 'a' in the file but 'z' in the detector classes"),
])
def test_class_list_mismatch_names_the_first_difference(emb_file, expected, msg):
    from densevlm_mm.models.detectors.fvit_bbox_head import check_class_names
    with pytest.raises(ValueError, match=msg):
        check_class_names(expected, NAMES, emb_file)
    with pytest.raises(ValueError, match=msg):
        _classifier(emb_file, class_names=expected)
    with pytest.raises(ValueError, match=msg):
        _head(emb_file, class_names=expected)
    check_class_names(None, NAMES, emb_file)
    check_class_names(('a', 'b', 'c'), NAMES, emb_file)
    # the message names the embedding file
    for build in (_classifier, _head):
        with pytest.raises(ValueError, match=re.escape(repr(emb_file))):
            build(emb_file, class_names=expected)


def test_class_list_is_checked_before_the_split_and_size(emb_file):
    """A file for other classes is reported as such, before the base classes or ``num_classes``
    are compared with it."""
    with pytest.raises(ValueError, match=r"class 3 is missing in the file but 'd'"):
        _head(emb_file, class_names=['a', 'b', 'c', 'd'], num_classes=4)
    with pytest.raises(ValueError, match=r"class 2 is 'c' in the file but 'x'"):
        _head(emb_file, class_names=['a', 'b', 'x'], base_classes=['a', 'x'])


def test_class_names_from_a_json_file(emb_file, tmp_path):
    good = tmp_path / 'good.json'
    good.write_text(json.dumps([dict(name=n) for n in NAMES]))
    assert _classifier(emb_file, class_names=str(good)).class_names == NAMES
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(['a', 'c', 'b']))
    with pytest.raises(ValueError, match=r"class 1 is 'b' in the file but 'c'"):
        _classifier(emb_file, class_names=str(bad))
    base = tmp_path / 'base.json'
    base.write_text(json.dumps(['b']))
    assert _head(emb_file, base_classes=str(base)).novel_mask.tolist() == [True, False, True,
                                                                           False]


# ----------------------------------------------------------------------------- head set-up
def test_head_defaults_are_the_ov_coco_values(emb_file):
    """Spec §8.2: T_vlm 75, α 0.1, β 0.8 (OV-COCO), ReLU kept before the normalisation, T_det
    learnable from 50, the file's background row; without ``bg_weight`` background CE weight 1."""
    head = _head(emb_file)
    assert head.vlm_temperature == 75.0 and head.alpha == 0.1 and head.beta == 0.8
    assert isinstance(head.vlm_temperature, float) and isinstance(head.alpha, float)
    assert isinstance(head.beta, float)
    assert head.cls_relu is True
    assert head.fc_cls.background == 'embedding'
    assert isinstance(head.fc_cls.temperature, torch.nn.Parameter)
    assert float(head.fc_cls.temperature.detach()) == 50.0
    assert head.loss_cls.class_weight == [1.0, 0.0, 1.0, 1.0]
    assert head.loss_cls.use_sigmoid is False and head.loss_cls.loss_weight == 1.0
    assert head.class_names == NAMES
    # background counts as base: only b is novel
    assert head.novel_mask.tolist() == [False, True, False, False]
    assert head.train_mask.tolist() == [True, False, True, True]
    assert 'train_mask' not in head.state_dict()  # derived from the split, not a weight


def test_head_arguments_reach_the_classifier_and_ensemble(emb_file):
    head = _head(emb_file, background='learned', temperature=30, learn_temperature=False,
                 vlm_temperature=50, alpha=0.2, beta=0.6, bg_weight=0.9, class_names=NAMES)
    assert head.fc_cls.background == 'learned'
    assert not isinstance(head.fc_cls.temperature, torch.nn.Parameter)
    assert float(head.fc_cls.temperature) == 30.0
    assert (head.vlm_temperature, head.alpha, head.beta) == (50.0, 0.2, 0.6)
    assert head.loss_cls.class_weight == [1.0, 0.0, 1.0, 0.9]


def test_positional_conv_fc_arguments_reach_mmdet(emb_file):
    """``ConvFCBBoxHead``'s positional arguments (num_shared_convs, num_shared_fcs, ...) pass
    through."""
    from mmengine.registry import DefaultScope

    from densevlm_mm.models.detectors import FViTBBoxHead
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = FViTBBoxHead(0, 2, 0, 1, 0, 1, in_channels=8, roi_feat_size=2, num_classes=3,
                            fc_out_channels=4, text_embeddings=emb_file,
                            loss_bbox=dict(type='mmdet.L1Loss'))
    assert (head.num_shared_fcs, head.num_cls_fcs, head.num_reg_fcs) == (2, 1, 1)
    assert len(head.shared_fcs) == 2


def test_all_classes_are_base_without_a_split(emb_file):
    head = _head(emb_file, base_classes=None, bg_weight=0.6)
    assert head.novel_mask.tolist() == [False] * 4
    assert head.loss_cls.class_weight == [1.0, 1.0, 1.0, 0.6]
    with pytest.raises(ValueError, match=r"base_classes \['x'\] are not classes"):
        _head(emb_file, base_classes=['a', 'x'])


def test_default_num_classes_is_80(tmp_path):
    """mmdet's default ``num_classes`` (80): an 80-class file needs no ``num_classes``."""
    names = [f'c{i}' for i in range(80)]
    torch.manual_seed(0)
    path = _save(tmp_path / 'eighty.pt', torch.randn(80, 4), names, background=BG)
    args = dict(in_channels=8, roi_feat_size=2, num_shared_fcs=1, num_cls_fcs=1, num_reg_fcs=1,
                fc_out_channels=4, reg_class_agnostic=True, text_embeddings=path,
                base_classes=names[:60], loss_bbox=dict(type='mmdet.L1Loss'))
    from mmengine.registry import DefaultScope

    from densevlm_mm.models.detectors import FViTBBoxHead
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = FViTBBoxHead(**args)
    assert head.num_classes == 80
    assert head.loss_cls.class_weight == [1.0] * 60 + [0.0] * 20 + [1.0]


def test_loss_cls_options(emb_file):
    # a softmax loss given without use_sigmoid: accepted, its weight kept, class weights filled
    head = _head(emb_file, loss_cls=dict(type='mmdet.CrossEntropyLoss', loss_weight=2.0),
                 bg_weight=0.5)
    assert head.loss_cls.class_weight == [1.0, 0.0, 1.0, 0.5] and head.loss_cls.loss_weight == 2.0
    # own class weights of the right length are kept
    own = [0.5, 0.0, 2.0, 0.25]
    head = _head(emb_file, loss_cls=dict(type='mmdet.CrossEntropyLoss', class_weight=own))
    assert head.loss_cls.class_weight == own
    with pytest.raises(ValueError, match='expected num_classes \\+ 1 = 4'):
        _head(emb_file, loss_cls=dict(type='mmdet.CrossEntropyLoss', class_weight=[1.0] * 3))
    with pytest.raises(ValueError, match='expected num_classes \\+ 1 = 4'):
        _head(emb_file, loss_cls=dict(type='mmdet.CrossEntropyLoss', class_weight=[1.0] * 5))
    with pytest.raises(ValueError, match='softmax loss_cls'):
        _head(emb_file, loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True))
    # the caller's dict is not modified
    cfg = dict(type='mmdet.CrossEntropyLoss')
    _head(emb_file, loss_cls=cfg)
    assert cfg == dict(type='mmdet.CrossEntropyLoss')


def test_head_rejects_a_file_of_another_size_or_dim(emb_file):
    with pytest.raises(ValueError, match='num_classes=3'):
        _head(emb_file, num_classes=4)
    with pytest.raises(ValueError, match='holds 4-d embeddings .* gives 6-d features'):
        _head(emb_file, fc_out_channels=6)


# --------------------------------------------------------------------------------- forward
@pytest.mark.parametrize('layout', [
    dict(num_shared_convs=1, num_shared_fcs=2, num_cls_fcs=1, num_reg_fcs=1),
    dict(num_shared_convs=1, num_shared_fcs=1, num_cls_fcs=1, num_reg_fcs=1, with_avg_pool=True),
    dict(num_shared_fcs=0, num_cls_convs=1, num_cls_fcs=1, num_reg_convs=1, num_reg_fcs=1),
    dict(num_shared_fcs=0, num_cls_convs=1, num_cls_fcs=1, num_reg_convs=2, num_reg_fcs=1,
         with_avg_pool=True),
    dict(num_shared_fcs=0, num_cls_fcs=1, num_reg_fcs=0),
], ids=['convs_fcs', 'avg_pool', 'branch_convs', 'branch_convs_avg_pool', 'no_reg_fc'])
def test_forward_equals_mmdet_conv_fc_head_with_relu(emb_file, layout):
    """With the reference's ReLU kept, the trunk is mmdet's ``ConvFCBBoxHead``: same outputs."""
    from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
    kw = dict(num_shared_convs=0, num_cls_convs=0, num_reg_convs=0, conv_out_channels=6)
    kw.update(layout)
    head = _head(emb_file, **kw).eval()
    _randomize(head)
    torch.manual_seed(1)
    x = torch.randn(3, 8, 2, 2)
    with torch.no_grad():
        cls, box = head(x)
        ref_cls, ref_box = ConvFCBBoxHead.forward(head, x)
    assert cls.shape == (3, 4) and box.shape == (3, 4)
    torch.testing.assert_close(cls, ref_cls)
    torch.testing.assert_close(box, ref_box)


def test_forward_values_by_hand_with_and_without_the_cls_relu(emb_file):
    """Shared 3x3 conv + ReLU, shared fc + ReLU, two cls fcs (ReLU after the first; after the
    last only with ``cls_relu``), cosine x 50 against the normalised rows and a zero column; the
    box branch fc + ReLU then the linear regressor."""
    head = _head(emb_file, num_shared_convs=1, conv_out_channels=6, num_shared_fcs=1,
                 num_cls_fcs=2, num_reg_fcs=1, background='zero').eval()
    _randomize(head, seed=3)
    torch.manual_seed(2)
    x = torch.randn(4, 8, 2, 2)
    conv = head.shared_convs[0].conv
    with torch.no_grad():
        h = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1)).flatten(1)
        h = F.relu(F.linear(h, head.shared_fcs[0].weight, head.shared_fcs[0].bias))
        c1 = F.relu(F.linear(h, head.cls_fcs[0].weight, head.cls_fcs[0].bias))
        c2 = F.linear(c1, head.cls_fcs[1].weight, head.cls_fcs[1].bias).numpy()
        r = F.relu(F.linear(h, head.reg_fcs[0].weight, head.reg_fcs[0].bias))
        box = F.linear(r, head.fc_reg.weight, head.fc_reg.bias)
        e = np.concatenate([_unit(EMB.numpy()).T, np.zeros((4, 1))], axis=1)
        for relu in (True, False):
            head.cls_relu = relu
            cls, pred = head(x)
            c = np.maximum(c2, 0) if relu else c2
            np.testing.assert_allclose(cls.numpy(), 50.0 * _unit(c) @ e, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(pred, box)


def test_forward_without_box_regression(emb_file):
    head = _head(emb_file, with_reg=False, num_reg_fcs=0).eval()
    cls, box = head(torch.randn(2, 8, 2, 2))
    assert box is None and cls.shape == (2, 4)


# ------------------------------------------------------------------------------------ loss
def test_loss_values_by_hand(emb_file):
    """Softmax CE over the base and background columns only, weight of the target's class, mean
    over the label weights; the box L1 on the positive samples."""
    head = _head(emb_file, bg_weight=0.6)
    logits = torch.tensor([[2.0, 5.0, 0.5, 1.0], [0.1, 3.0, 0.2, 0.4], [1.0, 9.0, 2.0, 0.0]])
    labels = torch.tensor([2, 3, 0])
    z = logits.numpy().astype(np.float64)[:, [0, 2, 3]]
    lsm = z - np.log(np.exp(z).sum(1, keepdims=True))
    ce = -(lsm[0, 1] * 1.0 + lsm[1, 2] * 0.6 + lsm[2, 0] * 1.0) / 3
    pred = torch.tensor([[0.1, -0.2, 0.3, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.5, 0.0, -0.5]])
    targets = torch.tensor([[0.0, 0.0, 0.1, 0.1], [0., 0., 0., 0.], [0.5, 0.5, 0.0, 0.0]])
    weights = torch.tensor([[1.] * 4, [0.] * 4, [1.] * 4])
    rois = torch.zeros(3, 5)
    out = head.loss(logits, pred, rois, labels, torch.ones(3), targets, weights)
    assert out['loss_cls'].item() == pytest.approx(ce, rel=1e-5)
    l1 = (np.abs(pred[[0, 2]].numpy() - targets[[0, 2]].numpy())).sum() / 3
    assert out['loss_bbox'].item() == pytest.approx(l1, rel=1e-5)
    # without classification scores only the box loss is computed
    out = head.loss(None, pred, rois, labels, torch.ones(3), targets, weights)
    assert 'loss_cls' not in out
    assert out['loss_bbox'].item() == pytest.approx(l1, rel=1e-5)
    # a single RoI: the novel column is out of its softmax too
    one = head.loss(logits[2:], None, None, labels[2:], torch.ones(1), None, None)
    assert one['loss_cls'].item() == pytest.approx(-lsm[2, 0], rel=1e-5)
    # no RoIs: nothing to check against the split
    head.loss(torch.zeros(0, 4), torch.zeros(0, 4), torch.zeros(0, 5),
              torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, 4),
              torch.zeros(0, 4))


def test_loss_per_sample_and_on_decoded_boxes(emb_file):
    """``reduction_override='none'``: per-RoI weighted CE; ``reg_decoded_bbox``: the L1 between
    the boxes decoded from the RoIs and the target boxes."""
    head = _head(emb_file, bg_weight=0.6, reg_decoded_bbox=True)
    logits = torch.tensor([[2.0, 5.0, 0.5, 1.0], [0.1, 3.0, 0.2, 0.4]])
    labels = torch.tensor([2, 3])
    z = logits.numpy().astype(np.float64)[:, [0, 2, 3]]
    lsm = z - np.log(np.exp(z).sum(1, keepdims=True))
    rois = torch.tensor([[0., 10., 10., 30., 40.], [0., 0., 0., 8., 8.]])
    pred = torch.tensor([[0.5, -0.5, 0.2, 0.1], [0., 0., 0., 0.]])
    targets = torch.tensor([[12., 8., 33., 41.], [0., 0., 0., 0.]])
    weights = torch.tensor([[1.] * 4, [0.] * 4])
    out = head.loss(logits, pred, rois, labels, torch.tensor([1.0, 0.5]), targets, weights,
                    reduction_override='none')
    np.testing.assert_allclose(out['loss_cls'].numpy(), [-lsm[0, 1], -0.5 * 0.6 * lsm[1, 2]],
                               rtol=1e-5)
    box = _decode([10., 10., 30., 40.], [0.5, -0.5, 0.2, 0.1], None)
    np.testing.assert_allclose(out['loss_bbox'].numpy(), np.abs(box - targets[0].numpy())[None],
                               rtol=1e-5)
    out = head.loss(logits, pred, rois, labels, torch.ones(2), targets, weights)
    assert out['loss_bbox'].item() == pytest.approx(np.abs(box - targets[0].numpy()).sum() / 2,
                                                    rel=1e-5)


def test_loss_names_the_novel_targets(emb_file):
    head = _head(emb_file, base_classes=['a'])
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"novel classes \['b', 'c'\]"):
        head.loss(logits, None, None, torch.tensor([2, 1, 0]), torch.ones(3), None, None)
    with pytest.raises(ValueError, match=r"novel classes \['c'\]"):
        head.loss(logits, None, None, torch.tensor([3, 2, 3]), torch.ones(3), None, None)
    head.loss(logits, None, None, torch.tensor([0, 3, 0]), torch.ones(3), None, None)


# ------------------------------------------------------------------------------ test time
def test_region_probs_by_hand(emb_file):
    """``softmax(cls_score)`` alone; with VLM features the per-column geometric ensemble."""
    head = _head(emb_file, vlm_temperature=40.0, alpha=0.25, beta=0.6, background='zero')
    score = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 3.0, 1.0, -2.0]])
    s = _softmax(score.numpy().astype(np.float64))
    np.testing.assert_allclose(head.region_probs(score, None).numpy(), s, rtol=1e-6)
    vlm = torch.tensor([[1.0, 0.5, -0.5, 0.2], [0.0, 2.0, 1.0, 1.0]])
    e = np.concatenate([_unit(EMB.numpy()), np.zeros((1, 4))], axis=0)  # [C+1, D]
    v = _softmax(40.0 * _unit(vlm.numpy()) @ e.T)
    lam = np.array([0.25, 0.6, 0.25, 0.25])
    out = head.region_probs(score.half(), vlm.double())
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), s ** (1 - lam) * v ** lam, rtol=2e-3)
    np.testing.assert_allclose(head.region_probs(score, vlm).numpy(), s ** (1 - lam) * v ** lam,
                               rtol=1e-5)


def test_geometric_ensemble_is_per_column():
    from densevlm_mm.models.detectors.fvit_bbox_head import geometric_ensemble
    det = torch.tensor([[0.6, 0.1, 0.3]])
    vlm = torch.tensor([[0.2, 0.5, 0.3]])
    out = geometric_ensemble(det, vlm, torch.tensor([True, False, True]), alpha=0.1, beta=0.8)
    hand = [0.6 ** 0.2 * 0.2 ** 0.8, 0.1 ** 0.9 * 0.5 ** 0.1, 0.3 ** 0.2 * 0.3 ** 0.8]
    np.testing.assert_allclose(out[0].numpy(), hand, rtol=1e-6)


def test_geometric_ensemble_moves_the_mask_to_the_probabilities_device():
    """The head's mask buffer may sit on another device than the scores (the meta device stands
    in for a GPU here)."""
    from densevlm_mm.models.detectors.fvit_bbox_head import geometric_ensemble
    det = torch.empty(2, 3, device='meta')
    out = geometric_ensemble(det, det, torch.tensor([True, False, False]), alpha=0.1, beta=0.8)
    assert out.device.type == 'meta' and out.shape == (2, 3)


def _decode(roi, delta, shape):
    """DeltaXYWH decoding by hand (means 0, stds 0.1/0.1/0.2/0.2), clipped to the image."""
    x1, y1, x2, y2 = roi
    pw, ph, px, py = x2 - x1, y2 - y1, (x1 + x2) / 2, (y1 + y2) / 2
    dx, dy, dw, dh = (d * s for d, s in zip(delta, STDS))
    gx, gy, gw, gh = px + pw * dx, py + ph * dy, pw * np.exp(dw), ph * np.exp(dh)
    box = np.array([gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2])
    return box if shape is None else np.clip(box, 0, [shape[1], shape[0], shape[1], shape[0]])


def test_prediction_without_nms_decodes_boxes_by_hand(emb_file):
    head = _head(emb_file)
    roi = torch.tensor([[0., 10., 12., 50., 40.], [0., 0., 0., 20., 30.]])
    delta = torch.tensor([[0.5, -0.3, 0.4, 0.1], [-2.0, -1.0, 1.0, 0.5]])
    probs = torch.tensor([[0.3, 0.05, 0.02, 0.6], [0.0, 1.0, 0.0, 0.0]])
    meta = dict(img_shape=(60, 48), scale_factor=(2.0, 4.0))
    res = head._predict_by_feat_single(roi, probs, delta, meta, rescale=False)
    assert type(res.bboxes) is torch.Tensor
    hand = np.stack([_decode(r[1:].numpy(), d.numpy(), (60, 48)) for r, d in zip(roi, delta)])
    np.testing.assert_allclose(res.bboxes.numpy(), hand, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(res.scores, probs)  # as given: no softmax
    # rescale: back to the original image by 1 / scale_factor (w, h)
    res = head._predict_by_feat_single(roi[:1], probs[:1], delta[:1], meta, rescale=True)
    np.testing.assert_allclose(res.bboxes.numpy(), hand[:1] / [2.0, 4.0, 2.0, 4.0], rtol=1e-5,
                               atol=1e-4)


def test_prediction_with_class_specific_boxes(emb_file):
    """``reg_class_agnostic=False``: one box per class, NMS keeps each class with its own box."""
    head = _head(emb_file, reg_class_agnostic=False)
    roi = torch.tensor([[0., 10., 10., 30., 30.]])
    delta = torch.tensor([[0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0.]])
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]])
    cfg = ConfigDict(score_thr=0.25, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)
    meta = dict(img_shape=(64, 64), scale_factor=(1., 1.))
    res = head._predict_by_feat_single(roi, probs, delta, meta, rcnn_test_cfg=cfg)
    got = {int(lab): (round(float(s), 6), b.tolist()) for lab, s, b in
           zip(res.labels, res.scores, res.bboxes)}
    assert set(got) == {0, 1}  # class 2 is under score_thr
    assert got[0][0] == 0.5 and got[1][0] == 0.3
    np.testing.assert_allclose(got[0][1], _decode([10, 10, 30, 30], [0, 0, 0, 0], (64, 64)),
                               atol=1e-4)
    np.testing.assert_allclose(got[1][1], _decode([10, 10, 30, 30], [1, 0, 0, 0], (64, 64)),
                               atol=1e-4)
    # without a test config: all per-class boxes and the score matrix
    res = head._predict_by_feat_single(roi, probs, delta, meta)
    assert res.bboxes.shape == (1, 12) and res.scores.shape == (1, 4)


def test_prediction_without_box_deltas_clips_the_rois(emb_file):
    """No regression: the RoIs themselves, clipped to the image (x to the width, y to the
    height), and scaled back with ``rescale``."""
    head = _head(emb_file)
    roi = torch.tensor([[0., -5., 2., 80., 90.], [0., 3., -4., 30., 20.]])
    probs = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1]])
    meta = dict(img_shape=(60, 48), scale_factor=(2.0, 4.0))
    res = head._predict_by_feat_single(roi, probs, None, meta)
    torch.testing.assert_close(res.bboxes, torch.tensor([[0., 2., 48., 60.], [3., 0., 30., 20.]]))
    torch.testing.assert_close(roi[:, 1:], torch.tensor([[-5., 2., 80., 90.],
                                                         [3., -4., 30., 20.]]))  # unchanged
    res = head._predict_by_feat_single(roi, probs, None, meta, rescale=True)
    torch.testing.assert_close(res.bboxes, torch.tensor([[0., .5, 24., 15.], [1.5, 0., 15., 5.]]))
    res = head._predict_by_feat_single(roi, probs, None, dict(img_shape=None), rescale=False)
    torch.testing.assert_close(res.bboxes, roi[:, 1:])


def test_prediction_nms_and_detection_cap(emb_file):
    """Per-class NMS (IoU 0.5) on the class-agnostic boxes, then the ``max_per_img`` best."""
    head = _head(emb_file)
    roi = torch.tensor([[0., 10., 10., 30., 30.], [0., 11., 11., 31., 31.],
                        [0., 40., 40., 60., 60.]])
    probs = torch.tensor([[0.9, 0.5, 0.0, 0.1], [0.6, 0.4, 0.0, 0.1], [0.0, 0.0, 0.7, 0.3]])
    meta = dict(img_shape=(64, 64), scale_factor=(1., 1.))
    cfg = ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)
    res = head._predict_by_feat_single(roi, probs, torch.zeros(3, 4), meta, rcnn_test_cfg=cfg)
    got = sorted((round(float(s), 6), int(lab), b.tolist()) for s, lab, b in
                 zip(res.scores, res.labels, res.bboxes))
    assert got == [(0.5, 1, [10., 10., 30., 30.]), (0.7, 2, [40., 40., 60., 60.]),
                   (0.9, 0, [10., 10., 30., 30.])]
    cfg.max_per_img = 2
    res = head._predict_by_feat_single(roi, probs, torch.zeros(3, 4), meta, rcnn_test_cfg=cfg)
    assert res.scores.tolist() == pytest.approx([0.9, 0.7])
    assert res.labels.tolist() == [0, 2]


def test_prediction_of_no_rois(emb_file):
    head = _head(emb_file)
    meta = dict(img_shape=(64, 64), scale_factor=(1., 1.))
    cfg = ConfigDict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)
    res = head._predict_by_feat_single(torch.zeros(0, 5), torch.zeros(0, 4), torch.zeros(0, 4),
                                       meta, rcnn_test_cfg=cfg)
    assert type(res.bboxes) is torch.Tensor and res.bboxes.shape == (0, 4)
    assert res.scores.shape == (0, ) and res.labels.shape == (0, )
    res = head._predict_by_feat_single(torch.zeros(0, 5), torch.zeros(0, 4), torch.zeros(0, 4),
                                       meta)
    assert res.scores.shape == (0, 4)
    # on the RoIs' device (the meta device stands in for a GPU here)
    res = head._predict_by_feat_single(torch.zeros(0, 5, device='meta'), torch.zeros(0, 4),
                                       torch.zeros(0, 4), meta)
    assert res.bboxes.device.type == 'meta' and res.scores.device.type == 'meta'


def test_prediction_accepts_probabilities_only(emb_file):
    """Scores in [0, 1] (up to 1e-4 of rounding) are accepted, logits refused."""
    head = _head(emb_file)
    roi = torch.tensor([[0., 10., 10., 30., 30.]])
    meta = dict(img_shape=(64, 64), scale_factor=(1., 1.))
    for ok in ([0.0, 1.0, 0.5, 0.0], [0.0, 1.00009, 0.0, 0.0], [0.0, 1 + 1e-4, 0.0, 0.0]):
        res = head._predict_by_feat_single(roi, torch.tensor([ok]), None, meta)
        torch.testing.assert_close(res.scores, torch.tensor([ok]))
    for bad in ([-0.001, 0.5, 0.5, 0.0], [0.0, 1.0002, 0.0, 0.0]):
        with pytest.raises(ValueError, match='expects class probabilities'):
            head._predict_by_feat_single(roi, torch.tensor([bad]), None, meta)
