"""Tiny CAT-Seg end to end on the generated segmentation fixture: the demo stage (aligned student
dropped in, trained with mmengine's Runner, mIoU before/after), tools/test.py on its checkpoint, and
every configs/catseg config built with tiny stand-ins."""
import copy
import glob
import os.path as osp
import sys

import pytest
import torch


REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', 'catseg', '*.py')))


pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """The ``segment`` demo stage with a DenseVLM-style work-dir checkpoint of a tiny student."""
    from densevlm_mm.models.backbones import DenseVLMBackbone
    sys.path.insert(0, osp.join(REPO, 'tools'))
    from demo_stages import segment

    root = str(tmp_path_factory.mktemp('catseg_demo'))
    torch.manual_seed(3)
    student = DenseVLMBackbone('densevlm-tiny-eva02')
    teacher = DenseVLMBackbone('densevlm-tiny-eva02-teacher')
    ckpt = osp.join(root, 'epoch_5.pth')
    state = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    # a DenseVLM work-dir checkpoint also holds the P-VLM (another tower) under target_generator
    state.update({f'target_generator.backbone.{k}': v for k, v in teacher.state_dict().items()})
    torch.save(dict(meta=dict(epoch=5), state_dict=state), ckpt)
    lines = []
    out = segment.run(root, ckpt, log=lines.append, max_iters=16)
    return dict(root=root, out=out, lines=lines, student=student)


def test_demo_stage_trains_and_evaluates(demo_run):
    out, lines = demo_run['out'], demo_run['lines']
    losses = out['losses']
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4  # the BCE goes down
    assert 0.0 <= out['before'] <= 100.0 and 0.0 <= out['after'] <= 100.0
    assert any('mIoU' in ln and 'after 16 iterations' in ln for ln in lines)
    assert osp.isfile(out['checkpoint'])
    # the student really is the image tower, with only q/v changed by training (CLIP lr x 0.01)
    state = torch.load(out['checkpoint'], map_location='cpu', weights_only=False)['state_dict']
    for key, value in demo_run['student'].state_dict().items():
        if 'attn.q_proj' in key or 'attn.v_proj' in key:
            continue
        assert torch.equal(state[f'backbone.{key}'], value), key


def test_tools_test_evaluates_the_demo_checkpoint(demo_run):
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import test as test_tool  # tools/test.py
    seg_root = osp.join(demo_run['root'], 'seg_data')
    test_tool.main([
        osp.join(REPO, 'configs', 'catseg', 'catseg_tiny_demo.py'), demo_run['out']['checkpoint'],
        '--work-dir', osp.join(demo_run['root'], 'test'), '--cfg-options',
        f'test_dataloader.dataset.data_root={seg_root}',
        f'val_dataloader.dataset.data_root={seg_root}',
        f'train_dataloader.dataset.data_root={seg_root}'])
    logs = glob.glob(osp.join(demo_run['root'], 'test', '*', '*.log'))
    assert len(logs) == 1
    with open(logs[0]) as f:
        text = f.read()
    assert 'mIoU' in text and '| person |' in text  # classes came from the dataset


def _tiny(model: dict) -> dict:
    """The config's model on tiny random towers of the same family (structure kept)."""
    model = copy.deepcopy(model)
    name = 'densevlm-tiny-eva02' if 'eva02' in model['backbone']['model_name'].lower() \
        else 'densevlm-tiny-vit'
    model['backbone'].update(model_name=name, pretrained=None, out_indices=(0, 1))
    model['text_encoder'].update(model_name=name, pretrained=None)
    model['clip_resolution'] = (64, 64)
    model['decode_head'].update(window_size=2, pad_len=min(model['decode_head']['pad_len'], 8))
    model['data_preprocessor']['size'] = (64, 64)
    model['test_cfg'] = dict(model['test_cfg'], crop_size=(64, 64), stride=(32, 32))
    return model


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p) for p in CONFIGS])
def test_catseg_config_builds(path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from densevlm_mm.registry import MODELS
    cfg = Config.fromfile(path)  # imports custom_imports
    assert cfg.default_scope == 'mmseg' and cfg.model.type == 'densevlm_mm.CATSeg'
    from mmseg.registry import DATASETS, HOOKS, METRICS, TRANSFORMS
    with DefaultScope.overwrite_default_scope('mmseg'):
        for key in ('train_dataloader', 'test_dataloader'):
            if cfg.get(key):
                assert DATASETS.get(cfg[key].dataset.type) is not None
                for step in cfg[key].dataset.pipeline:
                    assert TRANSFORMS.get(step['type']) is not None, step
        assert METRICS.get(cfg.test_evaluator.type) is not None
        for hook in cfg.custom_hooks:
            assert HOOKS.get(hook['type']) is not None, hook
        model = MODELS.build(_tiny(cfg.model.to_dict()))
    if 'tiny_demo' not in path:
        assert len(model.train_class_names) == 171  # COCO-Stuff, from mmseg's dataset class
        assert model.test_classes_from_dataset
        assert model.test_cfg['mode'] == 'slide'
    assert model.test_classes_from_dataset
    model.set_eval_classes(['wall', 'floor', 'person'])
    if cfg.get('train_dataloader'):
        assert cfg.train_dataloader.batch_size * 1 == cfg.auto_scale_lr.base_batch_size
    model.eval()
    with torch.no_grad():
        probs = model.inference(torch.randn(1, 3, 80, 96), None)
    assert probs.shape == (1, len(model.class_names), 80, 96)


def test_published_recipe_values():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'catseg', 'catseg_vit-b16_coco-stuff-384_80k.py'))
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 4
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=1e-4)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.01
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.text_encoder.lr_mult == 0.01
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.01
    crop = [s for s in cfg.train_dataloader.dataset.pipeline if s['type'] == 'RandomCrop'][0]
    assert tuple(crop['crop_size']) == (384, 384)
    assert cfg.model.backbone.out_indices == (3, 7)
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(384, 384), stride=(256, 256),
                                      global_view=True)
    swap = Config.fromfile(osp.join(REPO, 'configs', 'catseg',
                                    'catseg_densevlm-vit-b16_coco-stuff-384_80k.py'))
    assert swap.model.backbone.pretrained.endswith('epoch_6.pth')
    swap.model.backbone.pretrained = cfg.model.backbone.pretrained
    assert swap.model == cfg.model  # the DenseVLM row differs by that one line only
