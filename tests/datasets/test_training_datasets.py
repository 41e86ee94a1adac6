"""Unlabeled training datasets (COCO images, image folders, SA-1B tar shards), corrupt images."""
import io
import json
import os
import os.path as osp
import tarfile

import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from PIL import Image
from torch.utils.data import DataLoader

from densevlm_mm.datasets.coco_images import CocoImageDataset
from densevlm_mm.datasets.image_folder import ImageFolderDataset
from densevlm_mm.datasets.sa1b import SA1BShardDataset, build_shard_index, main as sa1b_main
from densevlm_mm.datasets.transforms.loading import LoadImageSafe, get_skipped_images

LOAD = [dict(type='LoadImageSafe')]


@pytest.fixture(autouse=True)
def _scope():
    with DefaultScope.overwrite_default_scope('densevlm_mm'):
        yield


def _image_bytes(w, h, fmt='JPEG', mode='RGB', seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


CORRUPT = b'\xff\xd8\xff\xe0 not really a jpeg'


def _write(path, data):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return path


def _identity(x):
    return x


def _loader(dataset, **kw):
    return DataLoader(dataset, batch_size=1, collate_fn=_identity, **kw)


# ---------------------------------------------------------------------------------- LoadImageSafe
def test_load_image_safe_decodes_rgb_and_skips_bad_images(tmp_path):
    gray = _write(str(tmp_path / 'g.png'), _image_bytes(30, 20, 'PNG', 'L'))
    before = get_skipped_images().count
    out = LoadImageSafe()(dict(img_path=gray))
    assert out['img'].dtype == np.uint8 and out['img'].shape == (20, 30, 3)
    assert out['ori_shape'] == (20, 30) and out['img_path'] == gray
    ref = np.asarray(Image.open(gray).convert('RGB'))
    assert np.array_equal(out['img'], ref)

    out = LoadImageSafe()(dict(img_bytes=_image_bytes(16, 12, 'PNG', 'RGBA'), img_path='t/a.png'))
    assert out['img'].shape == (12, 16, 3) and 'img_bytes' not in out

    assert out['img'].flags.writeable  # later steps may write in place; torch.from_numpy needs it

    big = dict(img_bytes=_image_bytes(1200, 700), img_path='big.jpg')
    out = LoadImageSafe(draft_size=256)(dict(big))  # libjpeg decodes at 1/4 scale: 300 >= 256
    assert out['img'].shape == (175, 300, 3) and out['ori_shape'] == (700, 1200)
    assert out['img_shape'] == (175, 300)
    assert LoadImageSafe(draft_size=1000)(dict(big))['img'].shape == (700, 1200, 3)

    assert LoadImageSafe()(dict(img_path=_write(str(tmp_path / 'bad.jpg'), CORRUPT))) is None
    assert LoadImageSafe()(dict(img_path=str(tmp_path / 'missing.jpg'))) is None
    assert LoadImageSafe()(dict(img_bytes=_image_bytes(9, 40), img_path='thin.jpg')) is None
    assert LoadImageSafe(min_size=5)(dict(img_bytes=_image_bytes(9, 40), img_path='x')) is not None
    skipped = get_skipped_images()
    assert skipped.count == before + 3
    assert 'bad.jpg: cannot decode' in skipped.paths[-3]
    assert 'missing.jpg' in skipped.paths[-2]
    assert skipped.paths[-1].startswith('thin.jpg: too small (9x40')


# ---------------------------------------------------------------------------------- COCO
def _coco(tmp_path, n=4, corrupt=(2, ), with_json=True):
    img_dir = tmp_path / 'train2017'
    images, sizes = [], {}
    for i in range(n):
        name = f'{i:012d}.jpg'
        w, h = 40 + 8 * i, 30 + 4 * i
        _write(str(img_dir / name), CORRUPT if i in corrupt else _image_bytes(w, h, seed=i))
        images.append(dict(id=100 + i, file_name=name, width=w, height=h))
        sizes[str(img_dir / name)] = (h, w)
    ann = dict(images=images, annotations=[dict(id=1, image_id=100, bbox=[0, 0, 5, 5],
                                                category_id=1)],
               categories=[dict(id=1, name='x')])
    ann_file = tmp_path / 'annotations' / 'instances_train2017.json'
    if with_json:
        _write(str(ann_file), json.dumps(ann).encode())
    return str(tmp_path), sizes


def test_coco_images_includes_unannotated_and_skips_corrupt(tmp_path):
    root, sizes = _coco(tmp_path)
    ds = CocoImageDataset(ann_file='annotations/instances_train2017.json', data_root=root,
                          data_prefix=dict(img='train2017/'), pipeline=LOAD)
    assert len(ds) == 4  # 3 images have no annotation: all are kept
    assert [ds.get_data_info(i)['img_id'] for i in range(4)] == [100, 101, 102, 103]
    before = get_skipped_images().count
    for i in (0, 1, 3):
        out = ds[i]
        assert out['img'].shape == sizes[out['img_path']] + (3, )
    np.random.seed(0)
    out = ds[2]  # corrupt: another image is drawn
    assert out['img_path'] != ds.get_data_info(2)['img_path']
    assert out['img'].shape == sizes[out['img_path']] + (3, )
    assert get_skipped_images().count > before


def test_coco_train_ratio_subset_is_rank_independent(tmp_path, monkeypatch):
    root, _ = _coco(tmp_path, n=10, corrupt=())
    kw = dict(ann_file=osp.join(root, 'annotations/instances_train2017.json'),
              data_prefix=dict(img=osp.join(root, 'train2017')), train_ratio=0.5, seed=3)
    ids = []
    for rank in (0, 1):
        monkeypatch.setattr('mmengine.dist.get_dist_info', lambda r=rank: (r, 2))
        np.random.seed(rank)  # global RNG state differs per rank
        ds = CocoImageDataset(**kw)
        ids.append([ds.get_data_info(i)['img_id'] for i in range(len(ds))])
    assert len(ids[0]) == 5 and ids[0] == ids[1] and ids[0] == sorted(ids[0])
    other = CocoImageDataset(**dict(kw, seed=4))
    assert [other.get_data_info(i)['img_id'] for i in range(5)] != ids[0]


def test_coco_missing_paths_are_named(tmp_path):
    root, _ = _coco(tmp_path, n=1, corrupt=(), with_json=False)
    with pytest.raises(FileNotFoundError, match='instances_train2017.json'):
        CocoImageDataset(ann_file='annotations/instances_train2017.json', data_root=root,
                         data_prefix=dict(img='train2017/'))
    root, _ = _coco(tmp_path, n=1, corrupt=())
    with pytest.raises(FileNotFoundError, match='val2017'):
        CocoImageDataset(ann_file='annotations/instances_train2017.json', data_root=root,
                         data_prefix=dict(img='val2017/'))


# ---------------------------------------------------------------------------------- folder
def _folder(tmp_path):
    root = tmp_path / 'imgs'
    files = {
        'b/z.JPG': _image_bytes(30, 20, seed=1),
        'a.Png': _image_bytes(25, 35, 'PNG', seed=2),
        'b/c/d.jpeg': _image_bytes(40, 12, seed=3),
        'b/bad.jpg': CORRUPT,
        'b/notes.txt': b'hello',
        '.hidden/e.jpg': _image_bytes(20, 20),
        'b/.f.jpg': _image_bytes(20, 20),
    }
    for rel, data in files.items():
        _write(str(root / rel), data)
    return str(root)


def test_image_folder_is_recursive_sorted_case_insensitive(tmp_path):
    root = _folder(tmp_path)
    ds = ImageFolderDataset(data_root=root, pipeline=LOAD)
    rel = [osp.relpath(ds.get_data_info(i)['img_path'], root) for i in range(len(ds))]
    assert rel == ['a.Png', 'b/bad.jpg', 'b/c/d.jpeg', 'b/z.JPG']
    shapes = {osp.basename(ds[i]['img_path']): ds[i]['img'].shape for i in (0, 2, 3)}
    assert shapes == {'a.Png': (35, 25, 3), 'd.jpeg': (12, 40, 3), 'z.JPG': (20, 30, 3)}
    only_png = ImageFolderDataset(data_root=root, extensions=['PNG'])
    assert len(only_png) == 1


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        ImageFolderDataset(data_root=str(tmp_path / 'nowhere'))
    _write(str(tmp_path / 'txt_only' / 'a.txt'), b'x')
    with pytest.raises(FileNotFoundError, match='no image file.*txt_only'):
        ImageFolderDataset(data_root=str(tmp_path / 'txt_only'))


def test_all_corrupt_map_dataset_raises_naming_the_source(tmp_path):
    for i in range(3):
        _write(str(tmp_path / 'broken' / f'{i}.jpg'), CORRUPT)
    ds = ImageFolderDataset(data_root=str(tmp_path / 'broken'), pipeline=LOAD)
    with pytest.raises(RuntimeError, match=r'none of the 3 images.*broken'):
        ds[0]


@pytest.mark.parametrize('context', ['fork', 'spawn'])
def test_skips_in_worker_processes_reach_the_main_process(tmp_path, context):
    root = tmp_path / 'imgs'
    for i in range(4):
        _write(str(root / f'{i}.jpg'), CORRUPT if i == 1 else _image_bytes(20, 20, seed=i))
    ds = ImageFolderDataset(data_root=str(root), pipeline=LOAD)
    before = get_skipped_images().count
    workers = 1 if context == 'spawn' else 2  # a spawned worker imports torch: ~10 s each
    loader = _loader(ds, num_workers=workers, multiprocessing_context=context)
    paths = [b[0]['img_path'] for b in loader]
    assert len(paths) == 4 and str(root / '1.jpg') not in paths
    skipped = get_skipped_images()
    assert skipped.count >= before + 1
    assert any(p.startswith(str(root / '1.jpg')) for p in skipped.paths)


# ---------------------------------------------------------------------------------- SA-1B
def _shard(path, start, n, corrupt=(), tiny=()):
    """An SA-1B-style tar: sa_<i>.jpg + sa_<i>.json pairs; returns {img_path: (h, w)}."""
    sizes = {}
    with tarfile.open(path, 'w') as tar:
        for i in range(start, start + n):
            w, h = 32 + i, 24 + 2 * i
            img = CORRUPT if i in corrupt else _image_bytes(4 if i in tiny else w, h, seed=i)
            ann = json.dumps(dict(image=dict(image_id=i, width=w, height=h), annotations=[]))
            for name, data in ((f'sa_{i}.jpg', img), (f'sa_{i}.json', ann.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if i not in corrupt and i not in tiny:
                sizes[f'{path}/sa_{i}.jpg'] = (h, w)
    return sizes


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / 'sa1b'
    root.mkdir()
    sizes = _shard(str(root / 'sa_000000.tar'), 1, 4)
    sizes.update(_shard(str(root / 'sa_000001.tar'), 5, 4, corrupt=(6, ), tiny=(8, )))
    return str(root), sizes


def _collect(dataset, **loader_kw):
    return [s['img_path'] for batch in _loader(dataset, **loader_kw) for s in batch]


def test_sa1b_single_process_yields_rgb_arrays(shards):
    root, sizes = shards
    ds = SA1BShardDataset(osp.join(root, 'sa_*.tar'), pipeline=LOAD, with_annotations=True)
    assert len(ds) == 8 and ds.shards == sorted(ds.shards)
    before = get_skipped_images().count
    seen = {}
    for out in ds:
        assert out['img'].dtype == np.uint8 and out['img'].ndim == 3
        seen[out['img_path']] = out['img'].shape[:2]
        assert out['sa1b_ann']['image']['width'] == out['img'].shape[1]
    assert seen == sizes
    assert get_skipped_images().count == before + 2  # sa_6 corrupt, sa_8 too small


@pytest.mark.parametrize('shuffle', [True, False])
def test_sa1b_two_workers_see_every_image_once(shards, shuffle):
    root, sizes = shards
    ds = SA1BShardDataset(root, pipeline=LOAD, shuffle=shuffle, shuffle_buffer=3)
    before = get_skipped_images().count
    paths = _collect(ds, num_workers=2)
    assert sorted(paths) == sorted(sizes)
    assert get_skipped_images().count == before + 2  # counted inside the workers


def test_sa1b_sample_level_split_when_fewer_shards_than_workers(shards):
    root, sizes = shards
    ds = SA1BShardDataset([osp.join(root, 'sa_000001.tar')], pipeline=LOAD, shuffle_buffer=2)
    paths = _collect(ds, num_workers=2)
    assert sorted(paths) == sorted(p for p in sizes if 'sa_000001' in p)


def test_sa1b_equal_length_across_ranks(shards):
    root, sizes = shards
    good = osp.join(root, 'sa_000000.tar')
    per_rank = []
    for rank in (0, 1):
        ds = SA1BShardDataset(good, pipeline=LOAD, rank=rank, world_size=2, seed=5)
        assert len(ds) == 2
        # 2 ranks × 2 workers = 4 consumers > 1 shard: sample-level split, 1 sample each
        per_rank.append(_collect(ds, num_workers=2))
    assert len(per_rank[0]) == len(per_rank[1]) == 2
    assert sorted(per_rank[0] + per_rank[1]) == sorted(p for p in sizes if 'sa_000000' in p)
    # one shard per rank; the rank with 2 unreadable images reads its shard again to fill up
    per_rank = [[s['img_path'] for s in SA1BShardDataset(root, pipeline=LOAD, rank=r,
                                                          world_size=2)] for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 4
    assert set(per_rank[0] + per_rank[1]) == set(sizes)


def test_sa1b_epoch_reshuffles_deterministically(tmp_path):
    for k in range(4):
        _shard(str(tmp_path / f'sa_{k}.tar'), 10 * k, 3)
    ds = SA1BShardDataset(str(tmp_path), pipeline=LOAD, shuffle_buffer=4)
    ds.set_epoch(0)
    first = [s['img_path'] for s in ds]
    ds.set_epoch(0)
    assert [s['img_path'] for s in ds] == first
    second = [s['img_path'] for s in ds]  # no set_epoch: the next epoch
    ds.set_epoch(1)
    assert [s['img_path'] for s in ds] == second != first
    assert sorted(second) == sorted(first)


def test_sa1b_errors_name_the_path(tmp_path, shards):
    with pytest.raises(FileNotFoundError, match='nothing_here'):
        SA1BShardDataset(str(tmp_path / 'nothing_here' / 'sa_*.tar'))
    with pytest.raises(FileNotFoundError, match='empty'):
        SA1BShardDataset([])
    for k in range(2):
        _shard(str(tmp_path / f'bad_{k}.tar'), 3 * k, 3, corrupt=range(3 * k, 3 * k + 3))
    ds = SA1BShardDataset(str(tmp_path / 'bad_*.tar'), pipeline=LOAD)
    with pytest.raises(RuntimeError, match=r'none of the 6 samples in .*bad_0.tar.*bad_1.tar'):
        list(ds)
    # with several workers, each one raises after max_consecutive_failures in a row
    ds = SA1BShardDataset(str(tmp_path / 'bad_*.tar'), pipeline=LOAD, max_consecutive_failures=3)
    batches = iter(_loader(ds, num_workers=2))
    with pytest.raises(Exception, match='3 samples in a row could not be loaded.*bad_'):
        list(batches)
    batches._shutdown_workers()


def test_sa1b_shard_index(shards, tmp_path):
    root, _ = shards
    out = str(tmp_path / 'index.json')
    sa1b_main(['index', osp.join(root, 'sa_*.tar'), '-o', out])
    assert build_shard_index(root) == json.load(open(out)) == {'sa_000000.tar': 4,
                                                               'sa_000001.tar': 4}
    ds = SA1BShardDataset(root, num_samples=out)
    assert len(ds) == 8 and len(SA1BShardDataset(root, num_samples=100)) == 100


def test_sa1b_with_runner_build_dataloader(shards):
    from mmengine.runner import Runner
    root, sizes = shards
    loader = Runner.build_dataloader(
        dict(dataset=dict(type='SA1BShardDataset', shards=osp.join(root, 'sa_*.tar'),
                          pipeline=LOAD),
             sampler=None, batch_size=2, num_workers=2, persistent_workers=True,
             collate_fn=dict(type='pseudo_collate')), seed=0)
    assert isinstance(loader.dataset, SA1BShardDataset) and len(loader) == 4
    for epoch in range(2):
        loader.dataset.set_epoch(epoch)
        paths = [p for batch in loader for p in batch['img_path']]  # pseudo_collate: dict of lists
        assert sorted(paths) == sorted(sizes)


def test_full_pipeline_with_resize_and_grid_transforms(shards):
    root, _ = shards
    pipeline = LOAD + [dict(type='ResizeLongestPad', size=64), dict(type='SampleGridRegions'),
                       dict(type='PackDenseVLMInputs')]
    out = next(iter(SA1BShardDataset(root, pipeline=pipeline)))
    assert out['inputs'].shape == (3, 64, 64) and out['inputs'].dtype == torch.uint8
    assert out['data_samples'].grid_boxes.shape[1] == 4


# ------------------------------------------------------------------------------- hook in a Runner
class MeanModel(BaseModel):
    """Consumes the images of a batch (pseudo-collated ``LoadImageSafe`` outputs)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, img=None, mode='loss', **kwargs):
        x = torch.stack([torch.as_tensor(i, dtype=torch.float32).mean() for i in img])
        return dict(loss=(self.w * x).mean() * 0)


def test_runner_trains_on_sa1b_and_logs_skipped_images(shards, tmp_path):
    from mmengine.runner import Runner

    from densevlm_mm.engine.hooks.skipped_images_hook import SkippedImagesHook

    root, sizes = shards
    runner = Runner(
        model=MeanModel(), work_dir=str(tmp_path / 'work'),
        train_dataloader=dict(
            dataset=dict(type='SA1BShardDataset', shards=root, pipeline=LOAD),
            sampler=None, batch_size=2, num_workers=2, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[dict(type='SkippedImagesHook', interval=1)],
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        default_scope='densevlm_mm', experiment_name=f'sa1b_skipped_{id(tmp_path)}')
    before = get_skipped_images().count
    runner.train()
    # per epoch one worker reads 4 good images (2 batches), the other 2 good of 4 (1 batch)
    assert runner.iter == 6
    assert runner.message_hub.get_info('skipped_images') == 4  # sa_6, sa_8 in each epoch
    assert get_skipped_images().count == before + 4
    assert runner.train_loop.dataloader.dataset._epoch == 1  # forwarded by the hook
    assert any(isinstance(h, SkippedImagesHook) for h in runner.hooks)
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert 'skipped training images so far: 4' in log and 'sa_6.jpg: cannot decode' in log


def test_runner_stops_when_an_epoch_yields_nothing(tmp_path):
    from mmengine.runner import Runner
    for k in range(2):
        _shard(str(tmp_path / f'bad_{k}.tar'), 3 * k, 3, corrupt=range(3 * k, 3 * k + 3))
    runner = Runner(
        model=MeanModel(), work_dir=str(tmp_path / 'work'),
        train_dataloader=dict(
            dataset=dict(type='SA1BShardDataset', shards=str(tmp_path / 'bad_*.tar'),
                         pipeline=LOAD),
            sampler=None, batch_size=2, num_workers=2, collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[dict(type='SkippedImagesHook')], default_hooks=dict(checkpoint=None),
        default_scope='densevlm_mm', experiment_name=f'sa1b_empty_{id(tmp_path)}')
    with pytest.raises(RuntimeError, match=r'epoch 1 ran no training iteration.*bad_'):
        runner.train()
