"""The region cache's store (keys, values, refusals) and the data side that reads it (issue 20),
and the training datasets' own randomness (issue 21)."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from densevlm_mm.datasets.data_epoch import clear_data_epoch, set_data_epoch
from densevlm_mm.datasets.transforms.region_sampler import reference_grid_pairs
from densevlm_mm.datasets.transforms.region_sampling import SampleGridRegions
from densevlm_mm.datasets.transforms.region_targets import LoadRegionTargets
from densevlm_mm.region_cache import (RegionCacheMismatch, RegionCacheReader, RegionCacheWriter,
                                      RegionCodec, cache_grid_pairs, cell_offsets, make_meta,
                                      read_meta, storage_report, stored_keys, write_meta)

IS_THING = [True, True, True, False, False, True, False, False, False, True]


def _meta(mode='exact', topk=3, pairs=((2, 2), (2, 3)), size=(64, 64), names=None):
    names = names or [f'c{i}' for i in range(len(IS_THING))]
    return make_meta(dict(model_name='t', weights_sha256='w'),
                     dict(sha256='s', class_names=names, is_thing=IS_THING),
                     dict(size=list(size)), pairs, mode=mode, topk=topk)


def _logits(cells, seed=0, scale=8.0):
    return (torch.randn(cells, len(IS_THING), generator=torch.Generator().manual_seed(seed))
            * scale).numpy()


def test_cached_pairs_cover_both_samplers_and_cells_are_laid_out_row_major():
    pairs = cache_grid_pairs(6)
    assert len(pairs) == 25 and set(reference_grid_pairs(6)) <= set(pairs)
    offsets, total = cell_offsets(pairs)
    assert total == 400 and sum(m * n for m, n in reference_grid_pairs(6)) == 309
    assert offsets[(2, 2)] == 0 and offsets[(2, 3)] == 4 and offsets[(6, 6)] == 400 - 36


def test_exact_values_round_trip_bit_for_bit():
    codec = RegionCodec(_meta())
    x = _logits(10)
    value = codec.encode(x)
    assert len(value) == codec.nbytes == 10 * 10 * 4
    assert np.array_equal(codec.decode(value), x)
    assert np.array_equal(codec.decode(value, np.array([7, 2])), x[[7, 2]])
    with pytest.raises(ValueError, match=r'expected logits \[10, 10\]'):
        codec.encode(x[:3])
    with pytest.raises(RegionCacheMismatch, match='damaged'):
        codec.decode(value[:-4])


def test_compact_keeps_top_values_labels_confidence_and_group_normalisers():
    codec = RegionCodec(_meta('compact', topk=3))
    x = _logits(10, scale=5.0)
    value = codec.encode(x)
    assert len(value) == codec.nbytes == 10 * (3 * 4 + 8)
    y = codec.decode(value)
    is_thing = np.array(IS_THING)
    # label, top-3 values (relative to the row maximum, float16), and the log-sum-exp of every
    # group: the confidence and every group softmax's normaliser are kept
    assert np.array_equal(y.argmax(1), x.argmax(1))
    top = np.sort(x, axis=1)[:, -3:] - x.max(1, keepdims=True)
    assert np.allclose(np.sort(y, axis=1)[:, -3:], top, rtol=1e-3, atol=1e-6)  # float16

    def lse(a, cols):
        return np.log(np.exp(a[:, cols] - x.max(1, keepdims=True)).sum(1))
    for cols in (is_thing, ~is_thing, np.ones_like(is_thing)):
        assert np.allclose(lse(y + x.max(1, keepdims=True), cols), lse(x, cols), rtol=1e-3,
                           atol=1e-3)
    conf = lambda a: np.exp(a.max(1) - np.log(np.exp(a).sum(1)))  # noqa: E731
    assert np.allclose(conf(y), conf(x), rtol=1e-3, atol=1e-4)
    # the tail is spread evenly: the classes of one group outside the top-3 share one value
    row, top3 = y[0], np.argsort(-x[0])[:3]
    rest = [c for c in range(10) if c not in top3 and IS_THING[c]]
    assert len(set(row[rest].tolist())) == 1
    with pytest.raises(ValueError, match=r'topk must be in \[1, 9\]'):
        _meta('compact', topk=10)


def test_store_writes_parts_reads_rows_and_reports_sizes(tmp_path):
    root = str(tmp_path / 'cache')
    meta = write_meta(root, _meta())
    x = {f'k{i}': _logits(10, seed=i) for i in range(3)}
    for part, keys in (('rank-0000', ['k0', 'k2']), ('rank-0001', ['k1'])):
        writer = RegionCacheWriter(root, part)
        assert writer.put_many((k, x[k]) for k in keys) == len(keys)
        writer.close()
    assert stored_keys(root) == {'k0', 'k1', 'k2'}
    reader = RegionCacheReader(root)
    assert len(reader) == 3 and reader.meta == meta
    # pair (2, 3) starts at row 4; cells 5 and 0 of it are rows 9 and 4
    assert np.array_equal(reader.rows('k1', 2, 3, [5, 0]), x['k1'][[9, 4]])
    with pytest.raises(KeyError, match=r"'k9' is not in the P-VLM region cache.*3 images cached"
                                        r".*build_region_cache.py"):
        reader.rows('k9', 2, 2, [0])
    with pytest.raises(RegionCacheMismatch, match=r'sampler drew \(3, 3\)'):
        reader.rows('k0', 3, 3, [0])
    with pytest.raises(ValueError, match='outside a 2x2 grid'):
        reader.rows('k0', 2, 2, [4])
    report = storage_report(root, seconds_per_image=0.5, processes=2)
    assert report['images'] == 3 and report['value_bytes'] == 400
    assert report['coco_value_bytes'] == 400 * 118287 and report['sa1b_value_bytes'] == 4.4e9
    assert report['coco_hours'] == pytest.approx(0.5 * 118287 / 3600 / 2)
    # a reader pickled into a spawned worker opens its own handles
    import pickle
    again = pickle.loads(pickle.dumps(reader))
    assert np.array_equal(again.rows('k2', 2, 2, [3]), x['k2'][[3]])


def test_a_cache_of_another_key_or_format_is_refused(tmp_path):
    root = str(tmp_path / 'cache')
    write_meta(root, _meta())
    write_meta(root, _meta())  # same key: resumes
    with pytest.raises(RegionCacheMismatch, match=r"text.class_names: cache \['c0'"):
        write_meta(root, _meta(names=[f'd{i}' for i in range(10)]))
    with pytest.raises(RegionCacheMismatch, match=r"storage.mode: cache 'exact' != expected "
                                                  r"'compact'"):
        write_meta(root, _meta('compact'))
    meta = json.load(open(osp.join(root, 'meta.json')))
    meta['format_version'] = 99
    json.dump(meta, open(osp.join(root, 'meta.json'), 'w'))
    with pytest.raises(RegionCacheMismatch, match='format version 99.*build it again'):
        read_meta(root)
    with pytest.raises(FileNotFoundError, match=r'no P-VLM region cache.*build_region_cache.py'):
        read_meta(str(tmp_path / 'nothing'))


def _cache_with(root, size=(64, 64)):
    write_meta(root, _meta(size=size, pairs=cache_grid_pairs(6)))
    writer = RegionCacheWriter(root, 'rank-0000')
    writer.put_many([('a.jpg', _logits(400))])
    writer.close()


def test_load_region_targets_reads_the_drawn_cells_and_checks_the_sample(tmp_path):
    root = str(tmp_path / 'cache')
    _cache_with(root)
    step = LoadRegionTargets(cache=root)
    sample = dict(image_key='a.jpg', img_shape=(64, 64), valid_hw=(64, 48), sample_idx=3)
    set_data_epoch(0, 0)
    try:
        sample = SampleGridRegions(max_regions=5, seed=1).transform(sample)
    finally:
        clear_data_epoch()
    out = step.transform(dict(sample))
    (m, n), cells = sample['grid_pair'], sample['grid_cells']
    offset = cell_offsets(cache_grid_pairs(6))[0][(m, n)]
    assert out['teacher_logits'].shape == (len(sample['grid_boxes']), 10)
    assert np.array_equal(out['teacher_logits'], _logits(400)[offset + cells])
    with pytest.raises(RegionCacheMismatch, match='holds 64x64 inputs but .a.jpg. is 32x32'):
        step.transform(dict(sample, img_shape=(32, 32)))
    with pytest.raises(KeyError, match='no "image_key"'):
        step.transform({k: v for k, v in sample.items() if k != 'image_key'})
    with pytest.raises(KeyError, match='put SampleGridRegions before it'):
        step.transform(dict(image_key='a.jpg'))


# ------------------------------------------------------------------ datasets (issue 21 item)
def test_grid_draws_keep_their_values_and_report_the_drawn_cells():
    """The draws of (seed, epoch, index) are those of the sampler before the cells were
    reported (pinned), so exact resume and earlier runs are unchanged."""
    step = SampleGridRegions(max_split=6, max_regions=8, pairs='paper', seed=3)
    set_data_epoch(2, 0)
    try:
        first = step.transform(dict(valid_hw=(60, 90), sample_idx=0))
        last = step.transform(dict(valid_hw=(60, 90), sample_idx=7))
    finally:
        clear_data_epoch()
    assert first['grid_pair'] == (6, 6) and first['grid_cells'].tolist() == [3, 10, 13, 16, 21,
                                                                            24, 29, 30]
    assert first['grid_boxes'][:2].tolist() == [[45, 0, 60, 10], [60, 10, 75, 20]]
    assert last['grid_pair'] == (2, 2) and last['grid_cells'].tolist() == [0, 1, 2, 3]
    assert last['grid_boxes'].tolist() == [[0, 0, 45, 30], [45, 0, 90, 30], [0, 30, 45, 60],
                                           [45, 30, 90, 60]]


def test_retry_index_is_the_dataset_s_own_and_ignores_global_random_state(tmp_path):
    from PIL import Image

    from densevlm_mm.datasets.image_folder import ImageFolderDataset
    for i in range(20):
        Image.new('RGB', (20, 20)).save(tmp_path / f'{i:02d}.png')
    ds = ImageFolderDataset(data_root=str(tmp_path))
    draws = []
    for seed in (0, 1):
        np.random.seed(seed)
        torch.manual_seed(seed)
        draws.append([ds.retry_index(5, a) for a in range(6)])
    assert draws[0] == draws[1] == [7, 3, 9, 4, 16, 11]  # pinned
    set_data_epoch(1, 0)
    try:
        other_epoch = [ds.retry_index(5, a) for a in range(6)]
    finally:
        clear_data_epoch()
    assert other_epoch != draws[0]
    assert [ds.get_data_info(i)['image_key'] for i in (0, 19)] == ['00.png', '19.png']
