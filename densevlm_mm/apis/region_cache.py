"""The cache pass: the frozen P-VLM's logits of every grid cell of every training image, once
(issue 20; ``tools/build_region_cache.py``). Format and key: :mod:`densevlm_mm.region_cache`.

The pass reads the training set of a config through the training pipeline's steps before the grid
sampler (loading, resizing, padding: the pixels the student sees), normalises with the model's data
preprocessor, runs the config's P-VLM on all cells of the cached grid pairs, and commits one LMDB
transaction per batch. Under a launcher each process takes every ``world``-th image (SA-1B: shard
split of :class:`SA1BShardDataset`) and writes its own part; images already in the cache (any part)
are skipped, so an interrupted pass resumes where it stopped, with any number of processes.
"""
import copy
import os
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from torch.utils.data import DataLoader, Dataset, IterableDataset

from densevlm_mm.region_cache import (RegionCacheWriter, cache_grid_pairs, make_meta,
                                      storage_report, stored_keys, write_meta)

#: pipeline steps that draw or read regions: the cache pass stops before the first of them
REGION_STEPS = ('SampleGridRegions', 'LoadRegionTargets', 'CropGridRegions', 'PackDenseVLMInputs')
PACK = dict(type='PackDenseVLMInputs', fields=(), meta_keys=('image_key', 'valid_hw', 'img_shape'))


def online_retriever_cfg(cfg) -> dict:
    """The P-VLM retriever of a config as a :class:`RegionRetriever` config (a
    ``CachedRegionRetriever`` config names the same P-VLM)."""
    tg = cfg.model.get('target_generator')
    if not isinstance(tg, dict) or 'text_embeddings' not in tg:
        raise ValueError('the config has no P-VLM (model.target_generator with text_embeddings): '
                         'the region cache is for DenseVLM-style configs')
    tg = copy.deepcopy(dict(tg))
    tg.pop('cache', None)
    if str(tg.get('type', '')).split('.')[-1] in ('CachedRegionRetriever', 'RegionRetriever'):
        tg['type'] = 'RegionRetriever'
    else:
        raise ValueError(f'model.target_generator type {tg.get("type")!r}: the region cache caches '
                         'a RegionRetriever (DenseVLM / logits-KD configs)')
    return tg


def pipeline_settings(cfg) -> Tuple[List[dict], dict]:
    """The training pipeline's steps before the sampler, and the sampler's config."""
    pipeline = cfg.train_dataloader.dataset.get('pipeline') or []
    prefix, sampler = [], None
    for step in pipeline:
        name = str(step.get('type', '')).split('.')[-1]
        if name == 'SampleGridRegions':
            sampler = dict(step)
        if name in REGION_STEPS:
            break
        prefix.append(copy.deepcopy(dict(step)))
    else:
        sampler = None
    if sampler is None:
        raise ValueError('the training pipeline has no SampleGridRegions: the region cache '
                         'stores the P-VLM logits of its grid cells')
    if not any(str(s.get('type', '')).endswith('ResizeLongestPad') for s in prefix):
        raise ValueError('the training pipeline has no ResizeLongestPad before SampleGridRegions; '
                         'the cache is keyed by a fixed input size')
    return prefix, sampler


def expected_meta(cfg, mode: str = 'exact', topk: int = 32) -> dict:
    """The ``meta.json`` a cache of this config has (key + storage)."""
    from densevlm_mm.models.cached_retrieval import teacher_cache_key
    prefix, sampler = pipeline_settings(cfg)
    teacher, text = teacher_cache_key(online_retriever_cfg(cfg))
    resize = next(s for s in prefix if str(s.get('type', '')).endswith('ResizeLongestPad'))
    size = resize.get('size', 512)
    size = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
    preprocessor = dict(cfg.model.get('data_preprocessor') or dict(type='DenseVLMDataPreprocessor'))
    image = dict(size=size, preprocess=dict(pipeline=prefix, data_preprocessor=preprocessor))
    pairs = cache_grid_pairs(int(sampler.get('max_split', 6)))
    return make_meta(teacher, text, image, pairs, mode=mode, topk=topk)


def cell_boxes(valid_hw: Sequence[float], pairs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Boxes ``[cells, 4]`` of every cell of the pairs, in cache order (the sampler's tiling)."""
    from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler
    tiler = GridRegionSampler(max_split=max(max(p) for p in pairs), max_regions=1 << 30)
    return torch.cat([tiler.grid_boxes(valid_hw, int(m), int(n)) for m, n in pairs])


def teacher_cell_logits(retriever, inputs: torch.Tensor, valid_hws: Sequence[Sequence[float]],
                        pairs: Sequence[Sequence[int]]) -> List[torch.Tensor]:
    """The P-VLM logits ``[cells, C]`` of every cached cell of each image of a batch."""
    boxes = [cell_boxes(hw, pairs).to(inputs.device) for hw in valid_hws]
    logits = retriever(inputs, boxes)['logits'].float().cpu()
    return list(logits.split([len(b) for b in boxes]))


class _Todo(Dataset):
    """Map-style: the given indices through the cache pipeline (``None`` for unreadable)."""

    def __init__(self, dataset, indices: List[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset.prepare_data(self.indices[i])


class _TodoStream(IterableDataset):
    """Iterable (SA-1B shards): skip cached keys before decoding, then the cache pipeline."""

    def __init__(self, source, pipeline: List[dict], done: set, limit: Optional[int]) -> None:
        self.source, self.pipeline, self.done, self.limit = source, Compose(pipeline), done, limit

    def __iter__(self) -> Iterator:
        for seen, raw in enumerate(self.source):
            if self.limit is not None and seen >= self.limit:
                return
            if raw['image_key'] not in self.done:
                yield self.pipeline(raw)


def _collate(batch: list):
    kept = [b for b in batch if b is not None]
    return pseudo_collate(kept) if kept else None


def build_region_cache(cfg, out: str, mode: str = 'exact', topk: int = 32,
                       batch_size: Optional[int] = None, num_workers: Optional[int] = None,
                       max_images: Optional[int] = None, device: Optional[str] = None,
                       stop_after: Optional[int] = None,
                       log: Callable[[str], None] = None) -> Dict[str, float]:
    """Fill the cache at ``out`` with the config's P-VLM logits of its training images.

    Args:
        cfg: a DenseVLM config (plain or ``_cached``).
        out: the cache folder (created; an existing one must have the same key and storage).
        mode / topk: ``'exact'`` float32 logits, or ``'compact'`` top-k (see the format).
        batch_size / num_workers: of the pass (default: the config's train dataloader's).
        max_images: only the first N images of the data set (timing runs, tests).
        device: default ``cuda`` (this process's local rank) when available, else ``cpu``.
        stop_after: stop after this many batches of this process (tests of the resume).

    Returns:
        ``written`` (this process), ``seconds``, ``seconds_per_image`` (this process) and, on
        rank 0 after the pass, the :func:`storage_report` of the cache.
    """
    from densevlm_mm.registry import DATASETS, MODELS
    log = log or (lambda msg: print_log(msg, logger='current'))
    rank, world = get_dist_info()
    if device is None:
        device = f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}' if torch.cuda.is_available() \
            else 'cpu'
    meta = expected_meta(cfg, mode, topk)
    if rank == 0:
        write_meta(out, meta)
    barrier()
    write_meta(out, meta)  # every process checks the key
    pairs = meta['grid']['pairs']
    prefix, _ = pipeline_settings(cfg)
    done = stored_keys(out)

    loader_cfg = cfg.train_dataloader
    batch_size = int(batch_size or loader_cfg.get('batch_size', 1))
    num_workers = int(loader_cfg.get('num_workers', 0) if num_workers is None else num_workers)
    dataset_cfg = copy.deepcopy(dict(loader_cfg.dataset))
    streaming = str(dataset_cfg.get('type', '')).split('.')[-1] == 'SA1BShardDataset'
    if streaming:
        dataset_cfg.update(pipeline=[], shuffle=False, rank=rank, world_size=world,
                           equal_length=False)
        source = DATASETS.build(dataset_cfg)
        total = len(source) if max_images is None else min(len(source), max_images)
        limit = None if max_images is None else -(-max_images // world)
        todo = _TodoStream(source, prefix + [PACK], done, limit)
        pending = None
    else:
        dataset_cfg['pipeline'] = prefix + [PACK]
        dataset = DATASETS.build(dataset_cfg)
        total = len(dataset) if max_images is None else min(len(dataset), max_images)
        mine = [i for i in range(rank, total, world)
                if dataset.get_data_info(i)['image_key'] not in done]
        todo, pending = _Todo(dataset, mine), len(mine)
    log(f'region cache {out}: {len(done)} of {total} images cached; process {rank}/{world} '
        f'computes {"its shards" if pending is None else pending} ({meta["storage"]["mode"]}, '
        f'{meta["grid"]["cells"]} cells x {meta["storage"]["num_classes"]} classes per image)')

    retriever = MODELS.build(online_retriever_cfg(cfg)).to(device).eval()
    preprocessor = MODELS.build(dict(meta['image']['preprocess']['data_preprocessor'])).to(device)
    loader = DataLoader(todo, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate, shuffle=False)
    writer = RegionCacheWriter(out, f'rank-{rank:04d}')
    written, batches, start = 0, 0, time.perf_counter()
    try:
        for batch in loader:
            if batch is None:
                continue
            data = preprocessor(batch, False)
            samples = data['data_samples']
            logits = teacher_cell_logits(retriever, data['inputs'],
                                         [s.metainfo['valid_hw'] for s in samples], pairs)
            written += writer.put_many(
                (s.metainfo['image_key'], x.numpy()) for s, x in zip(samples, logits))
            batches += 1
            if rank == 0 and (batches % 10 == 0 or batches == 1):
                rate = (time.perf_counter() - start) / written
                left = '' if pending is None else \
                    f', ~{(pending - written) * rate / 60:.1f} min left'
                log(f'region cache: {written} images in this process, {rate:.3f} s/image{left}')
            if stop_after is not None and batches >= stop_after:
                break
    finally:
        writer.close()
    seconds = time.perf_counter() - start
    result = dict(written=written, seconds=seconds,
                  seconds_per_image=seconds / written if written else float('nan'))
    barrier()
    if rank == 0:
        result.update(storage_report(out, result['seconds_per_image'] if written else None,
                                     processes=world))
    return result
