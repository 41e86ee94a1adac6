"""Every SAN config loads, builds this project's modules, and agrees with its dataset's classes;
the real ViT-B/16 SAN accepts converted open_clip weights key for key, shape for shape."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SAN_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'san', '*.py')))
TINY_TEXT = dict(embed_dims=32, num_layers=1, num_heads=2, output_dims=32)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build as the mmseg-scope configs do (mmseg's modules by bare name)."""
    from mmengine.registry import DefaultScope
    import densevlm_mm.models.segmentors  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def pc459_labels(path: str, n: int = 459) -> str:
    with open(path, 'w') as f:
        f.writelines(f'{i}: class {i}\n' for i in range(n, 0, -1))  # any order; ids 1..n
    return path


@pytest.mark.parametrize('path', SAN_CONFIGS, ids=[osp.basename(p) for p in SAN_CONFIGS])
def test_san_config_classes_agree(path, tmp_path):
    from mmseg.registry import DATASETS, MODELS
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmseg'  # mmseg's SAN modules by bare name, ours prefixed
    assert cfg.model.type == 'densevlm_mm.SAN'
    text_cfg = cfg.model.text_encoder.copy()
    assert text_cfg.type == 'densevlm_mm.SANTextEncoder'
    # paper recipes: mmseg's prompts (mmseg's SAN); the tiny demo: the backbone's 63 templates
    assert text_cfg.templates == ('densevlm' if 'tiny' in path else 'vild')
    dataset_cfg = cfg.test_dataloader.dataset.copy()
    if 'pascal-context-459' in path:  # the class list is the dataset's own file
        labels = pc459_labels(str(tmp_path / 'labels.txt'))
        assert text_cfg.vocabulary == osp.join(dataset_cfg.data_root, dataset_cfg.class_file)
        text_cfg.vocabulary, dataset_cfg.class_file = labels, labels
    text_cfg.update(TINY_TEXT)
    text = MODELS.build(text_cfg)
    assert len(text.class_names) == cfg.model.decode_head.num_classes
    dataset_cls = DATASETS.get(dataset_cfg.type)
    assert dataset_cls is not None, dataset_cfg.type
    if 'pascal-context-459' in path:
        classes = dataset_cls(data_root=str(tmp_path), class_file=dataset_cfg.class_file,
                              lazy_init=True).metainfo['classes']
    elif 'tiny' in path:
        classes = cfg.classes
    else:
        classes = dataset_cls.METAINFO['classes']
    assert list(text.class_names) == list(classes)


def test_real_vit_b16_san_accepts_converted_open_clip_weights():
    import open_clip
    from mmseg.registry import MODELS

    from densevlm_mm.models.segmentors.san_converter import (check_san_keys,
                                                             convert_open_clip_to_san)
    with torch.device('meta'):  # shapes only: no memory, no weights
        clip = open_clip.model.CLIP(**open_clip.get_model_config('ViT-B-16-quickgelu'))
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'san',
                                   'san_densevlm-vit-b16_coco-stuff164k-640x640_80k.py'))
    cfg.model.pretrained = None
    san = MODELS.build(cfg.model)
    converted, unmapped = convert_open_clip_to_san(clip.state_dict(), visual_split=9)
    assert unmapped == []
    assert check_san_keys(converted, san.state_dict()) == dict(missing=[], unexpected=[],
                                                               shape_mismatch=[])
