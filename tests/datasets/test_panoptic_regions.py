"""Panoptic region datasets, the LoadPanopticRegions transform and the synthetic generator."""
import json
import os

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from PIL import Image

from densevlm_mm.datasets.panoptic_regions import (ADE20KPanopticRegionDataset,
                                                   CocoPanopticRegionDataset,
                                                   PanopticRegionDataset)
from densevlm_mm.datasets.synthetic_panoptic import make_synthetic_panoptic
from densevlm_mm.datasets.transforms.panoptic import LoadPanopticRegions, id2rgb, rgb2id
from densevlm_mm.registry import DATASETS, TRANSFORMS


def _fixtures():
    from conftest import load_panoptic_fixtures
    return load_panoptic_fixtures()


@pytest.fixture(scope='module')
def fixture_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('panoptic_fixture'))
    return _fixtures().make_panoptic_fixture(root)


def _dataset(paths, cls=PanopticRegionDataset, pipeline=None, **kwargs):
    pipeline = [dict(type=LoadPanopticRegions)] if pipeline is None else pipeline
    return cls(ann_file=paths['panoptic_json'],
               data_prefix=dict(img=paths['img_dir'], seg=paths['seg_dir']), pipeline=pipeline,
               **kwargs)


def test_rgb_id_roundtrip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 120257, 256**3 - 1]])
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8
    assert rgb[1, 2].tolist() == [120257 % 256, 120257 // 256 % 256, 120257 // 65536]
    assert np.array_equal(rgb2id(rgb), ids)


def test_metainfo_labels_follow_sorted_category_ids(fixture_root):
    fx = _fixtures()
    ds = _dataset(fixture_root)
    assert len(ds) == 3
    assert ds.metainfo['classes'] == fx.FIXTURE_CLASSES
    assert ds.metainfo['is_thing'] == fx.FIXTURE_IS_THING
    assert ds.metainfo['category_ids'] == [1, 5, 7, 90, 120]
    info = ds.get_data_info(0)
    assert info['img_path'].endswith('000000.jpg') and info['seg_map_path'].endswith('000000.png')
    assert [s['label'] for s in info['segments_info']] == [3, 4, 0, 1]
    assert [s['isthing'] for s in info['segments_info']] == [False, False, True, True]


def test_regions_exact(fixture_root):
    fx = _fixtures()
    ds = _dataset(fixture_root)
    with pytest.warns(UserWarning, match='do not occur in the PNG'):
        samples = [ds[i] for i in range(len(ds))]
    for sample, expected in zip(samples, fx.FIXTURE_EXPECTED):
        assert sample['img'].shape == (40, 60, 3) and sample['img'].dtype == np.uint8
        assert sample['ori_shape'] == (40, 60)
        assert sample['region_labels'].dtype == np.int64
        assert sample['region_boxes'].dtype == np.float32
        assert sample['region_labels'].tolist() == [e[0] for e in expected]
        assert sample['region_is_thing'].tolist() == [e[1] for e in expected]
        np.testing.assert_array_equal(sample['region_boxes'], [e[2] for e in expected])
        masks = sample['region_masks']
        assert masks.dtype == bool and masks.shape == (len(expected), 40, 60)
        for mask, (_, _, (x0, y0, x1, y1)) in zip(masks, expected):
            ys, xs = np.nonzero(mask)
            assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    # the image decodes to what was written
    img = np.asarray(Image.open(os.path.join(fixture_root['img_dir'], '000000.jpg')).convert('RGB'))
    assert np.array_equal(samples[0]['img'], img)
    # image 0's person mask is exactly the drawn rectangle
    person = samples[0]['region_masks'][2]
    assert person.sum() == 200 and person[10:30, 5:15].all()


def test_reference_stuff_box_crowd_cap_and_size_bounds(fixture_root):
    ds = _dataset(fixture_root, pipeline=[dict(type=LoadPanopticRegions, reference_stuff_box=True,
                                               with_masks=False)])
    s = ds[0]
    assert 'region_masks' not in s
    # stuff boxes are 1 px short (inclusive max), thing boxes unchanged
    np.testing.assert_array_equal(s['region_boxes'], [[0, 0, 59, 14], [0, 15, 59, 39],
                                                      [5, 10, 15, 30]])
    t = LoadPanopticRegions(skip_crowd=True)
    assert t(ds.get_data_info(1))['region_labels'].tolist() == [1, 4]
    t = LoadPanopticRegions(max_regions=2)  # the cap counts segments in file order
    assert t(ds.get_data_info(0))['region_labels'].tolist() == [3, 4]
    t = LoadPanopticRegions(min_size=4)  # the 5×5 car (area 25 ≥ 16) is now kept
    assert t(ds.get_data_info(0))['region_labels'].tolist() == [3, 4, 0, 1]
    t = LoadPanopticRegions(max_size=20)  # areas above 400 px² are dropped
    assert t(ds.get_data_info(0))['region_labels'].tolist() == [0]


def test_transform_without_dataset_annotations(fixture_root):
    ann = json.load(open(fixture_root['panoptic_json']))
    item = ann['annotations'][0]
    results = dict(img_path=os.path.join(fixture_root['img_dir'], '000000.jpg'),
                   seg_map_path=os.path.join(fixture_root['seg_dir'], item['file_name']),
                   segments_info=item['segments_info'])
    with pytest.raises(KeyError, match='category_ids'):
        LoadPanopticRegions()(dict(results))
    t = TRANSFORMS.build(dict(type='densevlm_mm.LoadPanopticRegions',
                              category_ids=[120, 1, 90, 7, 5], thing_category_ids=[1, 5, 7]))
    assert t(dict(results))['region_labels'].tolist() == [3, 4, 0]


def test_missing_png_and_bad_image_raise_naming_the_file(fixture_root, tmp_path):
    import shutil
    root = tmp_path / 'copy'
    shutil.copytree(fixture_root['root'], root)
    paths = dict(panoptic_json=str(root / 'panoptic.json'), img_dir=str(root / 'images'),
                 seg_dir=str(root / 'panoptic'))
    os.remove(root / 'panoptic' / '000001.png')
    (root / 'images' / '000002.jpg').write_bytes(b'not a jpeg')
    ds = _dataset(paths)
    with pytest.raises(FileNotFoundError, match='000001.png'):
        ds[1]
    with pytest.raises(ValueError, match='cannot decode image .*000002.jpg'):
        ds[2]
    with pytest.raises(FileNotFoundError, match='nope.json'):
        PanopticRegionDataset(ann_file=str(tmp_path / 'nope.json'))
    # a PNG whose size differs from the image
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / 'panoptic' / '000000.png')
    with pytest.raises(ValueError, match='000000.png.* is 10x10 but image'):
        ds[0]


def test_subset_registry_and_vocabulary_override(fixture_root, tmp_path):
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        ds = DATASETS.build(dict(type='CocoPanopticRegionDataset',
                                 ann_file=fixture_root['panoptic_json'],
                                 data_prefix=dict(img=fixture_root['img_dir'],
                                                  seg=fixture_root['seg_dir']),
                                 pipeline=[dict(type='LoadPanopticRegions')], subset=2))
        assert isinstance(ds, CocoPanopticRegionDataset) and len(ds) == 2 and ds.test_mode
        assert ds[1]['region_labels'].tolist() == [1, 4, 0]
    ds = _dataset(fixture_root, ADE20KPanopticRegionDataset, subset=[2])
    assert len(ds) == 1 and ds.get_data_info(0)['img_id'] == 3
    with pytest.raises(ValueError, match='either subset or indices'):
        _dataset(fixture_root, subset=1, indices=1)
    vocab = tmp_path / 'vocab.json'
    names = ['a person', 'a car', 'a kite', 'the sky', 'grass']
    vocab.write_text(json.dumps([dict(name=n, isthing=int(t)) for n, t in
                                 zip(names, _fixtures().FIXTURE_IS_THING)]))
    assert _dataset(fixture_root, vocabulary=str(vocab)).metainfo['classes'] == tuple(names)
    assert _dataset(fixture_root, metainfo=dict(classes=names)).metainfo['classes'] == tuple(names)
    with pytest.raises(ValueError, match='metainfo gives 2 classes'):
        _dataset(fixture_root, metainfo=dict(classes=names[:2]))
    vocab.write_text(json.dumps([dict(name=n, isthing=1) for n in names]))
    with pytest.raises(ValueError, match='disagree on thing/stuff'):
        _dataset(fixture_root, vocabulary=str(vocab))
    with pytest.raises(ValueError, match='133 classes'):
        _dataset(fixture_root, vocabulary='coco_panoptic_133')


def test_synthetic_generator(tmp_path):
    paths = make_synthetic_panoptic(str(tmp_path), num_images=3, image_size=(48, 64), seed=1)
    again = make_synthetic_panoptic(str(tmp_path / 'again'), num_images=3, image_size=(48, 64),
                                    seed=1)
    ann = json.load(open(paths['panoptic_json']))
    assert ann == json.load(open(again['panoptic_json']))
    assert len(ann['images']) == 3 and len(os.listdir(paths['seg_dir'])) == 3
    inst = json.load(open(paths['instances_json']))
    assert [im['file_name'] for im in inst['images']] == ['000000.jpg', '000001.jpg', '000002.jpg']
    assert all(a['category_id'] in (1, 3, 18, 44) for a in inst['annotations'])
    vocab = json.load(open(paths['vocabulary_json']))
    assert [v['name'] for v in vocab] == list(paths['classes'])
    for item in ann['annotations']:
        ids = rgb2id(np.asarray(Image.open(os.path.join(paths['seg_dir'], item['file_name']))))
        assert ids.shape == (48, 64)
        assert set(np.unique(ids).tolist()) == {s['id'] for s in item['segments_info']}
        for seg in item['segments_info']:
            ys, xs = np.nonzero(ids == seg['id'])
            assert seg['area'] == len(xs)
            assert seg['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                   ys.max() - ys.min() + 1]
    ds = _dataset(paths)
    assert ds.metainfo['classes'] == paths['classes']
    s = ds[0]
    assert len(s['region_labels']) >= 3  # two stuff regions and at least one thing
    with pytest.raises(ValueError, match='at least one thing and one stuff'):
        make_synthetic_panoptic(str(tmp_path / 'x'), 1, categories=[dict(id=1, name='a', isthing=1)])
