"""Segmentation datasets: the generated fixture, ADE20K-847 and PASCAL-Context-459 (uint16 labels)."""
import hashlib
import os
import os.path as osp

import numpy as np
import pytest
import torch
from PIL import Image

from densevlm_mm.datasets.seg_datasets import (ADE20K847Dataset, LoadWideSegAnnotations,
                                               PascalContext459Dataset, ade20k_847_classes,
                                               read_class_names)
from densevlm_mm.datasets.synthetic_segmentation import (SyntheticSegDataset,
                                                         make_synthetic_segmentation)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build mmseg's transforms by bare name (as the mmseg-scope configs do)."""
    from mmengine.registry import DefaultScope
    import mmseg.datasets  # noqa: F401  (registers PackSegInputs, LoadAnnotations, ...)
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(osp.join(dirpath, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_synthetic_segmentation_layout_and_determinism(tmp_path):
    a = make_synthetic_segmentation(str(tmp_path / 'a'), num_images=4, size=64, seed=3)
    b = make_synthetic_segmentation(str(tmp_path / 'b'), num_images=4, size=64, seed=3)
    c = make_synthetic_segmentation(str(tmp_path / 'c'), num_images=4, size=64, seed=4)
    assert _digest(a['data_root']) == _digest(b['data_root']) != _digest(c['data_root'])
    assert a['classes'] == ['sky', 'car', 'grass', 'person', 'road', 'dog']
    labels = np.stack([np.array(Image.open(osp.join(a['data_root'], 'annotations', 'train', f)))
                       for f in sorted(os.listdir(osp.join(a['data_root'], 'annotations', 'train')))])
    assert labels.dtype == np.uint8 and labels.shape == (4, 64, 64)
    values = set(np.unique(labels).tolist())
    assert 255 in values and values - {255} <= set(range(6)) and len(values - {255}) >= 3
    ds = SyntheticSegDataset(data_root=a['data_root'], data_prefix=a['val_prefix'],
                             pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                       dict(type='PackSegInputs')])
    assert len(ds) == a['num_val'] == 2 and list(ds.metainfo['classes']) == a['classes']
    sample = ds[0]
    assert sample['inputs'].shape == (3, 64, 64)
    with pytest.raises(ValueError, match='num_classes=9'):
        make_synthetic_segmentation(str(tmp_path / 'd'), num_classes=9)


def _write_wide(root, img_dir, ann_dir, stems, num_classes, extra_images=()):
    """Images + uint16 TIFF maps with labels spread over 0..num_classes-1 and 65535 = ignore."""
    os.makedirs(osp.join(root, img_dir), exist_ok=True)
    os.makedirs(osp.join(root, ann_dir), exist_ok=True)
    rng = np.random.default_rng(0)
    maps = {}
    for stem in list(stems) + list(extra_images):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
            osp.join(root, img_dir, stem + '.jpg'))
    for k, stem in enumerate(stems):
        seg = np.full((24, 32), 65535, dtype=np.uint16)
        seg[:, :16] = num_classes - 1 - k  # > 255
        seg[:12, 16:] = k
        Image.fromarray(seg).save(osp.join(root, ann_dir, stem + '.tif'))
        maps[stem] = seg
    return maps


PIPELINE = [dict(type='LoadImageFromFile'), dict(type='densevlm_mm.LoadWideSegAnnotations'),
            dict(type='PackSegInputs')]


def _iou(dataset, predict):
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(ignore_index=65535)
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        sample = dataset[i]
        gt = sample['data_samples'].gt_sem_seg.data
        metric.process({}, [dict(pred_sem_seg=dict(data=predict(gt)),
                                 gt_sem_seg=dict(data=gt))])
    return metric.compute_metrics(metric.results)['mIoU']


def test_ade20k_847_loads_uint16_labels_and_evaluates(tmp_path):
    root = str(tmp_path / 'ADE20K_2021_17_01')
    maps = _write_wide(root, 'images_detectron2/validation', 'annotations_detectron2/validation',
                       ['a', 'b'], 847)
    ds = ADE20K847Dataset(data_root=root,
                          data_prefix=dict(img_path='images_detectron2/validation',
                                           seg_map_path='annotations_detectron2/validation'),
                          pipeline=PIPELINE, test_mode=True)
    assert len(ds) == 2 and len(ds.metainfo['classes']) == 847 and ds.ignore_index == 65535
    assert list(ds.metainfo['classes']) == ade20k_847_classes()
    assert ds.metainfo['classes'][1] == 'building, edifice'
    gt = ds[0]['data_samples'].gt_sem_seg.data[0]
    assert torch.equal(gt, torch.from_numpy(maps['a'].astype(np.int64)))
    assert int(gt.max()) == 65535 and 846 in gt.unique().tolist()
    # mmseg's own LoadAnnotations casts to uint8 (846 -> 78): the reason for LoadWideSegAnnotations
    from mmseg.datasets.transforms import LoadAnnotations
    cast = LoadAnnotations()(dict(seg_map_path=ds.get_data_info(0)['seg_map_path'],
                                  reduce_zero_label=False, seg_fields=[]))['gt_seg_map']
    assert 846 not in np.unique(cast)
    assert _iou(ds, lambda gt: gt.clone()) == pytest.approx(100.0)

    def off(gt):
        pred = gt.clone()
        pred[pred == 846] = 0
        return pred
    assert _iou(ds, off) < 100.0


def test_pascal_context_459_classes_from_dataset_file(tmp_path):
    root = str(tmp_path / 'VOC2010')
    _write_wide(root, 'JPEGImages', 'annotations_detectron2/pc459_val', ['2008_000002', '2008_000010'],
                459, extra_images=['2008_000001'])  # an unannotated (training) image
    names = [f'name{i}' for i in range(1, 460)]
    with open(osp.join(root, 'labels.txt'), 'w') as f:  # ids 1..459, not in order
        f.writelines(f'{i}: {names[i - 1]}\n' for i in [2, 1] + list(range(3, 460)))
    ds = PascalContext459Dataset(
        data_root=root, data_prefix=dict(img_path='JPEGImages',
                                         seg_map_path='annotations_detectron2/pc459_val'),
        pipeline=PIPELINE, test_mode=True)
    assert list(ds.metainfo['classes']) == names  # label k = line with id k + 1
    assert [osp.basename(d['img_path']) for d in ds.load_data_list()] == \
        ['2008_000002.jpg', '2008_000010.jpg']  # only annotated images
    assert 458 in ds[0]['data_samples'].gt_sem_seg.data.unique().tolist()
    assert _iou(ds, lambda gt: gt.clone()) == pytest.approx(100.0)
    # a class file of the wrong length or with gaps, or no file: clear errors
    with open(osp.join(root, 'short.txt'), 'w') as f:
        f.write('1: a\n2: b\n')
    with pytest.raises(ValueError, match='lists 2 classes, 459 expected'):
        PascalContext459Dataset(data_root=root, class_file='short.txt', lazy_init=True)
    with open(osp.join(root, 'gap.txt'), 'w') as f:
        f.write('1: a\n3: b\n')
    with pytest.raises(ValueError, match='ids must be 1..2'):
        read_class_names(osp.join(root, 'gap.txt'))
    with pytest.raises(FileNotFoundError, match='labels.txt of the PASCAL-Context'):
        PascalContext459Dataset(data_root=str(tmp_path / 'nowhere'), lazy_init=True)


def test_wide_loader_refuses_reduce_zero_label(tmp_path):
    with pytest.raises(ValueError, match='reduce_zero_label'):
        LoadWideSegAnnotations()(dict(seg_map_path='x.tif', reduce_zero_label=True))
