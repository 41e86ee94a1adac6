"""RegionClassificationMetric by value on hand-made samples: every result key against a hand
computation, the sample forms it reads (dicts, DataSamples, plain objects; tensors, arrays, lists;
column and flat predictions), empty masks, de-duplication, images without regions, the class
count, the protocol, and the JSON / ``.npz`` / log outputs (mutation testing, issue 15)."""
import json

import numpy as np
import pytest
import torch
from mmengine.structures import BaseDataElement

import densevlm_mm.evaluation.region_cls_metric as metric_module
from densevlm_mm.evaluation import RegionClassificationMetric, format_region_table

NAMES = ['person', 'car', 'sky', 'grass']
IS_THING = [True, True, False, False]
META = dict(classes=NAMES, is_thing=IS_THING)

# Two images; predictions are top-2 class indices, best first.
#   image a: labels person, car, sky, grass      image b: labels person, sky
#   box:  [0,1] hit@1  [0,1] hit@2  [3,0] miss  [3,2] hit@1    box:  [0,1] hit@1  [2,3] hit@1
#   mask: [1,0] hit@2  [1,0] hit@1  [2,3] hit@1 [2,3] hit@2    mask: [1,2] miss   [3,0] miss
A = dict(sample_idx=0, img_path='a.jpg', region_labels=[0, 1, 2, 3],
         region_is_thing=[True, True, False, False],
         pred_box_topk=[[0, 1], [0, 1], [3, 0], [3, 2]],
         pred_mask_topk=[[1, 0], [1, 0], [2, 3], [2, 3]])
B = dict(sample_idx=1, img_path='b.jpg', region_labels=[0, 2], region_is_thing=[True, False],
         pred_box_topk=[[0, 1], [2, 3]], pred_mask_topk=[[1, 2], [3, 0]])
# per class (top1, top2), averaged over the classes present in each split:
#   Boxes (things):  person (1, 1), car (0, 1)          -> 50, 100
#   Masks-T:         person (0, 1/2), car (1, 1)        -> 50, 75
#   Masks-S:         sky (1/2, 1/2), grass (0, 1)       -> 25, 75
#   Boxes-S:         sky (1/2, 1/2), grass (1, 1)       -> 75, 75
EXPECTED = {'boxes.top1': 50.0, 'boxes.top2': 100.0,
            'masks_thing.top1': 50.0, 'masks_thing.top2': 75.0,
            'masks_stuff.top1': 25.0, 'masks_stuff.top2': 75.0,
            'boxes_stuff.top1': 75.0, 'boxes_stuff.top2': 75.0}


def _tensors(sample: dict) -> dict:
    out = {}
    for k, v in sample.items():
        out[k] = torch.tensor(v) if isinstance(v, list) else v
    return out


def _metric(meta=META, **kwargs) -> RegionClassificationMetric:
    metric = RegionClassificationMetric(**kwargs)
    metric.dataset_meta = meta
    return metric


def _run(samples, meta=META, **kwargs) -> dict:
    metric = _metric(meta, **kwargs)
    metric.process(None, samples)
    return metric.compute_metrics(list(metric.results))


@pytest.fixture
def logs(monkeypatch):
    out = []
    monkeypatch.setattr(metric_module, 'print_log', lambda msg, **kw: out.append(msg))
    return out


# ------------------------------------------------------------------------------ construction
def test_defaults_and_topk_forms(tmp_path):
    m = RegionClassificationMetric()
    assert m.topk == (1, 5) and m.reference_rounding is None
    assert m.out_file is None and m.save_predictions is None
    assert (m.collect_device, m.prefix, m.collect_dir) == ('cpu', '', None)
    assert RegionClassificationMetric(topk=3).topk == (3, )
    ks = RegionClassificationMetric(topk=np.int64(2)).topk  # a numpy integer is one k
    assert ks == (2, ) and type(ks[0]) is int
    ks = RegionClassificationMetric(topk=[np.int64(1), 2]).topk
    assert ks == (1, 2) and all(type(k) is int for k in ks)
    m = RegionClassificationMetric(collect_device='gpu', prefix='coco')
    assert (m.collect_device, m.prefix) == ('gpu', 'coco')
    collect_dir = str(tmp_path / 'collect')
    assert RegionClassificationMetric(collect_dir=collect_dir).collect_dir == collect_dir


def test_prefix_reaches_the_keys():
    metric = _metric(topk=(1, 2), prefix='coco')
    metric.process(None, [A, B])
    res = metric.evaluate(2)
    assert res == pytest.approx({f'coco/{k}': v for k, v in EXPECTED.items()})


def test_default_model_name_and_int_topk_in_the_table(logs):
    res = _run([A, B], topk=2)
    assert res == pytest.approx({k: v for k, v in EXPECTED.items() if k.endswith('top2')})
    assert '| model |' in logs[-1]


# -------------------------------------------------------------------------------- hand values
@pytest.mark.parametrize('form', ['list', 'tensor', 'numpy', 'datasample', 'object'])
def test_hand_computed_accuracies_for_every_sample_form(form):
    class Plain:  # no ``get``: read by attribute
        def __init__(self, d):
            self.__dict__.update(d)

    def convert(s):
        if form == 'list':
            return dict(s)
        if form == 'numpy':
            return {k: np.asarray(v) if isinstance(v, list) else v for k, v in s.items()}
        t = _tensors(s)
        if form == 'datasample':
            return BaseDataElement(metainfo=dict(sample_idx=t.pop('sample_idx'),
                                                 img_path=t.pop('img_path')), **t)
        return Plain(t) if form == 'object' else t

    assert _run([convert(A), convert(B)], topk=(1, 2)) == pytest.approx(EXPECTED)


def test_get_reads_mappings_get_methods_and_attributes():
    class WithGet:  # a get() but no attributes (not a Mapping)
        def get(self, key, default=None):
            return {'x': 1}.get(key, default)

    class Attr:
        x = 2

    assert metric_module._get({'x': 0}, 'x') == 0
    assert metric_module._get({}, 'x', 'd') == 'd'
    assert metric_module._get(WithGet(), 'x') == 1
    assert metric_module._get(WithGet(), 'y', 'd') == 'd'
    assert metric_module._get(Attr(), 'x') == 2
    assert metric_module._get(Attr(), 'y', 'd') == 'd'
    assert metric_module._get(Attr(), 'y') is None

    # a get()-only sample goes through the metric as well
    class Sample:
        def __init__(self, d):
            self.d = d

        def get(self, key, default=None):
            return self.d.get(key, default)

    assert _run([Sample(A), Sample(B)], topk=(1, 2)) == pytest.approx(EXPECTED)


def test_np_reads_lists_arrays_and_tensors():
    assert metric_module._np([1, 2]).tolist() == [1, 2]
    assert metric_module._np(np.array([3])).tolist() == [3]
    assert metric_module._np(torch.tensor([4])).tolist() == [4]


def test_is_thing_from_the_dataset_when_the_sample_has_none():
    samples = [{k: v for k, v in s.items() if k != 'region_is_thing'} for s in (A, B)]
    # int64 / int32 / tensor labels all index the dataset's flags
    samples[0]['region_labels'] = np.asarray(A['region_labels'], np.int32)
    samples[1]['region_labels'] = torch.tensor(B['region_labels'])
    assert _run(samples, topk=(1, 2)) == pytest.approx(EXPECTED)
    # flags given as 0/1 ints are read as booleans
    assert _run(samples, dict(classes=NAMES, is_thing=[1, 1, 0, 0]), topk=(1, 2)) == \
        pytest.approx(EXPECTED)
    metric = _metric(None)
    assert metric._class_is_thing() is None
    with pytest.raises(KeyError, match='no "region_is_thing"'):
        metric.process(None, samples[:1])
    metric = _metric(dict(classes=NAMES))
    assert metric._class_is_thing() is None
    with pytest.raises(KeyError, match='no "region_is_thing"'):
        metric.process(None, samples[:1])
    flags = _metric(dict(is_thing=[1, 0]))._class_is_thing()
    assert flags.dtype == bool and flags.tolist() == [True, False]


def test_column_shaped_inputs_are_flattened():
    col = dict(A)
    col['region_labels'] = np.asarray(A['region_labels'])[:, None]  # [K, 1]
    col['region_is_thing'] = np.asarray(A['region_is_thing'])[:, None]
    col['region_mask_empty'] = np.zeros((4, 1), bool)
    metric = _metric(topk=(1, 2))
    metric.process(None, [col, B])
    entry = metric.results[0]
    for key in ('labels', 'is_thing', 'mask_empty'):
        assert entry[key].shape == (4, ), key
    assert metric.compute_metrics(list(metric.results)) == pytest.approx(EXPECTED)


def test_stored_entries_are_compact():
    metric = _metric(topk=(1, 2))
    sample = dict(A, region_is_thing=[1, 1, 0, 0], region_mask_empty=[0, 0, 0, 0],
                  pred_box_topk=np.asarray(A['pred_box_topk'], np.int64),
                  pred_mask_topk=np.asarray(A['pred_mask_topk'], np.float64))
    metric.process(None, [sample, dict(B)])
    for entry in metric.results:
        assert entry['labels'].dtype == np.int32
        assert entry['is_thing'].dtype == bool and entry['mask_empty'].dtype == bool
        assert entry['box'].dtype == np.int32 and entry['mask'].dtype == np.int32
    assert metric.results[1]['mask_empty'].tolist() == [False, False]
    assert (metric.results[0]['sample_idx'], metric.results[0]['img_path']) == (0, 'a.jpg')


def test_prediction_shapes_flat_single_column_and_wider():
    # one column per region given as a flat [K] vector: top-1 only
    flat = [dict(A, pred_box_topk=[r[0] for r in A['pred_box_topk']],
                 pred_mask_topk=[r[0] for r in A['pred_mask_topk']]),
            dict(B, pred_box_topk=[r[0] for r in B['pred_box_topk']],
                 pred_mask_topk=[r[0] for r in B['pred_mask_topk']])]
    res = _run(flat, topk=1)
    assert res == pytest.approx({k: v for k, v in EXPECTED.items() if k.endswith('top1')})
    # K*k values in one vector are read row by row
    rows = [dict(s, pred_box_topk=np.ravel(s['pred_box_topk']),
                 pred_mask_topk=torch.tensor(s['pred_mask_topk']).flatten()) for s in (A, B)]
    assert _run(rows, topk=(1, 2)) == pytest.approx(EXPECTED)
    # more columns than max(topk) are cut
    wide = [dict(s, pred_box_topk=[r + [9, 9] for r in s['pred_box_topk']]) for s in (A, B)]
    metric = _metric(dict(classes=NAMES + list('abcdef'), is_thing=IS_THING + [True] * 6),
                     topk=(1, 2))
    metric.process(None, wide)
    assert metric.results[0]['box'].shape == (4, 2)
    assert metric.compute_metrics(metric.results) == pytest.approx(EXPECTED)
    with pytest.raises(ValueError, match='pred_box_topk has 3 rows but there are 4 regions'):
        _metric().process(None, [dict(A, pred_box_topk=A['pred_box_topk'][:3])])
    with pytest.raises(ValueError, match='region_mask_empty has 3 entries'):
        _metric().process(None, [dict(A, region_mask_empty=[0, 0, 1])])
    with pytest.raises(KeyError, match='region_labels'):
        _metric().process(None, [dict(pred_box_topk=[[0]])])


# ------------------------------------------------------------------------------- empty masks
def test_empty_masks_are_misses_and_counted(logs, tmp_path):
    # A's car (a Masks-T top-1 hit, class index 1) and B's sky (a miss anyway) lose their masks
    a = dict(A, region_mask_empty=[False, True, False, False])
    b = dict(B, region_mask_empty=torch.tensor([False, True]))
    out, npz = str(tmp_path / 'r.json'), str(tmp_path / 'p.npz')
    res = _run([a, b], topk=(1, 2), out_file=out, save_predictions=npz)
    # Masks-T: person (0, 1/2), car (0, 0) -> 0, 25; Masks-S unchanged (sky was missed)
    want = dict(EXPECTED, **{'masks_thing.top1': 0.0, 'masks_thing.top2': 25.0,
                             'masks_thing.empty': 1, 'masks_stuff.empty': 1})
    assert res == pytest.approx(want) and res.keys() == want.keys()
    assert res['masks_thing.empty'] == 1 and type(res['masks_thing.empty']) is int
    assert 'empty masks (no pixel on the grid; scored as misclassified): masks_thing 1, ' \
        'masks_stuff 1' in logs[-1].splitlines()
    dump = json.load(open(out))
    assert dump['empty_masks'] == dict(masks_thing=1, masks_stuff=1)
    # the saved mask rankings of those regions hold the "no class" index -1; the rest as given
    saved = np.load(npz)['mask_topk']
    assert saved.tolist() == [[1, 0], [-1, -1], [2, 3], [2, 3], [1, 2], [-1, -1]]
    # only things lost a mask: the stuff count is 0, still reported once some mask vanished
    res = _run([a, B], topk=(1, 2))
    assert (res['masks_thing.empty'], res['masks_stuff.empty']) == (1, 0)
    assert 'scored as misclassified): masks_thing 1, masks_stuff 0' in logs[-1]
    # the box predictions are not touched
    assert res['boxes.top1'] == EXPECTED['boxes.top1']


def test_empty_mask_with_label_one_is_still_a_miss():
    # a region of class 1 whose mask vanished: -1 never equals a class, whatever its index
    s = dict(sample_idx=0, region_labels=[1], region_is_thing=[True],
             pred_mask_topk=[[1, 0]], region_mask_empty=[True])
    res = _run([s], topk=(1, 2))
    nan = float('nan')
    assert res == pytest.approx({'masks_thing.top1': 0.0, 'masks_thing.top2': 0.0,
                                 'masks_thing.empty': 1, 'masks_stuff.top1': nan,
                                 'masks_stuff.top2': nan, 'masks_stuff.empty': 0}, nan_ok=True)


def test_empty_flags_without_mask_predictions(logs):
    boxes_only = [{k: v for k, v in dict(s, region_mask_empty=[True] * len(s['region_labels']))
                   .items() if k != 'pred_mask_topk'} for s in (A, B)]
    res = _run(boxes_only, topk=(1, 2))
    assert res == pytest.approx({k: v for k, v in EXPECTED.items() if k.startswith('boxes')})
    assert not any('empty masks' in line for line in logs[-1].splitlines())


def test_results_without_mask_empty_entries():
    """compute_metrics also takes entries without ``mask_empty`` (no mask vanished)."""
    metric = _metric(topk=(1, 2))
    metric.process(None, [A, B])
    results = [{k: v for k, v in r.items() if k != 'mask_empty'} for r in metric.results]
    assert metric.compute_metrics(results) == pytest.approx(EXPECTED)


# ------------------------------------------------------------------ de-duplication / gathering
def test_duplicates_dropped_by_index_then_path(logs):
    metric = _metric(topk=(1, 2))
    # B repeated in the middle (sampler padding): counted once, and what follows still counts
    c = dict(sample_idx=2, img_path='c.jpg', region_labels=[3], region_is_thing=[False],
             pred_box_topk=[[0, 1]], pred_mask_topk=[[0, 1]])
    metric.process(None, [A, B, B, c])
    res = metric.compute_metrics(list(metric.results))
    # c adds a grass miss: Boxes-S grass (1/2, 1/2) -> 50, 50; Masks-S grass (0, 1/2) -> 25, 50
    assert res == pytest.approx(dict(EXPECTED, **{
        'boxes_stuff.top1': 50.0, 'boxes_stuff.top2': 50.0, 'masks_stuff.top2': 50.0}))
    assert any('dropped 1 duplicated images' in msg for msg in logs)
    # no duplicate: nothing logged about dropping
    logs.clear()
    assert _run([A, B], topk=(1, 2)) == pytest.approx(EXPECTED)
    assert not any('duplicated' in msg for msg in logs)


def test_same_path_different_index_both_count():
    # a dataset may list one image file twice (two annotation records): sample_idx tells them apart
    b2 = dict(B, sample_idx=5, img_path='a.jpg')
    res = _run([A, b2], topk=(1, 2))
    assert res == pytest.approx(EXPECTED)


def test_same_index_without_path_and_same_path_without_index():
    a = {k: v for k, v in A.items() if k != 'img_path'}
    b = {k: v for k, v in B.items() if k != 'img_path'}
    assert _run([a, b, a], topk=(1, 2)) == pytest.approx(EXPECTED)  # idx 0 twice
    a = {k: v for k, v in A.items() if k != 'sample_idx'}
    b = {k: v for k, v in B.items() if k != 'sample_idx'}
    assert _run([a, b, a], topk=(1, 2)) == pytest.approx(EXPECTED)  # a.jpg twice
    # neither: every entry counts (here A twice changes nothing but the counts per class)
    a = {k: v for k, v in A.items() if k not in ('sample_idx', 'img_path')}
    metric = _metric(topk=(1, 2))
    metric.process(None, [a, a])
    assert len(metric._dedup(metric.results)) == 2
    # a path equal to another sample's index value is no duplicate
    x = dict(A, sample_idx=None, img_path=1)
    metric = _metric(topk=(1, 2))
    metric.process(None, [x, B])
    assert len(metric._dedup(metric.results)) == 2


def test_images_without_regions_or_predictions():
    empty = dict(sample_idx=9, img_path='e.jpg', region_labels=[], region_is_thing=[])
    res = _run([A, empty, B], topk=(1, 2))  # no predictions for an image without regions
    assert res == pytest.approx(EXPECTED)
    only_empty = _run([empty, dict(empty, sample_idx=10, pred_box_topk=torch.zeros(0, 2))],
                      topk=(1, 2))
    assert set(only_empty) == {'boxes.top1', 'boxes.top2', 'boxes_stuff.top1', 'boxes_stuff.top2'}
    assert all(np.isnan(v) for v in only_empty.values())
    with pytest.raises(ValueError, match='pred_mask_topk is missing for 1 of 2 images'):
        _run([A, {k: v for k, v in B.items() if k != 'pred_mask_topk'}], topk=(1, 2))


def test_prediction_widths_across_images():
    # two widths (e.g. two models' outputs mixed up): refused, even with exactly two
    with pytest.raises(ValueError, match='different widths across images'):
        _run([A, dict(B, pred_box_topk=[[0], [2]])], topk=(1, 2))
    # every class listed (width 4 = C) but topk up to 5, with an empty image in between
    full = [dict(s, pred_box_topk=[r + [c for c in range(4) if c not in r]
                                   for r in s['pred_box_topk']],
                 pred_mask_topk=[r + [c for c in range(4) if c not in r]
                                 for r in s['pred_mask_topk']]) for s in (A, B)]
    empty = dict(sample_idx=9, region_labels=[], region_is_thing=[],
                 pred_box_topk=np.zeros((0, 5), np.int64), pred_mask_topk=torch.zeros(0))
    res = _run([full[0], empty, full[1]], topk=(1, 5))
    want = {k: v for k, v in EXPECTED.items() if k.endswith('top1')}
    want.update({k.replace('top2', 'top5'): 100.0 for k in EXPECTED if k.endswith('top2')})
    assert res == pytest.approx(want)


def test_class_count_from_the_dataset():
    # width 4 < k = 5 is fine only because the dataset has 4 classes (all listed)
    full = [dict(s, pred_box_topk=[[0, 1, 2, 3]] * len(s['region_labels'])) for s in (A, B)]
    full = [{k: v for k, v in s.items() if k != 'pred_mask_topk'} for s in full]
    assert _run(full, topk=(5, ))['boxes.top5'] == 100.0
    with pytest.raises(ValueError, match='only 4 predicted'):
        _run(full, dict(is_thing=IS_THING), topk=(5, ))  # no class list: width unknown
    with pytest.raises(ValueError, match='out of range'):
        _run([dict(A, region_labels=[0, 1, 2, 4])], topk=(1, 2))


# ------------------------------------------------------------------ protocol and fp16 rounding
def test_protocol_and_reference_rounding(logs, tmp_path):
    # thirds: one class with 1 of 3 regions right -> 1/3, which fp16 rounds to 0.333251953125
    s = dict(sample_idx=0, region_labels=[0, 0, 0], region_is_thing=[True] * 3,
             pred_box_topk=[[0], [1], [1]])
    third = float(np.float16(1 / 3)) * 100
    out = str(tmp_path / 'r.json')
    assert _run([s], topk=1, out_file=out)['boxes.top1'] == pytest.approx(100 / 3, abs=1e-12)
    assert '(ours protocol)' in logs[-1]
    dump = json.load(open(out))
    assert dump['region_protocol'] == 'ours' and dump['reference_rounding'] is False
    ref = dict(META, region_protocol='reference')
    assert _run([s], ref, topk=1, out_file=out)['boxes.top1'] == third
    assert '(reference protocol)' in logs[-1]
    dump = json.load(open(out))
    assert dump['region_protocol'] == 'reference' and dump['reference_rounding'] is True
    # an explicit setting wins over the protocol, both ways
    assert _run([s], ref, topk=1, reference_rounding=False)['boxes.top1'] == \
        pytest.approx(100 / 3, abs=1e-12)
    assert _run([s], topk=1, reference_rounding=True)['boxes.top1'] == third
    assert _run([s], dict(META, region_protocol='ours'), topk=1)['boxes.top1'] == \
        pytest.approx(100 / 3, abs=1e-12)


# -------------------------------------------------------------------------------- outputs
def test_json_and_npz_outputs(logs, tmp_path):
    out, npz = str(tmp_path / 'o' / 'r.json'), str(tmp_path / 'p' / 'pred.npz')
    res = _run([A, B], topk=(1, 2), model_name='stub', out_file=out, save_predictions=npz)
    text = open(out).read()
    dump = json.loads(text)
    assert text == json.dumps(dump, indent=1)  # one-space indented, human-readable
    assert dump == dict(
        model='stub', metrics=pytest.approx(EXPECTED), num_images=2,
        num_regions=dict(boxes=3, masks_thing=3, masks_stuff=3, boxes_stuff=3),
        region_protocol='ours', empty_masks=dict(masks_thing=0, masks_stuff=0),
        reference_rounding=False,
        per_class=dict(
            boxes=dict(person=dict(n=2, top1=100.0, top2=100.0),
                       car=dict(n=1, top1=0.0, top2=100.0)),
            masks_thing=dict(person=dict(n=2, top1=0.0, top2=50.0),
                             car=dict(n=1, top1=100.0, top2=100.0)),
            masks_stuff=dict(sky=dict(n=2, top1=50.0, top2=50.0),
                             grass=dict(n=1, top1=0.0, top2=100.0)),
            boxes_stuff=dict(sky=dict(n=2, top1=50.0, top2=50.0),
                             grass=dict(n=1, top1=100.0, top2=100.0))))
    assert res.keys() == EXPECTED.keys()
    pred = np.load(npz)  # allow_pickle=False: every array is plain
    assert sorted(pred.files) == ['box_topk', 'class_is_thing', 'class_names', 'image_index',
                                  'img_paths', 'is_thing', 'labels', 'mask_topk']
    assert pred['labels'].tolist() == [0, 1, 2, 3, 0, 2] and pred['labels'].dtype == np.int64
    assert pred['is_thing'].tolist() == [True, True, False, False, True, False]
    assert pred['image_index'].tolist() == [0, 0, 0, 0, 1, 1]
    assert pred['image_index'].dtype == np.int64
    assert pred['img_paths'].tolist() == ['a.jpg', 'b.jpg']
    assert pred['class_names'].tolist() == NAMES
    assert pred['class_is_thing'].tolist() == IS_THING and pred['class_is_thing'].dtype == bool
    assert pred['box_topk'].tolist() == A['pred_box_topk'] + B['pred_box_topk']
    assert pred['mask_topk'].tolist() == A['pred_mask_topk'] + B['pred_mask_topk']
    assert pred['box_topk'].dtype == np.int64
    # the printed summary: the table row and the not-in-the-paper Boxes-S line
    lines = logs[-1].splitlines()
    assert lines[0] == ('Region classification (ours protocol), mean class accuracy (%) over '
                        '2 images, 3 thing / 3 stuff regions')
    assert lines[-1] == '(not in the paper) boxes_stuff.top1: 75.0, boxes_stuff.top2: 75.0'


def test_outputs_without_class_names(tmp_path):
    """No class list in the dataset: per-class entries are named by index, class arrays empty."""
    out, npz = str(tmp_path / 'r.json'), str(tmp_path / 'p.npz')
    _run([A, B], dict(), topk=(1, ), out_file=out, save_predictions=npz)
    per_class = json.load(open(out))['per_class']
    assert per_class['boxes'] == {'0': dict(n=2, top1=100.0), '1': dict(n=1, top1=0.0)}
    assert per_class['masks_stuff'] == {'2': dict(n=2, top1=50.0), '3': dict(n=1, top1=0.0)}
    pred = np.load(npz)
    assert pred['class_names'].shape == (0, ) and pred['class_names'].dtype.kind == 'U'
    assert pred['class_is_thing'].shape == (0, ) and pred['class_is_thing'].dtype == bool
    assert pred['img_paths'].tolist() == ['a.jpg', 'b.jpg']


def test_per_class_leaves_out_empty_splits(tmp_path, logs):
    things = [dict(sample_idx=0, region_labels=[0, 1], region_is_thing=[True, True],
                   pred_box_topk=[[0, 1], [0, 1]], pred_mask_topk=[[0, 1], [1, 0]])]
    out = str(tmp_path / 'r.json')
    res = _run(things, topk=(1, 2), out_file=out)
    dump = json.load(open(out))
    assert sorted(dump['per_class']) == ['boxes', 'masks_thing']
    assert dump['num_regions'] == dict(boxes=2, masks_thing=2, masks_stuff=0, boxes_stuff=0)
    assert np.isnan(res['masks_stuff.top1']) and np.isnan(res['boxes_stuff.top2'])
    # NaN Boxes-S is printed as '-'
    assert logs[-1].splitlines()[-1] == \
        '(not in the paper) boxes_stuff.top1: -, boxes_stuff.top2: -'


def test_box_only_log_has_no_mask_notes(logs):
    boxes_only = [{k: v for k, v in s.items() if k != 'pred_mask_topk'} for s in (A, B)]
    res = _run(boxes_only, topk=(1, 2))
    assert set(res) == {k for k in EXPECTED if k.startswith('boxes')}
    assert logs[-1].splitlines()[-1] == \
        '(not in the paper) boxes_stuff.top1: 75.0, boxes_stuff.top2: 75.0'
    masks_only = [{k: v for k, v in s.items() if k != 'pred_box_topk'} for s in (A, B)]
    _run(masks_only, topk=(1, 2))
    assert '(not in the paper)' not in logs[-1]
    assert logs[-1].splitlines()[-1].startswith('+')  # the table is the last thing printed


# ------------------------------------------------------------------------------ text table
def test_table_reads_nested_prefixes_and_left_aligns_the_model_column():
    table = format_region_table({'DenseVLM-ViT-B': {'val/coco/boxes.top1': 73.4}}, topk=(1, ))
    rows = table.splitlines()
    assert rows[2].startswith('| Model          |')
    assert rows[4].startswith('| DenseVLM-ViT-B |  73.4 |')
