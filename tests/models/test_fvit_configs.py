"""The F-ViT configs carry the constants of spec §8 (parsed only; the tiny config builds and runs in
test_fvit.py)."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', 'fvit', 'fvit_*.py'))
                 if 'tiny' not in p)


def load(name):
    return Config.fromfile(osp.join(REPO, 'configs', 'fvit', name))


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_constants(path):
    cfg = Config.fromfile(path)
    name = osp.basename(path)
    size = int(name.split('_')[2]) if name.split('_')[2].isdigit() else 512
    lvis = name.endswith('ovlvis.py')
    large = 'l14' in name
    m = cfg.model
    assert m.backbone.unlocked_groups == 0 and m.backbone.with_dense
    assert m.backbone.out_indices == ((6, 10, 14, 23) if large else (3, 5, 7, 11))
    assert m.data_preprocessor.pad_size_divisor == size
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize'][0]
    assert resize.scale == (size, size)
    crop = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop'][0]
    assert crop.crop_size == (size, size)
    bh = m.roi_head.bbox_head
    assert bh.fc_out_channels == (768 if large else 512)
    assert m.roi_head.vlm_roi_extractor.featmap_strides == [14 if large else 16]
    assert bh.alpha == 0.1 and bh.temperature == 50.0 and bh.learn_temperature
    assert bh.background == 'embedding'  # CLIPSelf: the file's background row, learn_bg=False
    assert cfg.auto_scale_lr.enable  # CLIPSelf's config enables it
    if lvis:
        assert (bh.num_classes, bh.bg_weight, bh.vlm_temperature) == (1203, 0.9, 50.0)
        assert bh.beta == (0.4 if large else 0.6)
        assert m.roi_head.mask_head.class_agnostic
        assert m.test_cfg.rcnn.max_per_img == 300 and m.test_cfg.rcnn.score_thr == 1e-4
        assert cfg.train_cfg.max_epochs == 48 and cfg.val_evaluator.type == 'mmdet.LVISMetric'
        assert cfg.param_scheduler[1].milestones == [32, 44]
    else:
        assert (bh.num_classes, bh.bg_weight, bh.vlm_temperature, bh.beta) == (65, 0.6, 75.0, 0.8)
        assert m.test_cfg.rcnn.max_per_img == 100 and m.test_cfg.rcnn.nms.iou_threshold == 0.4
        assert cfg.train_cfg.max_epochs == 3 and cfg.val_evaluator.type == 'mmdet.OVCocoMetric'
        assert cfg.train_dataloader.dataset.filter_novel
    opt = cfg.optim_wrapper
    assert opt.optimizer.lr == 1e-4 and opt.optimizer.weight_decay == 0.1
    assert opt.clip_grad.max_norm == 1.0 and opt.loss_scale == 512.0
    assert cfg.auto_scale_lr.base_batch_size == 64 and cfg.train_dataloader.batch_size == 8


@pytest.mark.parametrize('ds', ['ovcoco', 'ovlvis'])
def test_densevlm_config_differs_only_by_the_backbone_checkpoint(ds):
    eva = load(f'fvit_eva02-b16_512_{ds}.py').to_dict()
    dv = load(f'fvit_eva02-b16_densevlm_512_{ds}.py').to_dict()
    assert dv['model']['backbone'].pop('pretrained').startswith('work_dirs/densevlm_eva02-b16')
    assert eva['model']['backbone'].pop('pretrained') == 'checkpoints/EVA02_CLIP_B_psz16_s8B.pt'
    assert dv == eva


def test_reference_fixme_defaults_and_the_fix_config():
    ref = load('fvit_eva02-b16_512_ovcoco.py')
    assert ref.model.data_preprocessor.mean == [123.675, 116.28, 103.53]  # ImageNet (reference)
    assert ref.model.roi_head.bbox_head.cls_relu is True
    fixed = load('fvit_eva02-b16_512_ovcoco_fixes.py')
    assert fixed.model.data_preprocessor.mean[0] == pytest.approx(0.48145466 * 255)
    assert fixed.model.roi_head.bbox_head.cls_relu is False


@pytest.mark.parametrize('enable', [True, False])
def test_auto_scale_lr_switch_in_both_positions(enable):
    """CLIPSelf's config (mmdet 2.28, ``auto_scale_lr.enable=True``): lr x (GPUs x images per GPU
    / 64). Default here the same; ``enable=False`` keeps the config's lr whatever the batch.
    Computed by mmengine's ``Runner.scale_lr`` for 2 GPUs x 8 images."""
    from types import SimpleNamespace

    import torch
    from mmengine.logging import MMLogger
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    cfg = load('fvit_eva02-b16_512_ovcoco.py')
    cfg.auto_scale_lr.enable = enable
    opt = cfg.optim_wrapper.optimizer
    wrapper = OptimWrapper(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=opt.lr))
    fake = SimpleNamespace(_train_dataloader=cfg.train_dataloader, world_size=2,
                           param_schedulers=None, logger=MMLogger.get_current_instance())
    Runner.scale_lr(fake, wrapper, cfg.auto_scale_lr)
    peer = opt.lr * (2 * 8) / 64  # mmdet 2.28 auto_scale_lr: (num_gpus * samples_per_gpu / base)
    assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(peer if enable else opt.lr)
