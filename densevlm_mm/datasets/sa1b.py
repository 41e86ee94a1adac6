"""SA-1B images streamed from the original ``sa_*.tar`` shards, without unpacking them.

Each SA-1B shard holds ``sa_N.jpg`` + ``sa_N.json`` pairs. :class:`SA1BShardDataset` reads them
sequentially with ``webdataset``'s tar reader, as a ``torch.utils.data.IterableDataset``, and splits
the work across ranks and dataloader workers so that no image is read twice in an epoch.

Use it in a config with ``sampler=None`` (mmengine's ``Runner.build_dataloader`` passes ``None``
through; a DataLoader over an IterableDataset accepts no sampler)::

    train_dataloader = dict(
        batch_size=16, num_workers=4, persistent_workers=True, sampler=None,
        dataset=dict(type='SA1BShardDataset', shards='data/sa1b/sa_*.tar',
                     num_samples='data/sa1b/index.json', pipeline=train_pipeline))
    custom_hooks = [dict(type='SkippedImagesHook')]  # also passes the epoch to the dataset

Counting the samples of each shard (needed for ``len()`` and for equal-length epochs under DDP)
scans the tar headers; for the full SA-1B write an index once with
``python -m densevlm_mm.datasets.sa1b index 'data/sa1b/sa_*.tar' -o data/sa1b/index.json``.
"""
import argparse
import functools
import glob
import json
import logging
import os.path as osp
import random
import sys
import tarfile
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch.distributed as torch_dist
from mmengine.dataset import Compose
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from torch.utils.data import IterableDataset, get_worker_info

from densevlm_mm.registry import DATASETS
from densevlm_mm.utils.files import load_json_file

if __name__ == '__main__':
    # `python -m densevlm_mm.datasets.sa1b`: the package import above already defined and
    # registered this module as `densevlm_mm.datasets.sa1b`; defining the classes a second time
    # here (as `__main__`) would register SA1BShardDataset twice. Run that module's CLI instead.
    from densevlm_mm.datasets.sa1b import main as _package_main
    _package_main()
    sys.exit(0)

from .transforms.loading import record_skipped_image

IMAGE_SUFFIXES = ('jpg', 'jpeg', 'png', 'webp')


def resolve_shards(shards: Union[str, Sequence[str]]) -> List[str]:
    """Expand shard paths: a glob pattern, a folder (all ``*.tar`` in it) or a file, or a list.

    Raises:
        FileNotFoundError: a pattern matches nothing, or the list is empty.
    """
    patterns = [shards] if isinstance(shards, str) else list(shards)
    if not patterns:
        raise FileNotFoundError('SA1BShardDataset: the shard list is empty')
    found: List[str] = []
    for pattern in patterns:
        pattern = osp.expanduser(str(pattern))
        if osp.isdir(pattern):
            matches = sorted(glob.glob(osp.join(pattern, '*.tar')))
        elif glob.has_magic(pattern):
            matches = sorted(p for p in glob.glob(pattern) if osp.isfile(p))
        else:
            matches = [pattern] if osp.isfile(pattern) else []
        if not matches:
            raise FileNotFoundError(f'SA1BShardDataset: no tar shard found at {pattern!r}')
        found.extend(matches)
    return list(dict.fromkeys(found))


def _split_name(name: str) -> Tuple[Optional[str], Optional[str]]:
    """``'dir/sa_1.jpg'`` → ``('dir/sa_1', 'jpg')``, the grouping rule of webdataset."""
    from webdataset.tariterators import base_plus_ext
    return base_plus_ext(name)


def count_shard_samples(path: str) -> int:
    """Number of samples with an image in one tar shard (reads the headers only).

    Raises:
        RuntimeError: the shard is not a tar file or is truncated (names the shard and the fix).
    """
    try:
        return _count_members(path)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise RuntimeError(
            f'SA1BShardDataset: the tar shard {path!r} is damaged or truncated ({type(exc).__name__}:'
            f' {exc}). Download it again, or leave it out of `shards`; to train on the readable '
            'part of damaged shards, pass the sample counts yourself (num_samples=<index json or '
            'int>): a read error then skips the rest of that shard and is counted with the '
            'skipped images.') from exc


def _count_members(path: str) -> int:
    count, key, has_image = 0, None, False
    with tarfile.open(path, 'r:') as tar:
        for member in tar:
            if not member.isreg():
                continue
            prefix, suffix = _split_name(member.name)
            if prefix is None:
                continue
            if prefix != key:
                count += has_image
                key, has_image = prefix, False
            has_image = has_image or suffix.lower() in IMAGE_SUFFIXES
            tar.members = []  # keep memory flat on 11k-image shards
    return count + has_image


def build_shard_index(shards: Union[str, Sequence[str]],
                      out_file: Optional[str] = None) -> Dict[str, int]:
    """``{shard file name: sample count}`` for the shards, written to ``out_file`` if given."""
    index = {osp.basename(p): count_shard_samples(p) for p in resolve_shards(shards)}
    if out_file:
        with open(out_file, 'w') as f:
            json.dump(index, f, indent=0, sort_keys=True)
    return index


@DATASETS.register_module()
class SA1BShardDataset(IterableDataset):
    """SA-1B (or any webdataset-style image tar) streamed through the training pipeline.

    Each sample given to the pipeline is ``dict(img_bytes=<encoded image>, img_path=
    '<shard>/<key>.jpg', sample_idx, shard, image_key='<shard file name>/<key>.jpg')`` (plus ``sa1b_ann``, the parsed json, with
    ``with_annotations=True``); :class:`LoadImageSafe` decodes ``img_bytes``. Samples the pipeline
    rejects (``None``: unreadable or too small images, counted by ``LoadImageSafe``) are skipped.

    **Work split.** The shard list is shuffled per epoch with a seed shared by all ranks. With at
    least as many shards as consumers (``n = world_size × num_workers``), consumer ``c`` reads
    shards ``c, c + n, ...``; with fewer shards, every consumer reads all shards and keeps the
    samples whose running index is ``c`` modulo ``n``. Either way each image is read by one
    consumer per epoch. Samples are shuffled within a consumer through a buffer of
    ``shuffle_buffer`` encoded images.

    **Epoch length.** In a single process (``equal_length=False``, the default there) every
    readable image is yielded once per epoch. Under DDP (``equal_length=True``, the default there)
    every rank must run the same number of iterations, so every consumer yields exactly the smallest
    consumer's sample count: the surplus of larger consumers is left out this epoch (other images
    next epoch, as the shards are reshuffled), and a consumer that falls short because of
    unreadable images reads its shards again to fill up.

    **Epoch number.** ``set_epoch`` (called by ``SkippedImagesHook`` before each epoch) reseeds the
    shuffle; without it, each new iteration over the same dataset object advances the epoch.

    Args:
        shards: a glob pattern (``'data/sa1b/sa_*.tar'``), a folder, a file or a list of these.
        pipeline: the training pipeline, starting with ``LoadImageSafe``.
        shuffle: shuffle shards and samples.
        shuffle_buffer: samples held for shuffling per consumer (encoded, ~0.5 MB each for SA-1B).
        seed: shuffle seed; must be the same on all ranks.
        num_samples: sample counts: ``None`` to scan the shards' tar headers, the path of an index
            json (:func:`build_shard_index`), a ``{shard file name: count}`` dict, or an int (total;
            then consumer quotas are estimated as ``total // consumers``).
        equal_length: see above; ``None`` = ``world_size > 1``.
        with_annotations: also parse ``sa_N.json`` into ``sa1b_ann`` (not needed by DenseVLM).
        max_consecutive_failures: raise after this many unreadable samples in a row in one
            consumer. A single consumer (no workers, one rank) also raises when none of its
            samples can be read; with several, an epoch in which no consumer yields anything is
            caught by ``SkippedImagesHook``.
        rank, world_size: override ``mmengine.dist.get_dist_info()`` (for tests and tools).
        lazy_init: defer counting the samples to the first ``len()`` / iteration.

    Raises:
        FileNotFoundError: no shard matches.
        RuntimeError: the shards hold no image, or no image can be read.
    """

    def __init__(self,
                 shards: Union[str, Sequence[str]],
                 pipeline: Sequence = (),
                 shuffle: bool = True,
                 shuffle_buffer: int = 64,
                 seed: int = 0,
                 num_samples: Union[None, int, str, Dict[str, int]] = None,
                 equal_length: Optional[bool] = None,
                 with_annotations: bool = False,
                 max_consecutive_failures: int = 50,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None,
                 lazy_init: bool = False) -> None:
        self.shards = resolve_shards(shards)
        self.pipeline = Compose(list(pipeline))
        self.shuffle = shuffle
        self.shuffle_buffer = max(1, int(shuffle_buffer))
        self.seed = int(seed)
        self.num_samples = num_samples
        self.equal_length = equal_length
        self.with_annotations = with_annotations
        self.max_consecutive_failures = max(1, int(max_consecutive_failures))
        self._rank_override = (rank, world_size)
        self._dist_info = self._current_dist_info()  # workers started by spawn re-read this
        self._counts: Optional[Dict[str, int]] = None
        self._total: Optional[int] = None
        self._epoch = 0
        self._iter_count = 0
        if not lazy_init:
            self.full_init()

    # ------------------------------------------------------------------ set-up
    def full_init(self) -> None:
        """Count the samples (once). Called by ``Runner.build_dataloader``."""
        if self._total is not None:
            return
        self._dist_info = self._current_dist_info()
        spec = self.num_samples
        if isinstance(spec, int):
            counts, total = None, spec
        else:
            if spec is None:
                if len(self.shards) > 50:
                    print_log(f'SA1BShardDataset: counting the samples of {len(self.shards)} '
                              'shards (tar headers); write an index once with `python -m '
                              'densevlm_mm.datasets.sa1b index` and pass it as num_samples',
                              logger='current', level=logging.WARNING)
                counts = {p: count_shard_samples(p) for p in self.shards}
            else:
                index = spec
                if isinstance(spec, str):
                    index = load_json_file(spec, 'SA-1B shard index (num_samples)')
                missing = [p for p in self.shards if osp.basename(p) not in index]
                if missing:
                    raise KeyError(f'SA1BShardDataset: num_samples index lacks {len(missing)} '
                                   f'shards, e.g. {osp.basename(missing[0])!r}')
                counts = {p: int(index[osp.basename(p)]) for p in self.shards}
            total = sum(counts.values())
        if total <= 0:
            raise RuntimeError(f'SA1BShardDataset: no image sample in the shards {self._names()}')
        self._counts, self._total = counts, total

    def __len__(self) -> int:
        """Samples per epoch on this rank (a hint for the Runner; under DDP it is
        ``total // world_size``, the exact number depends on the worker split)."""
        self.full_init()
        _, world = self._current_dist_info()
        return self._total // world if self._equal(world) else self._total

    @property
    def metainfo(self) -> dict:
        """No classes: the images are unlabeled (read by mmengine's loops and visualizer)."""
        return dict()

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration's shuffle (the same on every rank)."""
        self._epoch = int(epoch)
        self._iter_count = 0

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict]:
        self.full_init()
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        rank, world = self._current_dist_info()
        epoch = self._epoch + self._iter_count
        self._iter_count += 1

        consumers, consumer = world * num_workers, rank * num_workers + worker
        order = list(self.shards)
        if self.shuffle:
            random.Random(f'{self.seed}-{epoch}').shuffle(order)
        by_shard = len(order) >= consumers
        mine = order[consumer::consumers] if by_shard else order
        modulo = None if by_shard else (consumers, consumer)
        quota = self._quota(order, consumers, by_shard) if self._equal(world) else None
        rng = random.Random(f'{self.seed}-{epoch}-{consumer}')
        return self._produce(mine, modulo, quota, consumers == 1, rng)

    def _produce(self, shards: List[str], modulo, quota: Optional[int], alone: bool,
                 rng: random.Random) -> Iterator[dict]:
        produced = consecutive = 0
        while True:
            yielded = tried = 0
            for raw in self._shuffled(self._raw_samples(shards, modulo), rng):
                tried += 1
                data = self._prepare(raw)
                if data is None:
                    consecutive += 1
                    if consecutive >= self.max_consecutive_failures:
                        raise RuntimeError(
                            f'SA1BShardDataset: {consecutive} samples in a row could not be '
                            f'loaded from {self._names(shards)} (last: {raw["path"]}). '
                            'Unreadable images are listed in the warnings above.')
                    continue
                consecutive = 0
                yielded += 1
                produced += 1
                yield data
                if quota is not None and produced >= quota:
                    return
            if tried and not yielded and (alone or quota is not None):
                raise RuntimeError(f'SA1BShardDataset: none of the {tried} samples in '
                                   f'{self._names(shards)} could be loaded')
            if tried and not yielded:
                print_log(f'SA1BShardDataset: none of the {tried} samples this worker read from '
                          f'{self._names(shards)} could be loaded', logger='current',
                          level=logging.WARNING)
            if quota is None or produced >= quota:
                return
            if tried == 0:  # returning short would leave the ranks with different lengths
                raise RuntimeError(f'SA1BShardDataset: no sample in {self._names(shards)} but '
                                   f'{quota} are due; num_samples does not match the shards')
            # equal-length epochs: read this consumer's shards again to fill its quota

    def _raw_samples(self, shards: List[str], modulo) -> Iterator[dict]:
        """Encoded samples ``dict(key, path, shard, index, img, json)`` of the shards, in order."""
        from webdataset.tariterators import group_by_keys, tar_file_expander

        wanted = IMAGE_SUFFIXES + (('json', ) if self.with_annotations else ())

        def select(name: str) -> bool:
            suffix = _split_name(name)[1]
            return suffix is not None and suffix.lower() in wanted

        index = -1
        for shard in shards:
            handler = functools.partial(_skip_damaged_shard, shard, set())
            with open(shard, 'rb') as stream:
                files = tar_file_expander([dict(url=shard, stream=stream)], handler=handler,
                                          select_files=select)
                for sample in group_by_keys(files, handler=handler):
                    suffix = next((s for s in IMAGE_SUFFIXES if s in sample), None)
                    if suffix is None:
                        continue
                    index += 1
                    if modulo is not None and index % modulo[0] != modulo[1]:
                        continue
                    key = sample['__key__']
                    yield dict(key=key, shard=shard, index=index, img=sample[suffix],
                               path=f'{shard}/{key}.{suffix}', json=sample.get('json'),
                               image_key=f'{osp.basename(shard)}/{key}.{suffix}')

    def _shuffled(self, samples: Iterable[dict], rng: random.Random) -> Iterator[dict]:
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: List[dict] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer

    def _prepare(self, raw: dict) -> Optional[dict]:
        results = dict(img_bytes=raw['img'], img_path=raw['path'], sample_idx=raw['index'],
                       shard=raw['shard'], image_key=raw['image_key'])
        if self.with_annotations:
            try:
                results['sa1b_ann'] = json.loads(raw['json']) if raw['json'] else None
            except ValueError as exc:
                record_skipped_image(raw['path'], f'unreadable annotation json ({exc})')
                return None
        return self.pipeline(results)

    # ------------------------------------------------------------------ helpers
    def _current_dist_info(self) -> Tuple[int, int]:
        rank, world = self._rank_override
        if rank is not None or world is not None:
            return int(rank or 0), int(world or 1)
        if torch_dist.is_available() and torch_dist.is_initialized():
            return get_dist_info()
        # a spawned dataloader worker has no process group: use what the main process saw
        return getattr(self, '_dist_info', (0, 1))

    def _equal(self, world: int) -> bool:
        return world > 1 if self.equal_length is None else bool(self.equal_length)

    def _quota(self, order: List[str], consumers: int, by_shard: bool) -> int:
        if by_shard and self._counts is not None:
            quota = min(sum(self._counts[p] for p in order[c::consumers])
                        for c in range(consumers))
        else:
            quota = self._total // consumers
        if quota <= 0:
            raise RuntimeError(f'SA1BShardDataset: {self._total} samples cannot give every one of '
                               f'{consumers} consumers (ranks x workers) a sample; use fewer '
                               'workers or more shards')
        return quota

    def _names(self, shards: Optional[List[str]] = None) -> str:
        shards = self.shards if shards is None else shards
        shown = ', '.join(repr(p) for p in shards[:3])
        return f'[{shown}{", ..." if len(shards) > 3 else ""}]'

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({len(self.shards)} shards, samples={self._total}, '
                f'shuffle={self.shuffle}, shuffle_buffer={self.shuffle_buffer})')


def _skip_damaged_shard(shard: str, reported: set, exc: Exception) -> bool:
    """webdataset handler: count the rest of a damaged shard as skipped, once per reading of the
    shard (the count and the shard name reach ``SkippedImagesHook``), and go on with the next."""
    if reported:  # webdataset's tar reader and the grouping stage both report the same error
        return True
    reported.add(shard)
    detail = exc.args[0] if exc.args else exc
    record_skipped_image(shard, f'damaged tar shard ({type(exc).__name__}: {detail}); the rest of '
                         'this shard is skipped')
    return True


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m densevlm_mm.datasets.sa1b',
        description='Count the samples of SA-1B tar shards into an index json for '
                    'SA1BShardDataset(num_samples=...).')
    sub = parser.add_subparsers(dest='command', required=True)
    index = sub.add_parser('index', help='write {shard file name: sample count}')
    index.add_argument('shards', nargs='+', help='tar files, folders or glob patterns')
    index.add_argument('-o', '--out', required=True, help='output json')
    args = parser.parse_args(argv)
    try:
        counts = build_shard_index(args.shards, args.out)
    except (FileNotFoundError, RuntimeError) as exc:
        parser.exit(1, f'{parser.prog}: error: {exc}\n')
    print(f'{len(counts)} shards, {sum(counts.values())} samples -> {args.out}')


if __name__ == '__main__':
    main()
