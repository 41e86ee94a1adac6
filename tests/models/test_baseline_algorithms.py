"""The baseline algorithms train one step on the tiny demo set; their data steps are exact."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from densevlm_mm.datasets import CocoPseudoRegionDataset
from densevlm_mm.datasets.transforms import (CropGridRegions, PackDenseVLMInputs,
                                             ResizeLongestPad, SampleGridRegions)
from densevlm_mm.datasets.transforms.crops import resize_max_size
from densevlm_mm.registry import DATASETS, MODELS
from densevlm_mm.text_embeddings import generate_text_embedding_file
from densevlm_mm.utils import register_all_modules
from densevlm_mm.apis.tiny_demo import STUDENT, load_tiny_demo_config

register_all_modules(init_default_scope=True)


def _student(root, **kw):
    return dict(type='DenseVLMBackbone', model_name=STUDENT,
                pretrained=osp.join(root, 'checkpoints', 'student.pt'), **kw)


def _data(root, pipeline, n=2, dataset=None):
    cfg = load_tiny_demo_config(root).train_dataloader.dataset.to_dict()
    cfg['pipeline'] = pipeline
    if dataset:
        cfg.update(dataset)
    ds = DATASETS.build(cfg)
    items = [ds[i] for i in range(n)]
    return dict(inputs=[i['inputs'] for i in items],
                data_samples=[i['data_samples'] for i in items])


def _step(model, data):
    model.train()
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    loss = sum(v for k, v in losses.items() if k.startswith('loss'))
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.backbone.parameters())
    return losses


def test_crop_grid_regions_cuts_the_original_image():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 40:] = 255  # right half white
    r = ResizeLongestPad(32, keep_ori=True)(dict(img=img))
    r = SampleGridRegions()(r)
    r['grid_boxes'] = np.array([[0, 0, 16, 16], [16, 0, 32, 16]], np.float32)
    r = CropGridRegions(size=8)(r)
    crops = r['region_crops']
    assert crops.shape == (2, 8, 8, 3) and 'ori_img' not in r
    assert crops[0].max() == 0 and crops[1].min() == 255  # left crop black, right crop white
    # centred padding of a non-square crop (ResizeMaxSize)
    out = resize_max_size(np.full((4, 8, 3), 7, np.uint8), 8)
    assert out[2:6].min() == 7 and out[:2].max() == 0 and out[6:].max() == 0
    packed = PackDenseVLMInputs()(r)['data_samples']
    assert packed.region_crops.shape == (2, 3, 8, 8) and packed.region_crops.dtype == torch.uint8
    with pytest.raises(KeyError, match='keep_ori'):
        CropGridRegions()(dict(grid_boxes=np.zeros((1, 4))))


def test_clipself_step(demo):
    model = MODELS.build(dict(
        type='CLIPSelf', backbone=_student(demo, unlocked_groups=2),
        target_generator=dict(type='CropTeacher', backbone=_student(demo)),
        head=dict(type='CLIPSelfHead', loss=dict(type='CLIPSelfLoss'))))
    pipeline = [dict(type='LoadImageSafe'), dict(type='ResizeLongestPad', size=128, keep_ori=True),
                dict(type='SampleGridRegions'), dict(type='CropGridRegions', size=64),
                dict(type='PackDenseVLMInputs')]
    losses = _step(model, _data(demo, pipeline))
    assert 0 <= losses['loss_cosine'].item() <= 2
    assert not any(k.startswith('target_generator.') for k in model.state_dict())
    assert all(p.grad is None for p in model.target_generator.parameters())


def test_logits_kd_step(demo):
    cfg = load_tiny_demo_config(demo).model.to_dict()
    cfg['head']['loss'] = dict(type='LogitsKDLoss')
    model = MODELS.build(cfg)
    pipeline = load_tiny_demo_config(demo).train_dataloader.dataset.pipeline
    losses = _step(model, _data(demo, pipeline))
    assert 'loss_logits_kd' in losses


def test_region_clip_step_on_pseudo_labelled_proposals(demo, tmp_path):
    data_dir = osp.join(demo, 'data')
    with open(osp.join(data_dir, 'instances.json')) as f:
        coco = json.load(f)
    coco['categories'] = [dict(id=7, name='a'), dict(id=3, name='b'), dict(id=11, name='c')]
    for ann in coco['annotations']:
        ann['category_id'] = [3, 7, 11][ann['id'] % 3]
    pseudo = str(tmp_path / 'pseudo.json')
    with open(pseudo, 'w') as f:
        json.dump(coco, f)
    ds = CocoPseudoRegionDataset(ann_file=pseudo, data_prefix=dict(img=osp.join(data_dir, 'images')),
                                 pipeline=[], max_regions=2)
    first = ds.get_data_info(0)
    ann = next(a for a in coco['annotations'] if a['image_id'] == first['img_id'])
    x, y, w, h = ann['bbox']
    np.testing.assert_allclose(first['region_boxes'][0], [x, y, x + w, y + h])
    assert first['region_labels'][0] == sorted([3, 7, 11]).index(ann['category_id'])
    assert all(len(ds.get_data_info(i)['region_labels']) <= 2 for i in range(len(ds)))
    vocab = tmp_path / 'nouns.txt'
    vocab.write_text('thing\ta\nthing\tb\nstuff\tc\n')
    nouns = str(tmp_path / 'nouns.pt')
    generate_text_embedding_file(STUDENT, osp.join(demo, 'checkpoints', 'student.pt'),
                                 str(vocab), nouns, progress=False)
    model = MODELS.build(dict(type='RegionCLIP', backbone=_student(demo, unlocked_groups=2),
                              head=dict(type='RegionCLIPHead', noun_embeddings=nouns,
                                        loss=dict(type='RegionCLIPLoss', num_sampled_classes=2))))
    pipeline = [dict(type='LoadImageSafe'), dict(type='ResizeLongestPad', size=128),
                dict(type='PackDenseVLMInputs')]
    items = [CocoPseudoRegionDataset(ann_file=pseudo, data_prefix=dict(
        img=osp.join(data_dir, 'images')), pipeline=pipeline)[i] for i in range(2)]
    losses = _step(model, dict(inputs=[i['inputs'] for i in items],
                               data_samples=[i['data_samples'] for i in items]))
    assert 'loss_region_clip' in losses
    with pytest.raises(ValueError, match='student'):
        MODELS.build(dict(type='RegionCLIP', backbone=_student(demo),
                          head=dict(type='RegionCLIPHead', noun_embeddings=osp.join(
                              demo, 'text', 'teacher_vocabulary.pt'))))
