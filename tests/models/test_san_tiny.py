"""Tiny SAN (mmseg's SAN modules, tiny OpenAI-style ViT converted from open_clip) trains and
evaluates on the generated segmentation fixture on CPU; class/embedding mismatches fail early."""
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'san', 'san_tiny_demo.py')


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build as the mmseg-scope config does (mmseg's modules by bare name)."""
    from mmengine.registry import DefaultScope
    import densevlm_mm.models.segmentors  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def tiny_san_config(tmp_path, max_iters=None):
    """The tiny demo config pointed at a generated fixture and converted tiny CLIP weights."""
    from mmengine.config import Config

    from densevlm_mm.datasets.synthetic_segmentation import make_synthetic_segmentation
    from densevlm_mm.models.clip_factory import create_clip
    from densevlm_mm.models.segmentors.san_converter import convert_open_clip_to_san
    data = make_synthetic_segmentation(str(tmp_path / 'data'), num_images=8, size=64, num_val=2)
    torch.manual_seed(0)
    clip, _ = create_clip('densevlm-tiny-vit')
    converted, unmapped = convert_open_clip_to_san(clip.state_dict(), visual_split=2)
    assert not unmapped
    torch.save(converted, str(tmp_path / 'san_init.pth'))
    cfg = Config.fromfile(CONFIG)
    assert cfg.classes == data['classes']
    cfg.work_dir = str(tmp_path / 'work')
    cfg.model.pretrained = str(tmp_path / 'san_init.pth')
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = data['data_root']
    if max_iters is not None:
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = max_iters
        cfg.param_scheduler[0].end = max_iters
    return cfg


def test_tiny_san_trains_and_evaluates(tmp_path):
    from mmengine.runner import Runner
    cfg = tiny_san_config(tmp_path, max_iters=12)
    cfg.default_hooks.logger.interval = 1
    runner = Runner.from_cfg(cfg)
    # the converted CLIP weights are in place (Pretrained_Part), the rest is SAN's own init
    runner.train()
    model = runner.model
    ref = torch.load(str(tmp_path / 'san_init.pth'), weights_only=True)
    torch.testing.assert_close(model.image_encoder.layers[0].ln1.weight,
                               ref['image_encoder.layers.0.ln1.weight'])
    torch.testing.assert_close(model.decode_head.rec_with_attnbias.proj.weight,
                               ref['decode_head.rec_with_attnbias.proj.weight'])
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 12
    assert losses[-4:].mean() < losses[:4].mean(), losses
    metrics = runner.val_loop.run()
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc'}
    assert 0.0 <= metrics['mIoU'] <= 100.0


def test_vocabulary_and_num_classes_must_agree(tmp_path):
    from mmseg.registry import MODELS
    cfg = tiny_san_config(tmp_path)
    model_cfg = cfg.model.copy()
    model_cfg.pretrained = None
    model_cfg.text_encoder.vocabulary = cfg.classes[:5]
    with pytest.raises(ValueError, match='5 classes but decode_head.num_classes=6'):
        MODELS.build(model_cfg)
    # same count, other order: EvalClassCheckHook (in the config) refuses before evaluating
    from types import SimpleNamespace

    from densevlm_mm.engine import EvalClassCheckHook
    model_cfg.text_encoder.vocabulary = cfg.classes[1:] + cfg.classes[:1]
    runner = SimpleNamespace(model=MODELS.build(model_cfg), val_dataloader=SimpleNamespace(
        dataset=SimpleNamespace(metainfo=dict(classes=cfg.classes))))
    with pytest.raises(ValueError, match="class 0 is 'car' in the evaluation text embeddings"):
        EvalClassCheckHook().before_val(runner)
    assert dict(type='densevlm_mm.EvalClassCheckHook') in cfg.custom_hooks


def test_mismatching_embedding_file_fails_before_training(tmp_path):
    from mmseg.registry import MODELS

    from densevlm_mm.text_embeddings import TextEmbeddings
    cfg = tiny_san_config(tmp_path)
    names = list(cfg.classes)

    def write(rows, class_names, name):
        path = str(tmp_path / name)
        TextEmbeddings(rows, class_names, torch.zeros(len(class_names), dtype=torch.bool)).save(path)
        return path

    def build(path):
        model_cfg = cfg.model.copy()
        model_cfg.pretrained = None
        model_cfg.text_encoder.embedding_file = path
        return MODELS.build(model_cfg)

    good = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)
    model = build(write(good, names, 'good.pt'))
    out = model.text_encoder()
    assert out.shape == (7, 32)  # 6 classes + learned background
    torch.testing.assert_close(out[:6] / model.text_encoder.logit_scale.exp(), good)
    with pytest.raises(ValueError, match='32 dimensions'):
        build(write(torch.randn(6, 16), names, 'dim.pt'))
    with pytest.raises(ValueError, match="class 1 is 'grass' in the file but 'car'"):
        build(write(good, [names[0], names[2], names[1]] + names[3:], 'order.pt'))
    with pytest.raises(ValueError, match='has 5 classes'):
        build(write(good[:5], names[:5], 'count.pt'))
