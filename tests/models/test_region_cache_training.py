"""Training from the P-VLM region cache (issue 20) on the tiny demo models: the cache pass (one
process, two processes, interrupted and resumed), the refusal of a cache of another P-VLM or
vocabulary, and the same loss and gradients as the online P-VLM."""
import copy
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.dataset import pseudo_collate

from densevlm_mm.apis.region_cache import build_region_cache
from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
from densevlm_mm.datasets.data_epoch import clear_data_epoch, set_data_epoch
from densevlm_mm.region_cache import RegionCacheMismatch, RegionCacheReader
from densevlm_mm.registry import DATASETS, MODELS
from densevlm_mm.text_embeddings import TextEmbeddings, load_text_embeddings
from densevlm_mm.utils import register_all_modules

register_all_modules(init_default_scope=True)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CACHED = osp.join(ROOT, 'configs', 'densevlm', 'densevlm_tiny_demo_cached.py')


def _cached_cfg(demo, cache, **retriever):
    cfg = load_tiny_demo_config(demo, CACHED)
    cfg.merge_from_dict({'model.target_generator.cache': cache,
                         'train_dataloader.dataset.pipeline.3.cache': cache,
                         **{f'model.target_generator.{k}': v for k, v in retriever.items()}})
    return cfg


def _items(cache):
    return dict(RegionCacheReader(cache).iter_items())


@pytest.fixture(scope='module')
def cache(demo, tmp_path_factory):
    """The exact cache of the 4 demo images, one process, batches of 1."""
    out = str(tmp_path_factory.mktemp('cache') / 'exact')
    result = build_region_cache(load_tiny_demo_config(demo), out, batch_size=1, num_workers=0)
    assert result['written'] == 4 and result['images'] == 4
    return out


def _batch(cfg, epoch=0):
    dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    set_data_epoch(epoch, 0)
    try:
        return pseudo_collate([dataset[i] for i in range(len(dataset))])
    finally:
        clear_data_epoch()


def _loss_and_grads(model, data):
    model.zero_grad()
    losses = model.loss(data['inputs'], data['data_samples'])
    losses['loss_align'].backward()
    grads = {n: p.grad.clone() for n, p in model.backbone.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize('pairs', ['paper', 'reference'])
def test_cached_training_gives_the_online_loss_gradients_and_statistics(demo, cache, pairs):
    """fp32: the loss, every student gradient and num_kept / num_thing / num_stuff of a batch
    are the online P-VLM's (the reference sampler's pairs are a subset of the cached ones)."""
    online_cfg, cached_cfg = load_tiny_demo_config(demo), _cached_cfg(demo, cache)
    cached_cfg.merge_from_dict({'train_dataloader.dataset.pipeline.2.pairs': pairs})
    online = MODELS.build(copy.deepcopy(online_cfg.model)).train()
    cached = MODELS.build(copy.deepcopy(cached_cfg.model)).train()
    assert not hasattr(cached.target_generator, 'backbone')  # the P-VLM is not built
    assert sum(p.numel() for p in cached.target_generator.parameters()) == 0
    cached.backbone.load_state_dict(online.backbone.state_dict())
    data = online.data_preprocessor(_batch(cached_cfg), True)
    assert all(s.teacher_logits.shape == (len(s.grid_boxes), 8) for s in data['data_samples'])
    ref_losses, ref_grads = _loss_and_grads(online, data)
    losses, grads = _loss_and_grads(cached, data)
    assert ref_losses['num_kept'] > 0
    for key in ('num_kept', 'num_thing', 'num_stuff'):
        assert torch.equal(losses[key], ref_losses[key]), key
    torch.testing.assert_close(losses['loss_align'], ref_losses['loss_align'], rtol=1e-6,
                               atol=1e-6)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    diff = max(float((grads[k] - ref_grads[k]).abs().max()) for k in grads)
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    print(f'cached vs online ({pairs}): loss {float(losses["loss_align"]):.8f} / '
          f'{float(ref_losses["loss_align"]):.8f}, max |grad diff| {diff:.2e} (max |grad| '
          f'{scale:.2e})')
    assert diff <= 1e-5 * scale


def test_compact_cache_keeps_the_statistics_and_measures_its_loss_deviation(demo, cache,
                                                                            tmp_path):
    out = str(tmp_path / 'compact')
    build_region_cache(load_tiny_demo_config(demo), out, mode='compact', topk=3, batch_size=4,
                       num_workers=0)
    exact_cfg, compact_cfg = _cached_cfg(demo, cache), _cached_cfg(demo, out)
    model = MODELS.build(copy.deepcopy(exact_cfg.model)).train()
    compact = MODELS.build(copy.deepcopy(compact_cfg.model)).train()
    compact.backbone.load_state_dict(model.backbone.state_dict())
    exact, _ = _loss_and_grads(model, model.data_preprocessor(_batch(exact_cfg), True))
    approx, _ = _loss_and_grads(compact, model.data_preprocessor(_batch(compact_cfg), True))
    for key in ('num_kept', 'num_thing', 'num_stuff'):  # labels and confidences are kept
        assert torch.equal(approx[key], exact[key]), key
    deviation = abs(float(approx['loss_align']) - float(exact['loss_align']))
    print(f'compact top-3 of 8 classes: loss {float(approx["loss_align"]):.6f} vs exact '
          f'{float(exact["loss_align"]):.6f} (relative deviation '
          f'{deviation / float(exact["loss_align"]):.2e})')
    assert 0 < deviation < 0.05 * float(exact['loss_align'])
    # a compact cache is its own: the exact one is not extended with compact values
    with pytest.raises(RegionCacheMismatch, match="storage.mode: cache 'exact'"):
        build_region_cache(load_tiny_demo_config(demo), cache, mode='compact', topk=3)


def test_interrupted_pass_resumes_and_ends_with_the_same_contents(demo, cache, tmp_path):
    cfg, out = load_tiny_demo_config(demo), str(tmp_path / 'cut')
    first = build_region_cache(cfg, out, batch_size=1, num_workers=0, stop_after=2)
    assert first['written'] == 2 and len(RegionCacheReader(out)) == 2
    second = build_region_cache(cfg, out, batch_size=1, num_workers=0)
    assert second['written'] == 2  # only the images the interrupted pass had not committed
    assert _items(out) == _items(cache)


def _copy_text(src, dst, **change):
    te = load_text_embeddings(src)
    fields = dict(embeddings=te.embeddings, class_names=list(te.class_names),
                  is_thing=te.is_thing, model_name=te.model_name)
    fields.update(change)
    TextEmbeddings(**fields).save(dst)
    return dst


def test_a_cache_of_another_p_vlm_or_vocabulary_is_refused(demo, cache, tmp_path):
    cfg = _cached_cfg(demo, cache)
    tg = cfg.model.target_generator
    MODELS.build(copy.deepcopy(tg))  # the cache's own settings are accepted
    text = _copy_text(tg.text_embeddings, str(tmp_path / 'other_text.pt'),
                      embeddings=load_text_embeddings(tg.text_embeddings).embeddings.flip(0))
    with pytest.raises(RegionCacheMismatch, match=r'made for another setting.*\n  text.sha256'):
        MODELS.build(dict(copy.deepcopy(tg), text_embeddings=text, vocabulary=None))
    state = torch.load(tg.backbone.pretrained, weights_only=True)
    name = next(k for k in state if k.startswith('visual.') and state[k].is_floating_point())
    state[name] = state[name] + 1e-3
    torch.save(state, tmp_path / 'other_teacher.pt')
    other = copy.deepcopy(tg)
    other.backbone.pretrained = str(tmp_path / 'other_teacher.pt')
    with pytest.raises(RegionCacheMismatch, match=r'teacher.weights_sha256: cache .* != expected'):
        MODELS.build(other)
    with pytest.raises(RegionCacheMismatch, match=r"teacher.precision: cache 'fp32' != expected "
                                                  r"'bf16'"):
        MODELS.build(dict(copy.deepcopy(tg), precision='bf16'))
    with pytest.raises(RegionCacheMismatch, match=r'(?s)teacher.tau.*build_region_cache.py'):
        MODELS.build(dict(copy.deepcopy(tg), tau=0.02))
    # the pass refuses to add another P-VLM's logits to the cache
    online = load_tiny_demo_config(demo)
    online.model.target_generator.backbone.pretrained = str(tmp_path / 'other_teacher.pt')
    with pytest.raises(RegionCacheMismatch, match='teacher.weights_sha256'):
        build_region_cache(online, cache, batch_size=1, num_workers=0)


def test_the_cache_is_keyed_by_the_project_version(demo, cache, monkeypatch):
    import densevlm_mm
    monkeypatch.setattr(densevlm_mm, '__version__', '9.9.9')
    with pytest.raises(RegionCacheMismatch, match=r"project_version: cache '.*' != expected "
                                                  r"'9.9.9'"):
        MODELS.build(copy.deepcopy(_cached_cfg(demo, cache).model.target_generator))


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def _run(argv, cwd, **env_extra):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', **env_extra)
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc


@pytest.fixture(scope='module')
def tiny_cwd(demo, tmp_path_factory):
    cwd = tmp_path_factory.mktemp('cwd')
    (cwd / 'work_dirs').mkdir()
    (cwd / 'work_dirs' / 'tiny_demo').symlink_to(demo)
    return cwd


def test_two_processes_write_the_cache_of_one(tiny_cwd, cache, tmp_path):
    """tools/dist_build_region_cache.sh with 2 CPU processes (gloo): each writes its own part;
    the contents equal the one-process pass (``cache``) byte for byte."""
    proc = _run(['bash', osp.join(ROOT, 'tools', 'dist_build_region_cache.sh'), CACHED, '2',
                 '--out', str(tmp_path / 'two'), '--batch-size', '1', '--num-workers', '0'],
                tiny_cwd, PORT=_free_port(), PYTHON=sys.executable)
    assert 'region cache: 4 images, exact' in proc.stdout and 'SA-1B (11M images)' in proc.stdout
    import lmdb
    parts = tmp_path / 'two' / 'parts'
    assert sorted(os.listdir(parts)) == ['rank-0000', 'rank-0001']
    for part in ('rank-0000', 'rank-0001'):  # every other image each
        env = lmdb.open(str(parts / part), readonly=True, lock=False)
        assert env.stat()['entries'] == 2
        env.close()
    two = _items(str(tmp_path / 'two'))
    assert len(two) == 4 and two == _items(cache)


def test_train_tool_from_the_cache_ends_with_the_online_weights(tiny_cwd, cache, tmp_path):
    """tools/train.py, 2 epochs, one persistent dataloader worker reading the cache: the same
    weights as training with the online P-VLM."""
    common = ['--cfg-options', 'train_cfg.max_epochs=2', 'train_dataloader.batch_size=2',
              'train_dataloader.num_workers=1', 'param_scheduler.0.end=1',
              'param_scheduler.1.warmup_iters=1', 'train_cfg.val_interval=10']
    train = [sys.executable, osp.join(ROOT, 'tools', 'train.py')]
    _run(train + [CACHED, '--work-dir', str(tmp_path / 'cached')] + common
         + [f'model.target_generator.cache={cache}',
            f'train_dataloader.dataset.pipeline.3.cache={cache}'], tiny_cwd)
    _run(train + [CACHED.replace('_cached', ''), '--work-dir', str(tmp_path / 'online')]
         + common, tiny_cwd)
    from densevlm_mm.utils import allow_mmengine_checkpoint_meta
    allow_mmengine_checkpoint_meta()
    a, b = (torch.load(tmp_path / w / 'epoch_2.pth', weights_only=True)['state_dict']
            for w in ('cached', 'online'))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


def test_build_tool_names_the_missing_cache_folder(tiny_cwd):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'build_region_cache.py'),
                           CACHED.replace('_cached', '')], cwd=tiny_cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert 'densevlm_tiny_demo.py sets no `region_cache` folder: pass --out DIR' in proc.stderr


def _sa1b_shard(path, start, n):
    import io
    import tarfile

    import numpy as np
    from PIL import Image
    with tarfile.open(path, 'w') as tar:
        for i in range(start, start + n):
            buf = io.BytesIO()
            rgb = np.random.default_rng(i).integers(0, 255, (40 + i, 56, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(buf, format='JPEG')
            info = tarfile.TarInfo(f'sa_{i}.jpg')
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))


def test_sa1b_shards_pass_skips_cached_images_and_feeds_training(demo, tmp_path):
    """Streaming SA-1B shards: the pass keys images '<shard>/<key>.jpg', a second pass skips the
    cached ones, and the training pipeline reads the logits the online P-VLM gives."""
    _sa1b_shard(str(tmp_path / 'sa_000000.tar'), 1, 3)
    _sa1b_shard(str(tmp_path / 'sa_000001.tar'), 4, 2)
    cfg, out = _cached_cfg(demo, str(tmp_path / 'cache')), str(tmp_path / 'cache')
    cfg.train_dataloader.dataset = dict(
        type='SA1BShardDataset', shards=str(tmp_path / 'sa_*.tar'),
        pipeline=copy.deepcopy(cfg.train_dataloader.dataset.pipeline))
    assert build_region_cache(cfg, out, batch_size=2, num_workers=0,
                              max_images=3)['written'] == 3
    assert build_region_cache(cfg, out, batch_size=2, num_workers=0)['written'] == 2
    assert set(_items(out)) == {f'sa_00000{i // 4}.tar/sa_{i}.jpg' for i in range(1, 6)}
    cached, online = _cached_cfg(demo, out), load_tiny_demo_config(demo)
    retriever = MODELS.build(copy.deepcopy(online.model.target_generator))
    model = MODELS.build(copy.deepcopy(cached.model))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    batch = model.data_preprocessor(pseudo_collate(list(dataset)), True)
    samples = batch['data_samples']
    assert len(samples) == 5
    expected = retriever(batch['inputs'], [s.grid_boxes for s in samples])
    got = model.target_generator(samples)
    torch.testing.assert_close(got['logits'], expected['logits'], rtol=1e-5, atol=1e-5)
    assert torch.equal(got['labels'], expected['labels'])
