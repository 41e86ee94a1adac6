"""F-ViT on mmdet 3.3: the tiny config trains and tests end to end, the backbone stays frozen, the
class check fails before training, and the box head's numbers match hand computations."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools')
STUDENT = 'densevlm-tiny-eva02'


def _detect_stage():
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    from demo_stages import detect
    return detect


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    """A demo work dir holding only a random-initialised tiny student (open_clip state dict)."""
    from densevlm_mm.models.clip_factory import create_clip
    root = tmp_path_factory.mktemp('fvit_demo')
    torch.manual_seed(0)
    model, _ = create_clip(STUDENT)
    (root / 'checkpoints').mkdir()
    torch.save(model.state_dict(), root / 'checkpoints' / 'student.pt')
    return str(root)


@pytest.fixture(scope='module')
def stage(demo_root):
    """One run of the demo's detection stage, shortened to 3 epochs (12 iterations) at a lower
    learning rate so the total loss falls steadily, then tested; shared by the tests."""
    lines = []
    result = _detect_stage().run(demo_root, osp.join(demo_root, 'checkpoints', 'student.pt'),
                                 log=lines.append,
                                 cfg_options={'train_cfg.max_epochs': 3,
                                              'optim_wrapper.optimizer.lr': 2e-3,
                                              'default_hooks.checkpoint.interval': 3})
    result['log'] = lines
    return result


def _tiny_cfg(demo_root, **options):
    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
    detect = _detect_stage()
    cfg = load_tiny_demo_config(demo_root, detect.CONFIG)
    cfg.model.backbone.pretrained = osp.join(demo_root, 'checkpoints', 'student.pt')
    cfg.merge_from_dict(options)
    return cfg


def _build_model(cfg):
    from mmengine.registry import MODELS, DefaultScope

    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        return MODELS.build(cfg.model)


# ------------------------------------------------------------------------------------ end to end
def test_tiny_fvit_trains_tests_and_prints_the_table(stage):
    losses = stage['losses']
    assert len(losses) == 12  # 16 images / batch 4 x 3 epochs
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    metrics = stage['metrics']
    for key in ('coco/novel_ap50', 'coco/base_ap50', 'coco/bbox_mAP_50'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0
    assert '| AP50 novel | AP50 base | AP50 all |' in stage['table']
    assert any('AP50 novel' in line for line in stage['log'])
    assert osp.isfile(stage['checkpoint'])


def test_backbone_weights_unchanged_after_training(stage, demo_root):
    """The saved detector's backbone equals the student's image tower it was built from."""
    from densevlm_mm.models.backbones import DenseVLMBackbone
    ref = DenseVLMBackbone(STUDENT, pretrained=osp.join(demo_root, 'checkpoints', 'student.pt'))
    saved = torch.load(stage['checkpoint'], map_location='cpu', weights_only=False)['state_dict']
    back = {k[len('backbone.'):]: v for k, v in saved.items() if k.startswith('backbone.')}
    assert back.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k
    # while the trained parts moved away from their initialisation
    init = _build_model(_tiny_cfg(demo_root)).state_dict()
    assert not torch.equal(saved['neck.1.fpn_convs.0.conv.weight'],
                           init['neck.1.fpn_convs.0.conv.weight'])


def test_backbone_frozen_no_grad_and_eval_mode(stage, demo_root):
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    cfg = _tiny_cfg(demo_root)
    model = _build_model(cfg)
    model.train()
    assert not model.backbone.training and not model.backbone.visual.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.roi_head.state_dict().items()}
    cfg.work_dir = osp.join(demo_root, 'frozen_check')
    loader = Runner.build_dataloader(cfg.train_dataloader)
    optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                           lr=1e-2))
    data = next(iter(loader))
    for _ in range(2):
        model.train_step(data, optim)
    assert all(p.grad is None for p in model.backbone.parameters())
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, head_before[k]) for k, v in model.roi_head.state_dict().items())


def test_one_pass_forward_gives_levels_and_dense_map(demo_root):
    model = _build_model(_tiny_cfg(demo_root)).eval()
    calls = []
    handle = model.backbone.visual.trunk.blocks[0].register_forward_hook(
        lambda *a: calls.append(1))
    x, dense = model.extract_feat_and_dense(torch.randn(2, 3, 128, 128))
    handle.remove()
    assert len(calls) == 1  # the trunk ran once for the 4 levels and the dense map
    assert [t.shape[-1] for t in x] == [32, 16, 8, 4, 2]  # strides 4..64
    assert dense.shape == (2, model.backbone.embed_dim, 8, 8)
    ref = model.backbone.dense_features(torch.zeros(1, 3, 128, 128))
    _, dense0 = model.extract_feat_and_dense(torch.zeros(1, 3, 128, 128))
    torch.testing.assert_close(dense0, ref)


# --------------------------------------------------------------------------------- class checks
def test_embedding_file_of_other_classes_fails_at_build(stage, demo_root, tmp_path):
    """A file made for other classes is refused when the model is built (before any training)."""
    from densevlm_mm.text_embeddings import generate_text_embedding_file
    import json
    vocab = tmp_path / 'other.json'
    vocab.write_text(json.dumps([dict(name=n, isthing=1) for n in ('cat', 'car', 'dog', 'cup')]))
    other = str(tmp_path / 'other.pt')
    generate_text_embedding_file(STUDENT, None, str(vocab), other, progress=False)
    cfg = _tiny_cfg(demo_root, **{'model.roi_head.bbox_head.text_embeddings': other})
    with pytest.raises(ValueError, match=r"class 0 is 'cat' in the file but 'person' in the "
                       r"detector classes"):
        _build_model(cfg)
    cfg = _tiny_cfg(demo_root, **{'model.roi_head.bbox_head.num_classes': 5})
    with pytest.raises(ValueError, match='num_classes=5'):
        _build_model(cfg)


def test_embedding_file_of_another_model_fails_at_build(stage, demo_root, tmp_path):
    """Rows made with another CLIP's text tower (same 32-d, same classes) are refused when the
    detector is built: the message names the file, both models and the command."""
    from densevlm_mm.text_embeddings import generate_text_embedding_file
    other = str(tmp_path / 'vit_rows.pt')
    generate_text_embedding_file('densevlm-tiny-vit', None, stage['data']['vocabulary_json'], other,
                                 progress=False)
    cfg = _tiny_cfg(demo_root, **{'model.roi_head.bbox_head.text_embeddings': other})
    with pytest.raises(ValueError) as err:
        _build_model(cfg)
    msg = str(err.value)
    assert repr(other) in msg and "text tower of 'densevlm-tiny-vit'" in msg
    assert f"'{STUDENT}' image tower" in msg
    assert f'python tools/text_embeddings.py {STUDENT} CLIP_CHECKPOINT VOCABULARY {other}' in msg
    # a file that records no model is used (with a warning): nothing to compare
    from densevlm_mm.text_embeddings import load_text_embeddings
    te = load_text_embeddings(other)
    te.model_name = 'unknown'
    te.save(other)
    _build_model(cfg)


def test_dataset_classes_differing_from_embeddings_fail_before_training(stage, demo_root):
    """Without the config's class list, the hook compares the dataset with the file before the
    first iteration."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    cfg = _tiny_cfg(demo_root)
    cfg.model.roi_head.bbox_head.class_names = None
    # same set, other order (a training set need not follow the file's category-id order)
    cfg.train_dataloader.dataset.classes = ['person', 'car', 'bottle', 'dog']
    cfg.train_dataloader.dataset.novel_classes = ['bottle', 'dog']
    cfg.work_dir = osp.join(demo_root, 'mismatch')
    runner = Runner.from_cfg(cfg)
    iterations = []

    class Count(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            iterations.append(batch_idx)

    runner.register_hook(Count())
    with pytest.raises(ValueError, match=r"class 2 is 'dog' in the detector's text embeddings "
                                         r"but 'bottle' in the training dataset"):
        runner.train()
    assert iterations == []


# ---------------------------------------------------------------------------- head and ensemble
def test_geometric_ensemble_equals_hand_computation():
    from densevlm_mm.models.detectors import geometric_ensemble
    det = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    vlm = torch.tensor([[0.2, 0.6, 0.2], [0.4, 0.4, 0.2]])
    novel = torch.tensor([False, True, False])  # class 0 base, class 1 novel, background
    out = geometric_ensemble(det, vlm, novel, alpha=0.25, beta=0.5)
    hand = torch.tensor([[0.5 ** 0.75 * 0.2 ** 0.25, (0.3 * 0.6) ** 0.5, 0.2],
                         [0.1 ** 0.75 * 0.4 ** 0.25, (0.1 * 0.4) ** 0.5, 0.8 ** 0.75 * 0.2 ** 0.25]])
    torch.testing.assert_close(out, hand)


BG = torch.tensor([0., 1., 1., 0.])


@pytest.fixture()
def head_file(tmp_path):
    """An embedding file with 3 known 4-d classes and the background row (not unit norm: the
    head normalises)."""
    from densevlm_mm.text_embeddings import TextEmbeddings
    emb = torch.tensor([[2., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 3., 1.]])
    path = str(tmp_path / 'three.pt')
    TextEmbeddings(emb, ['a', 'b', 'c'], torch.ones(3, dtype=torch.bool), model_name='x',
                   normalized=False, background=BG).save(path)
    return path, emb


def _head(path, **kw):
    from mmengine.registry import DefaultScope

    from densevlm_mm.models.detectors import FViTBBoxHead
    args = dict(in_channels=8, roi_feat_size=2, num_classes=3, num_shared_convs=0,
                num_shared_fcs=1, num_cls_fcs=1, num_reg_fcs=1, fc_out_channels=4,
                reg_class_agnostic=True, text_embeddings=path, class_names=['a', 'b', 'c'],
                base_classes=['a', 'c'], bg_weight=0.6, vlm_temperature=10.0, alpha=0.3, beta=0.7,
                bbox_coder=dict(type='mmdet.DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                loss_bbox=dict(type='mmdet.L1Loss', loss_weight=1.0))
    args.update(kw)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return FViTBBoxHead(**args)


def test_head_values_match_an_independent_computation(head_file):
    path, emb = head_file
    torch.manual_seed(0)
    head = _head(path).eval()
    x = torch.randn(5, 8, 2, 2)
    cls_score, _ = head(x)
    # independent: shared fc + ReLU, cls fc + ReLU (reference), cosine with the normalised rows and
    # the normalised background row (the default, as CLIPSelf), times the initial temperature 50
    with torch.no_grad():
        h = F.relu(F.linear(x.flatten(1), head.shared_fcs[0].weight, head.shared_fcs[0].bias))
        c = F.relu(F.linear(h, head.cls_fcs[0].weight, head.cls_fcs[0].bias))
    c = c.numpy().astype(np.float64)
    e = np.concatenate([emb.numpy(), BG.numpy()[None]]).astype(np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    logits = 50.0 * (c / np.linalg.norm(c, axis=1, keepdims=True)) @ e.T
    np.testing.assert_allclose(cls_score.detach().numpy(), logits, rtol=1e-5, atol=1e-4)
    # test-time ensemble: softmax(det), softmax(T_vlm * cos(vlm, E)), base a,c,bg ^0.3, novel b ^0.7
    v = torch.randn(5, 4)
    vn = v.numpy().astype(np.float64)
    vlogit = 10.0 * (vn / np.linalg.norm(vn, axis=1, keepdims=True)) @ e.T

    def softmax(z):
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    s, p = softmax(logits), softmax(vlogit)
    lam = np.array([0.3, 0.7, 0.3, 0.3])
    hand = s ** (1 - lam) * p ** lam
    probs = head.region_probs(cls_score.detach(), v)
    np.testing.assert_allclose(probs.numpy(), hand, rtol=1e-4, atol=1e-6)
    # no ReLU before the normalisation: the fix is one argument away
    head.cls_relu = False
    with torch.no_grad():
        c2 = F.linear(h, head.cls_fcs[0].weight, head.cls_fcs[0].bias)
        torch.testing.assert_close(head(x)[0], head.fc_cls(c2))


def test_prediction_uses_the_ensembled_probabilities_without_a_second_softmax(head_file):
    from mmengine.config import ConfigDict
    path, _ = head_file
    head = _head(path).eval()
    roi = torch.tensor([[0., 10., 10., 50., 40.]])
    probs = torch.tensor([[0.30, 0.05, 0.02, 0.10]])  # not normalised, as the ensemble gives
    cfg = ConfigDict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)
    res = head._predict_by_feat_single(roi, probs, torch.zeros(1, 4),
                                       dict(img_shape=(64, 64), scale_factor=(1., 1.)),
                                       rescale=False, rcnn_test_cfg=cfg)
    got = sorted(zip(res.labels.tolist(), res.scores.tolist()))
    assert [(lab, round(s, 6)) for lab, s in got] == [(0, 0.3), (1, 0.05), (2, 0.02)]
    torch.testing.assert_close(res.bboxes[0], roi[0, 1:])
    with pytest.raises(ValueError, match='expects class probabilities'):
        head._predict_by_feat_single(roi, torch.tensor([[3.0, -1.0, 0.5, 0.0]]), None,
                                     dict(img_shape=(64, 64), scale_factor=(1., 1.)),
                                     rcnn_test_cfg=cfg)


def test_training_loss_removes_novel_columns_and_weights_background(head_file):
    path, _ = head_file
    head = _head(path)
    assert head.loss_cls.class_weight == [1.0, 0.0, 1.0, 0.6]
    logits = torch.tensor([[2.0, 5.0, 0.5, 1.0], [0.1, 3.0, 0.2, 0.4]])
    labels = torch.tensor([0, 3])  # base class a, background
    out = head.loss(logits, None, None, labels, torch.ones(2), None, None)
    keep = [0, 2, 3]  # novel column b is out of the softmax
    lsm = torch.log_softmax(logits[:, keep], dim=1)
    hand = -(1.0 * lsm[0, 0] + 0.6 * lsm[1, 2]) / 2  # mmdet averages over the label weights
    torch.testing.assert_close(out['loss_cls'], hand)
    with pytest.raises(ValueError, match=r"training targets contain novel classes \['b'\]"):
        head.loss(logits, None, None, torch.tensor([1, 0]), torch.ones(2), None, None)


def test_background_options(head_file, tmp_path):
    from densevlm_mm.text_embeddings import TextEmbeddings
    path, emb = head_file
    learned = _head(path, background='learned')
    assert isinstance(learned.fc_cls.bg_embedding, torch.nn.Parameter)
    torch.testing.assert_close(learned.fc_cls.embeddings[:, -1], F.normalize(BG, dim=0))
    zero = _head(path, background='zero')
    assert torch.equal(zero.fc_cls.embeddings[:, -1], torch.zeros(4))
    old = str(tmp_path / 'old.pt')
    TextEmbeddings(emb, ['a', 'b', 'c'], torch.ones(3, dtype=torch.bool), model_name='x').save(old)
    with pytest.raises(ValueError, match="no background row.*background='zero'"):
        _head(old, background='embedding')
    fixed = _head(path, learn_temperature=False, temperature=20.0)
    assert not isinstance(fixed.fc_cls.temperature, torch.nn.Parameter)


def test_tools_test_py_runs_the_tiny_config_unchanged(stage, demo_root, tmp_path, monkeypatch):
    """``python tools/test.py configs/fvit/fvit_tiny_demo.py CKPT`` with the config's own relative
    paths (``work_dirs/tiny_demo/...``) resolved from the working directory."""
    import pickle
    (tmp_path / 'work_dirs').mkdir()
    (tmp_path / 'work_dirs' / 'tiny_demo').symlink_to(demo_root)
    monkeypatch.chdir(tmp_path)
    # the config's backbone checkpoint is the align stage's; here the random student stands in
    (tmp_path / 'work_dirs' / 'tiny_demo' / 'train').mkdir(exist_ok=True)
    student = tmp_path / 'work_dirs' / 'tiny_demo' / 'train' / 'epoch_5.pth'
    if not student.exists():
        student.symlink_to(osp.join(demo_root, 'checkpoints', 'student.pt'))
    from conftest import load_tool
    tool = load_tool('test.py')
    out = tmp_path / 'preds.pkl'
    tool.main([osp.join(REPO, 'configs', 'fvit', 'fvit_tiny_demo.py'), stage['checkpoint'],
               '--work-dir', str(tmp_path / 'test_run'), '--out', str(out)])
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 8  # the generated validation images
    assert all(0 <= int(lab) < 4 for p in preds for lab in p['pred_instances']['labels'])


def test_aligned_student_from_a_work_dir_checkpoint_drops_in(stage, demo_root, tmp_path):
    """The align stage's checkpoint (mmengine layout: the student under ``backbone.visual.``, the
    P-VLM under ``target_generator.``) is the tiny config's backbone ``pretrained``."""
    from densevlm_mm.models.backbones import DenseVLMBackbone
    torch.manual_seed(3)
    student = DenseVLMBackbone(STUDENT)
    teacher = {f'target_generator.backbone.visual.{k}': torch.zeros(1) for k in ('a', 'b')}
    ckpt = tmp_path / 'epoch_5.pth'
    torch.save(dict(meta=dict(epoch=5, iter=40),
                    state_dict={**{f'backbone.{k}': v for k, v in student.state_dict().items()},
                                **teacher}), ckpt)
    model = _build_model(_tiny_cfg(demo_root, **{'model.backbone.pretrained': str(ckpt)}))
    for k, v in student.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_mask_branch_of_the_lvis_model_trains_and_predicts(stage, demo_root, tmp_path):
    """The OV-LVIS additions (normalised RPN convs, class-agnostic FCN mask head) on the tiny model
    and the generated images (their annotations carry masks)."""
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    norm = dict(type='BN', requires_grad=True)
    cfg = _tiny_cfg(demo_root)
    cfg.model.rpn_head.type = 'densevlm_mm.NormRPNHead'
    cfg.model.rpn_head.norm_cfg = norm
    cfg.model.roi_head.mask_roi_extractor = dict(
        type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
        out_channels=32, featmap_strides=[4, 8, 16, 32])
    cfg.model.roi_head.mask_head = dict(
        type='FCNMaskHead', num_convs=4, in_channels=32, conv_out_channels=32, class_agnostic=True,
        num_classes=4, norm_cfg=norm,
        loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))
    cfg.model.train_cfg.rcnn.mask_size = 28
    cfg.model.test_cfg.rcnn.mask_thr_binary = 0.5
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        for t in loader.dataset.pipeline:
            if t.type == 'LoadAnnotations':
                t.with_mask = True
    model = _build_model(cfg)
    assert model.rpn_head.rpn_conv[0].with_norm
    cfg.work_dir = str(tmp_path)
    data = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                           lr=1e-3))
    model.train()
    losses = model.train_step(data, optim)
    assert torch.isfinite(losses['loss_mask']) and losses['loss_mask'] > 0
    model.eval()
    test = next(iter(Runner.build_dataloader(cfg.test_dataloader)))
    with torch.no_grad():
        out = model.test_step(test)
    inst = out[0].pred_instances
    assert inst.masks.shape[0] == inst.bboxes.shape[0] and inst.masks.shape[1:] == (128, 128)


def test_cpu_bfloat16_autocast_runs_the_heads_in_fp32(stage, demo_root, tmp_path):
    """``tools/train.py --amp`` without CUDA trains under CPU bf16 autocast; mmcv's CPU NMS and
    RoIAlign have no bf16 kernels, so the detector part runs in fp32 there."""
    from mmengine.runner import Runner
    cfg = _tiny_cfg(demo_root)
    cfg.work_dir = str(tmp_path)
    model = _build_model(cfg)
    data = model.data_preprocessor(next(iter(Runner.build_dataloader(cfg.train_dataloader))), True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(data['inputs'], data['data_samples'])
        model.eval()
        preds = model.predict(data['inputs'], data['data_samples'])
    values = [t for k, v in losses.items() if k.startswith('loss')
              for t in (v if isinstance(v, (list, tuple)) else [v])]
    assert values and all(torch.isfinite(t).all() for t in values)
    assert losses['loss_cls'].dtype == torch.float32
    assert preds[0].pred_instances.scores.dtype == torch.float32
