"""RegionClassificationMetric: exact accuracies on the hand-made panoptic fixture, de-duplication,
outputs, and 2-process (gloo) evaluation equal to 1-process."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.evaluator import Evaluator

import densevlm_mm.evaluation.region_cls_metric as metric_module
from densevlm_mm.datasets.panoptic_regions import PanopticRegionDataset
from densevlm_mm.datasets.synthetic_panoptic import make_synthetic_panoptic
from densevlm_mm.datasets.transforms.panoptic import LoadPanopticRegions
from densevlm_mm.evaluation import RegionClassificationMetric, format_region_table
from densevlm_mm.registry import METRICS
from densevlm_mm.text_embeddings import TextEmbeddings, load_text_embeddings

# the spawned processes import the worker by module name: make its folder importable
sys.path.insert(0, str(Path(__file__).resolve().parent))
from region_metric_dist_worker import dist_worker, free_port, run_metric  # noqa: E402


def _fixtures():
    from conftest import load_panoptic_fixtures
    return load_panoptic_fixtures()


# Stub scorer: position of the true label in the predicted ranking, per image and region
# (fixture regions: img0 = sky, grass, person; img1 = car, grass, person; img2 = person, sky).
# Positions ≥ 3 are misses at top-3.
BOX_RANK = [[4, 0, 0], [2, 0, 4], [0, 3]]
MASK_RANK = [[0, 2, 1], [0, 4, 0], [4, 0]]
# Hand-computed mean class accuracies (top1, top3) from the tables above:
#   Boxes (things): person ranks [0, 4, 0] → 2/3, 2/3; car [2] → 0, 1
#   Masks-T: person [1, 0, 4] → 1/3, 2/3; car [0] → 1, 1
#   Masks-S: sky [0, 0] → 1, 1; grass [2, 4] → 0, 1/2
#   Boxes-S: sky [4, 3] → 0, 0; grass [0, 0] → 1, 1
EXPECTED = {
    'boxes.top1': (2 / 3 + 0) / 2 * 100, 'boxes.top3': (2 / 3 + 1) / 2 * 100,
    'masks_thing.top1': (1 / 3 + 1) / 2 * 100, 'masks_thing.top3': (2 / 3 + 1) / 2 * 100,
    'masks_stuff.top1': 50.0, 'masks_stuff.top3': 75.0,
    'boxes_stuff.top1': 50.0, 'boxes_stuff.top3': 50.0,
}


def _ranking(label: int, rank: int, num_classes: int) -> list:
    others = [c for c in range(num_classes) if c != label]
    return (others[:rank] + [label] + others[rank:])[:num_classes]


@pytest.fixture(scope='module')
def fixture_samples(tmp_path_factory):
    """The fixture through the full eval pipeline, with stub predictions attached."""
    from densevlm_mm.datasets.transforms import PackDenseVLMInputs, ResizeLongestPad
    paths = _fixtures().make_panoptic_fixture(str(tmp_path_factory.mktemp('fx')))
    ds = PanopticRegionDataset(
        ann_file=paths['panoptic_json'], data_prefix=dict(img=paths['img_dir'], seg=paths['seg_dir']),
        pipeline=[dict(type=LoadPanopticRegions), dict(type=ResizeLongestPad, size=32),
                  dict(type=PackDenseVLMInputs)])
    samples = []
    with pytest.warns(UserWarning):
        for i in range(len(ds)):
            s = ds[i]['data_samples']
            labels = s.region_labels.tolist()
            s.pred_box_topk = torch.tensor([_ranking(lab, r, 5) for lab, r in
                                            zip(labels, BOX_RANK[i])])
            s.pred_mask_topk = torch.tensor([_ranking(lab, r, 5) for lab, r in
                                             zip(labels, MASK_RANK[i])])
            samples.append(s)
    return ds, samples


def test_fixture_exact_accuracies_outputs_and_table(fixture_samples, tmp_path, monkeypatch):
    ds, samples = fixture_samples
    logs = []
    monkeypatch.setattr(metric_module, 'print_log', lambda msg, **kw: logs.append(msg))
    metric = METRICS.build(dict(type='densevlm_mm.RegionClassificationMetric', topk=(1, 3),
                                model_name='stub', out_file=str(tmp_path / 'res' / 'out.json'),
                                save_predictions=str(tmp_path / 'pred.npz')))
    evaluator = Evaluator([metric])
    evaluator.dataset_meta = ds.metainfo
    evaluator.process(samples[:2])
    evaluator.process(samples[2:])
    res = evaluator.evaluate(len(ds))
    assert res.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key

    table = logs[-1]
    assert '(ours protocol)' in table and '3 images, 4 thing / 4 stuff regions' in table
    assert '| stub  |  33.3 |  83.3 |  66.7 |  83.3 |  50.0 |  75.0 |' in table
    assert 'Boxes' in table and 'Masks-T' in table and 'Masks-S' in table

    dump = json.load(open(tmp_path / 'res' / 'out.json'))
    assert dump['num_regions'] == dict(boxes=4, masks_thing=4, masks_stuff=4, boxes_stuff=4)
    assert dump['per_class']['boxes']['car'] == dict(n=1, top1=0.0, top3=100.0)
    assert dump['metrics'] == pytest.approx(res)
    pred = np.load(tmp_path / 'pred.npz')
    assert pred['labels'].tolist() == [3, 4, 0, 1, 4, 0, 0, 3]
    assert pred['is_thing'].tolist() == [False, False, True, True, False, True, True, False]
    assert pred['image_index'].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert pred['box_topk'].shape == (8, 3) and pred['mask_topk'][2, 1] == 0
    assert pred['class_names'].tolist() == list(ds.metainfo['classes'])

    # fp16 per-class rounding (reference) changes the 2/3 and 1/3 classes only
    metric = RegionClassificationMetric(topk=(1, 3), reference_rounding=True)
    metric.dataset_meta = ds.metainfo
    metric.process(None, [s.to_dict() for s in samples])
    res16 = metric.evaluate(len(ds))
    assert res16['boxes.top1'] == (float(np.float16(2 / 3)) + 0) / 2 * 100
    assert res16['masks_stuff.top3'] == 75.0


def test_duplicates_missing_fields_and_table_format(fixture_samples):
    ds, samples = fixture_samples
    metric = RegionClassificationMetric(topk=(1, 3))
    metric.dataset_meta = ds.metainfo
    # the same image twice (sampler padding) counts once; an image without regions is harmless
    empty = dict(sample_idx=7, region_labels=torch.zeros(0, dtype=torch.long),
                 region_is_thing=torch.zeros(0, dtype=torch.bool),
                 pred_box_topk=torch.zeros(0, dtype=torch.long),
                 pred_mask_topk=torch.zeros(0, 5, dtype=torch.long))
    metric.process(None, [samples[0], samples[1], empty, samples[2], samples[0]])
    assert metric.compute_metrics(list(metric.results)) == pytest.approx(EXPECTED)
    # without the box predictions only the mask keys are reported
    metric.results.clear()
    dicts = [s.to_dict() for s in samples]
    for d in dicts:
        d.pop('pred_box_topk')
    metric.process(None, dicts)
    assert set(metric.evaluate(3)) == {'masks_thing.top1', 'masks_thing.top3',
                                       'masks_stuff.top1', 'masks_stuff.top3'}
    with pytest.raises(ValueError, match='only 3 predicted'):
        bad = RegionClassificationMetric(topk=(1, 5))
        narrow = samples[0].to_dict()
        narrow['pred_box_topk'] = narrow['pred_box_topk'][:, :3]
        bad.process(None, [narrow])
        bad.compute_metrics(bad.results)
    table = format_region_table({'CLIP': {'coco/boxes.top1': 44.3, 'coco/boxes.top5': 68.7},
                                 'DenseVLM': {'boxes.top1': 73.4}})
    rows = table.splitlines()
    assert rows[2].split('|')[1].strip() == 'Model'
    assert '|  44.3 |  68.7 |     - |' in rows[4] and '|  73.4 |     - |' in rows[5]
    assert len({len(r) for r in rows}) == 1  # aligned


def test_embedding_file_class_count_mismatch(fixture_samples, tmp_path):
    ds, _ = fixture_samples
    names = list(ds.metainfo['classes'])
    path = str(tmp_path / 'emb.pt')
    TextEmbeddings(torch.randn(4, 8), names[:4], torch.tensor([1, 1, 1, 0]).bool()).save(path)
    with pytest.raises(ValueError, match='4 classes but the dataset has 5'):
        load_text_embeddings(path, class_names=ds.metainfo['classes'])
    TextEmbeddings(torch.randn(5, 8), names[::-1], torch.zeros(5).bool()).save(path)
    with pytest.raises(ValueError, match="class 0 is 'grass' in the file but 'person'"):
        load_text_embeddings(path, class_names=ds.metainfo['classes'])


# ---------------------------------------------------------------------------------------------
# distributed: 2 gloo processes over a 5-image set (N % 2 != 0) equal 1 process


def _stub_predictions(sample: dict, num_classes: int) -> dict:
    rng = np.random.default_rng(sample['sample_idx'])
    out = dict(sample)
    k = len(sample['region_labels'])
    for field in ('pred_box_topk', 'pred_mask_topk'):
        out[field] = torch.from_numpy(
            np.stack([rng.permutation(num_classes)[:5] for _ in range(k)]).reshape(k, 5))
    return out


def test_two_process_gloo_equals_one_process(tmp_path):
    paths = make_synthetic_panoptic(str(tmp_path / 'syn'), num_images=5, image_size=(48, 64))
    ds = PanopticRegionDataset(
        ann_file=paths['panoptic_json'], data_prefix=dict(img=paths['img_dir'], seg=paths['seg_dir']),
        pipeline=[dict(type=LoadPanopticRegions, with_masks=False, min_size=4)])
    meta = ds.metainfo
    samples = []
    for i in range(len(ds)):
        r = ds[i]
        samples.append(_stub_predictions(
            dict(sample_idx=r['sample_idx'], img_path=r['img_path'],
                 region_labels=torch.from_numpy(r['region_labels']),
                 region_is_thing=torch.from_numpy(r['region_is_thing'])), len(meta['classes'])))
    single = run_metric(0, 1, samples, meta, keyed=True)
    assert single == run_metric(0, 1, samples, meta, keyed=False)
    # counting the padded duplicate (image 0 twice) would change the result
    metric = RegionClassificationMetric()
    metric.dataset_meta = meta
    dup = [{k: v for k, v in s.items() if k not in ('sample_idx', 'img_path')}
           for s in samples + samples[:1]]
    metric.process(None, dup)
    assert metric.compute_metrics(metric.results) != single

    out_file = str(tmp_path / 'dist.json')
    mp.spawn(dist_worker, args=(2, free_port(), samples, meta, out_file), nprocs=2, join=True)
    keyed, unkeyed = json.load(open(out_file))
    assert keyed == pytest.approx(single) and unkeyed == pytest.approx(single)
    assert set(single) == {f'{s}.top{k}' for s in ('boxes', 'masks_thing', 'masks_stuff',
                                                   'boxes_stuff') for k in (1, 5)}
