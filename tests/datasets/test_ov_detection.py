"""Open-vocabulary detection datasets (base/novel filtering, name-based labels) and the OV-COCO metric
on hand-made predictions."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from densevlm_mm.datasets.ov_detection import OVCocoDataset, OVLVISDataset, read_class_list
from densevlm_mm.datasets.synthetic_detection import make_synthetic_detection


@pytest.fixture(scope='module')
def fixture(tmp_path_factory):
    return make_synthetic_detection(str(tmp_path_factory.mktemp('det')), num_train=6, num_val=3)


def _ds(fx, split='train', **kw):
    args = dict(ann_file=fx[f'{split}_ann'], data_prefix=dict(img=fx[f'{split}_img'] + '/'),
                classes=fx['classes'], base_classes=fx['base_classes'],
                novel_classes=fx['novel_classes'], pipeline=[])
    args.update(kw)
    return OVCocoDataset(**args)


def _infos(ds):
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_bundled_ovcoco_split_is_the_65_48_17_of_mmdet():
    all65, base, novel = (read_class_list(n) for n in ('ovcoco_65_all', 'ovcoco_48_base',
                                                        'ovcoco_17_novel'))
    assert (len(all65), len(base), len(novel)) == (65, 48, 17)
    assert set(base) | set(novel) == set(all65) and not set(base) & set(novel)
    assert 'airplane' in novel and 'person' in base
    ds = OVCocoDataset(ann_file='unused.json', lazy_init=True)
    assert ds.metainfo['classes'] == tuple(all65)
    assert ds.metainfo['base_classes'] == tuple(base)
    assert ds.metainfo['novel_classes'] == tuple(novel)


def test_novel_annotations_removed_from_standard_file(fixture):
    with open(fixture['train_ann']) as f:
        raw = json.load(f)
    name = {c['id']: c['name'] for c in raw['categories']}
    base_anns = [a for a in raw['annotations'] if name[a['category_id']] in fixture['base_classes']]
    base_imgs = {a['image_id'] for a in base_anns}
    assert len(base_anns) < len(raw['annotations'])  # the fixture has novel boxes to remove
    full = _ds(fixture)
    kept = _ds(fixture, filter_novel=True, filter_cfg=dict(filter_empty_gt=True))
    labels = [ins['bbox_label'] for info in _infos(kept) for ins in info['instances']]
    assert sorted(set(labels)) == [0, 1]  # person, car
    assert len(labels) == len(base_anns)
    assert {info['img_id'] for info in _infos(kept)} == base_imgs
    assert sum(len(i['instances']) for i in _infos(full)) == len(raw['annotations'])


def test_split_file_listing_only_base_categories_keeps_label_order(fixture, tmp_path):
    """An OVR-CNN style split file (only the base categories listed, ids kept) gives labels in the
    order of ``classes``, looked up by name."""
    with open(fixture['train_ann']) as f:
        raw = json.load(f)
    base_ids = {c['id'] for c in raw['categories'] if c['name'] in fixture['base_classes']}
    raw['categories'] = [c for c in raw['categories'] if c['id'] in base_ids][::-1]
    raw['annotations'] = [a for a in raw['annotations'] if a['category_id'] in base_ids]
    path = tmp_path / 'seen.json'
    path.write_text(json.dumps(raw))
    ds = _ds(fixture, ann_file=str(path), filter_novel=True)
    id2name = {1: 'person', 3: 'car'}
    by_img = {a['image_id']: [] for a in raw['annotations']}
    for a in raw['annotations']:
        by_img[a['image_id']].append(fixture['classes'].index(id2name[a['category_id']]))
    for info in _infos(ds):
        assert sorted(i['bbox_label'] for i in info['instances']) == \
            sorted(by_img.get(info['img_id'], []))
    with pytest.raises(ValueError, match=r"has no categories named \['dog', 'bottle'\]"):
        _ds(fixture, ann_file=str(path), test_mode=True)


def test_class_order_and_split_errors(fixture):
    with pytest.raises(ValueError, match='not in category-id order'):
        _ds(fixture, split='val', test_mode=True, classes=['car', 'person', 'dog', 'bottle'])
    with pytest.raises(ValueError, match='neither base nor novel'):
        _ds(fixture, novel_classes=['dog'])
    with pytest.raises(ValueError, match='both base and novel'):
        _ds(fixture, novel_classes=['dog', 'bottle', 'car'])


def test_ov_coco_metric_equals_hand_computed_ap50(fixture, tmp_path):
    """mmdet's OVCocoMetric on hand-made predictions: base AP50 / novel AP50 by hand (COCO's
    101-point interpolated precision)."""
    from mmdet.evaluation import OVCocoMetric
    classes = ['a', 'b', 'c']  # a, c base; b novel
    gt = dict(
        images=[dict(id=1, file_name='1.jpg', height=100, width=100),
                dict(id=2, file_name='2.jpg', height=100, width=100)],
        categories=[dict(id=1, name='a'), dict(id=2, name='b'), dict(id=3, name='c')],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 30, 30], area=900, iscrowd=0),
            dict(id=2, image_id=2, category_id=1, bbox=[50, 50, 40, 40], area=1600, iscrowd=0),
            dict(id=3, image_id=1, category_id=2, bbox=[60, 10, 30, 30], area=900, iscrowd=0),
            dict(id=4, image_id=2, category_id=3, bbox=[5, 5, 20, 20], area=400, iscrowd=0),
        ])
    ann = tmp_path / 'gt.json'
    ann.write_text(json.dumps(gt))
    metric = OVCocoMetric(ann_file=str(ann), metric='bbox')
    metric.dataset_meta = dict(classes=classes, base_classes=['a', 'c'], novel_classes=['b'])

    def sample(img_id, boxes, scores, labels):
        return dict(img_id=img_id, ori_shape=(100, 100),
                    pred_instances=dict(bboxes=torch.tensor(boxes, dtype=torch.float32),
                                        scores=torch.tensor(scores),
                                        labels=torch.tensor(labels)))
    # class a: detections (score, TP?) 0.9 TP, 0.8 FP, 0.7 TP over 2 GTs
    #   precision/recall: (1, .5) (.5, .5) (.667, 1) -> interpolated p = 1 up to r .5, .667 after
    #   AP = (51 * 1 + 50 * 2/3) / 101
    # class b (novel): one FP 0.95 then the TP 0.6 -> p = .5 at r = 1 -> AP = .5
    # class c: no detection -> AP 0
    metric.process({}, [
        sample(1, [[10, 10, 40, 40], [60, 60, 90, 90], [60, 10, 90, 40], [0, 60, 20, 80]],
               [0.9, 0.8, 0.6, 0.95], [0, 0, 1, 1]),
        sample(2, [[50, 50, 90, 90]], [0.7], [0]),
    ])
    res = metric.evaluate(size=2)
    ap_a = (51 * 1.0 + 50 * (2 / 3)) / 101
    np.testing.assert_allclose(res['coco/base_ap50'], (ap_a + 0.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(res['coco/novel_ap50'], 0.5, rtol=1e-6)
    np.testing.assert_allclose(res['coco/bbox_mAP_50'], round((ap_a + 0.5 + 0.0) / 3, 3))


def test_ov_lvis_dataset_removes_rare_annotations(tmp_path):
    pytest.importorskip('lvis', reason='OV-LVIS needs the lvis package (pinned lvis==0.5.3)')
    names = read_class_list('ovlvis_1203_all')
    novel = set(read_class_list('ovlvis_337_novel_rare'))
    ds_meta = OVLVISDataset(ann_file='unused.json', lazy_init=True).metainfo
    assert list(ds_meta['classes']) == names  # mmdet's LVIS v1 order = the CLIPSelf list
    assert (len(ds_meta['base_classes']), len(ds_meta['novel_classes'])) == (866, 337)
    cats = [dict(id=i + 1, name=n, frequency='r' if n in novel else 'f', synset=n,
                 image_count=1, instance_count=1) for i, n in enumerate(names)]
    rare_id = next(c['id'] for c in cats if c['frequency'] == 'r')
    base_id = next(c['id'] for c in cats if c['frequency'] == 'f')
    seg = [[10, 10, 40, 10, 40, 40, 10, 40]]
    data = dict(
        images=[dict(id=1, coco_url='http://images.cocodataset.org/train2017/1.jpg', height=64,
                     width=64, neg_category_ids=[], not_exhaustive_category_ids=[])],
        annotations=[dict(id=1, image_id=1, category_id=rare_id, bbox=[10, 10, 30, 30],
                          area=900, segmentation=seg),
                     dict(id=2, image_id=1, category_id=base_id, bbox=[10, 10, 30, 30],
                          area=900, segmentation=seg)],
        categories=cats)
    ann = tmp_path / 'lvis.json'
    ann.write_text(json.dumps(data))
    ds = OVLVISDataset(ann_file=str(ann), data_prefix=dict(img=''), filter_novel=True, pipeline=[])
    labels = [i['bbox_label'] for i in _infos(ds)[0]['instances']]
    assert labels == [base_id - 1]
    assert _infos(ds)[0]['img_path'] == osp.join('', 'train2017/1.jpg')
