"""The P-VLM region cache (issue 20): the frozen P-VLM's retrieval logits of every grid cell the
sampler can draw, computed once per data set and read by every epoch and every run.

The P-VLM is frozen and the training images are not augmented (spec §2), so the teacher side of
the loss is a function of (image, grid cell) only. The grid sampler draws from fixed ``(m, n)``
splits of the image's valid area: the paper's 25 pairs (m, n in 2..6) hold 400 cells, a superset
of the reference's 17 pairs (309 cells). For each image the cache stores the teacher logits
``cos(f̂_P, t_c) / τ`` ``[cells, C]`` of all these cells, from which the losses take everything
they need (confidence, label, thing/stuff group, the softmaxes): see
:class:`~densevlm_mm.models.cached_retrieval.CachedRegionRetriever`.

Storage: `LMDB <https://www.symas.com/lmdb>`_ key-value stores, one per writer process
(``parts/<name>``), keyed by the dataset's ``image_key`` (the image path relative to the data set).
LMDB commits are atomic and crash-safe, so an interrupted pass leaves every committed image intact
and a restart skips them; several processes (mmengine launchers, several nodes on a shared
filesystem) each write their own part, so no lock is shared across machines; readers open every
part read-only without locks, after ``fork``, in each dataloader worker. ``meta.json`` records what
the values are valid for (the key): P-VLM model and weights file hash, precision, its text
embeddings, τ, text normalisation, the thing/stuff split, image size and preprocessing, the grid
pairs, the project and format versions. Readers compare it with their own settings and refuse a
cache of another teacher or vocabulary with a message naming the difference.

Values: ``'exact'`` stores float32 logits (``cells·C·4`` bytes per image); ``'compact'`` stores
per cell the ``topk`` largest logits (float16, relative to the row's maximum, with their int16
class indices) and the log-sum-exp of the remaining classes of each group (thing, stuff). Decoding
spreads a group's remaining mass evenly over its remaining classes: the top-k logits, the label,
the confidence and every group's softmax normaliser are kept (to float16 rounding); only the
shape of the tail changes.

This module does not import the models (data side, like the transforms that read it).
"""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

FORMAT = 'densevlm_mm.region_cache'
FORMAT_VERSION = 1
MODES = ('exact', 'compact')
META_FILE = 'meta.json'
PARTS_DIR = 'parts'
#: largest LMDB map per part (sparse on Linux: only written pages take disk space)
DEFAULT_MAP_SIZE = 1 << 40
#: the fields whose difference makes a cache invalid (``storage`` only says how it is stored)
KEY_FIELDS = ('format_version', 'project_version', 'teacher', 'text', 'image', 'grid')


class RegionCacheMismatch(ValueError):
    """A region cache made for another P-VLM, vocabulary, image size or sampler."""


def cache_grid_pairs(max_split: int = 6) -> List[Tuple[int, int]]:
    """Every ``(m, n)`` with ``2 <= m, n <= max_split``: the paper's pairs, which contain the
    reference's constrained pairs (so one cache serves both samplers)."""
    return [(m, n) for m in range(2, max_split + 1) for n in range(2, max_split + 1)]


def cell_offsets(pairs: Sequence[Sequence[int]]) -> Tuple[Dict[Tuple[int, int], int], int]:
    """Row offset of each pair's first cell in a cache value, and the number of cells.

    The cells of pair ``(m, n)`` are stored row-major (as :class:`GridRegionSampler` tiles them)
    at rows ``offset[(m, n)] + 0 .. m·n - 1``, pairs in the given order.
    """
    offsets, total = {}, 0
    for m, n in pairs:
        offsets[(int(m), int(n))] = total
        total += int(m) * int(n)
    return offsets, total


def file_sha256(path: str, chunk: int = 1 << 24) -> str:
    """SHA-256 of a file's bytes (the identity of the P-VLM's checkpoint)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def array_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 of arrays' dtype, shape and bytes."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f'{a.dtype.str}{a.shape}'.encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def project_version() -> str:
    from densevlm_mm import __version__
    return __version__


def make_meta(teacher: dict, text: dict, image: dict, pairs: Sequence[Sequence[int]],
              mode: str = 'exact', topk: int = 32) -> dict:
    """The ``meta.json`` of a cache.

    Args:
        teacher: P-VLM identity and retrieval settings (``model_name``, ``weights_sha256``,
            ``precision``, ``tau``, ``normalize_text``, ``reference_thing_count``).
        text: ``sha256`` of the P-VLM's class embeddings, ``class_names``, ``is_thing``.
        image: ``size`` ``[h, w]`` of the model input and ``preprocess`` (the pipeline before the
            sampler and the data preprocessor, as configs).
        pairs: the cached ``(m, n)`` grid pairs.
        mode / topk: storage (see the module docstring).
    """
    if mode not in MODES:
        raise ValueError(f'region cache mode must be one of {MODES}, got {mode!r}')
    num_classes = len(text['class_names'])
    if mode == 'compact' and not 1 <= int(topk) < num_classes:
        raise ValueError(f'compact region cache: topk must be in [1, {num_classes - 1}] for '
                         f'{num_classes} classes, got {topk}')
    if mode == 'compact' and num_classes > np.iinfo(np.int16).max:
        raise ValueError(f'compact region cache: {num_classes} classes do not fit int16 indices')
    _, cells = cell_offsets(pairs)
    return dict(format=FORMAT, format_version=FORMAT_VERSION, project_version=project_version(),
                teacher=dict(teacher), text=dict(text), image=dict(image),
                grid=dict(pairs=[[int(m), int(n)] for m, n in pairs], cells=cells),
                storage=dict(mode=mode, topk=int(topk) if mode == 'compact' else None,
                             num_classes=num_classes))


def _jsonable(value):
    return json.loads(json.dumps(value))


def compare_meta(found: dict, expected: dict, fields: Sequence[str] = KEY_FIELDS) -> List[str]:
    """The differences ``'<field>: cache <a> != expected <b>'`` of the given (nested) fields."""
    found, expected = _jsonable(found), _jsonable(expected)
    out = []

    def walk(a, b, name: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f'{name}.{k}')
        elif a != b:
            shown_a, shown_b = (repr(v) if len(repr(v)) <= 80 else repr(v)[:77] + '...'
                                for v in (a, b))
            out.append(f'{name}: cache {shown_a} != expected {shown_b}')

    for f in fields:
        walk(found.get(f), expected.get(f), f)
    return out


def read_meta(root: str) -> dict:
    """``meta.json`` of the cache at ``root``.

    Raises:
        FileNotFoundError: no cache there (with the command that builds one).
        RegionCacheMismatch: the file is not a region cache of this format version.
    """
    path = osp.join(root, META_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'no P-VLM region cache at {root!r} ({META_FILE} missing). Build it with '
            '`python tools/build_region_cache.py CONFIG` (or tools/dist_build_region_cache.sh '
            'CONFIG NPROC), with the config whose `region_cache` names this folder.')
    with open(path) as f:
        meta = json.load(f)
    if meta.get('format') != FORMAT:
        raise RegionCacheMismatch(f'{path!r} is not a DenseVLM region cache')
    if meta.get('format_version') != FORMAT_VERSION:
        raise RegionCacheMismatch(
            f'the region cache {root!r} has format version {meta.get("format_version")}, this '
            f'code reads version {FORMAT_VERSION}: build it again into a new folder.')
    return meta


def check_meta(root: str, expected: dict, fields: Sequence[str] = KEY_FIELDS,
               what: str = 'this config') -> dict:
    """Read ``root``'s meta and raise :class:`RegionCacheMismatch` if its key differs."""
    meta = read_meta(root)
    diffs = compare_meta(meta, expected, fields)
    if diffs:
        raise RegionCacheMismatch(
            f'the P-VLM region cache {root!r} was made for another setting than {what}:\n  '
            + '\n  '.join(diffs[:8]) + (f'\n  ... ({len(diffs) - 8} more)' if len(diffs) > 8
                                       else '')
            + '\nIts logits would be wrong targets. Point `region_cache` to a cache built with '
            'this P-VLM, text embeddings and data settings, or build one: python '
            'tools/build_region_cache.py CONFIG (a new folder per P-VLM / vocabulary).')
    return meta


def write_meta(root: str, meta: dict) -> dict:
    """Create the cache folder with ``meta``, or check the existing one's key (resume).

    Raises:
        RegionCacheMismatch: ``root`` holds a cache of another key or storage mode.
    """
    os.makedirs(osp.join(root, PARTS_DIR), exist_ok=True)
    path = osp.join(root, META_FILE)
    if osp.isfile(path):
        return check_meta(root, meta, KEY_FIELDS + ('storage', ), 'the one being built')
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as f:
        json.dump(meta, f, indent=1)
    try:
        os.link(tmp, path)  # atomic and exclusive: a concurrent creator's file wins
    except FileExistsError:
        pass
    finally:
        os.remove(tmp)
    return check_meta(root, meta, KEY_FIELDS + ('storage', ), 'the one being built')


# ----------------------------------------------------------------------------------- values
class RegionCodec:
    """Encoding of one image's ``[cells, C]`` logits as bytes (exact or compact)."""

    def __init__(self, meta: dict) -> None:
        storage = meta['storage']
        self.mode = storage['mode']
        self.topk = storage.get('topk')
        self.cells = int(meta['grid']['cells'])
        self.num_classes = int(storage['num_classes'])
        self.is_thing = np.asarray(meta['text']['is_thing'], dtype=bool)
        if self.is_thing.shape != (self.num_classes, ):
            raise RegionCacheMismatch('region cache meta: is_thing does not match the classes')
        self.group_size = np.array([(~self.is_thing).sum(), self.is_thing.sum()])
        if self.mode == 'exact':
            self.nbytes = self.cells * self.num_classes * 4
        else:
            self.nbytes = self.cells * (self.topk * 4 + 8)

    def encode(self, logits: np.ndarray) -> bytes:
        logits = np.asarray(logits, dtype=np.float32)
        if logits.shape != (self.cells, self.num_classes):
            raise ValueError(f'region cache: expected logits [{self.cells}, {self.num_classes}], '
                             f'got {list(logits.shape)}')
        if self.mode == 'exact':
            return np.ascontiguousarray(logits).tobytes()
        k = self.topk
        idx = np.argpartition(-logits, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(logits, idx, axis=1)
        order = np.argsort(-vals, axis=1, kind='stable')
        idx, vals = np.take_along_axis(idx, order, 1), np.take_along_axis(vals, order, 1)
        top = vals[:, :1]
        rel = logits - top  # <= 0
        rest = np.ones_like(logits, dtype=bool)
        np.put_along_axis(rest, idx, False, axis=1)
        lse = np.empty((self.cells, 2), dtype=np.float32)
        for g, cols in enumerate((~self.is_thing, self.is_thing)):
            masked = np.where(rest & cols[None], rel, -np.inf)
            peak = masked.max(axis=1, keepdims=True)
            safe = np.where(np.isfinite(peak), peak, 0.0)
            with np.errstate(divide='ignore'):
                lse[:, g] = (safe + np.log(np.exp(masked - safe).sum(axis=1, keepdims=True)))[:, 0]
        return b''.join([idx.astype(np.int16).tobytes(), (vals - top).astype(np.float16).tobytes(),
                         lse.tobytes()])

    def decode(self, value: bytes, rows: Optional[np.ndarray] = None) -> np.ndarray:
        """``[cells, C]`` float32 logits (or only ``rows``)."""
        if len(value) != self.nbytes:
            raise RegionCacheMismatch(f'region cache value of {len(value)} bytes, expected '
                                      f'{self.nbytes} ({self.mode}); the cache is damaged')
        if self.mode == 'exact':
            logits = np.frombuffer(value, dtype=np.float32).reshape(self.cells, self.num_classes)
            return (logits if rows is None else logits[rows]).copy()
        k, c = self.topk, self.cells
        idx = np.frombuffer(value, dtype=np.int16, count=c * k).reshape(c, k)
        vals = np.frombuffer(value, dtype=np.float16, count=c * k, offset=c * k * 2).reshape(c, k)
        lse = np.frombuffer(value, dtype=np.float32, offset=c * k * 4).reshape(c, 2)
        if rows is not None:
            idx, vals, lse = idx[rows], vals[rows], lse[rows]
        idx = idx.astype(np.int64)
        top_thing = self.is_thing[idx].sum(axis=1)
        left = np.stack([self.group_size[0] - (k - top_thing), self.group_size[1] - top_thing], 1)
        with np.errstate(divide='ignore', invalid='ignore'):
            spread = np.where(left > 0, lse - np.log(np.maximum(left, 1)), -np.inf)
        out = np.where(self.is_thing[None], spread[:, 1:2], spread[:, 0:1]).astype(np.float32)
        # (a group with no class left has no column left to fill: its -inf is never used)
        np.put_along_axis(out, idx, vals.astype(np.float32), axis=1)
        return out


# ----------------------------------------------------------------------------------- store
def _open_env(path: str, readonly: bool, map_size: int = DEFAULT_MAP_SIZE):
    import lmdb
    if readonly:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True,
                         max_readers=2048)
    return lmdb.open(path, map_size=map_size, subdir=True, readonly=False, lock=True,
                     meminit=False, max_dbs=0)


# Read-only handles of this process, one per part (LMDB allows one per file and process); a forked
# child does not use its parent's (kept referenced, never closed there) but opens its own.
_READ_ENVS: Dict[str, object] = {}
_READ_PID: Optional[int] = None
_PARENT_ENVS: List[object] = []


def _read_env(path: str):
    global _READ_PID
    if _READ_PID != os.getpid():
        _PARENT_ENVS.extend(_READ_ENVS.values())
        _READ_ENVS.clear()
        _READ_PID = os.getpid()
    path = osp.abspath(path)
    if path not in _READ_ENVS:
        _READ_ENVS[path] = _open_env(path, readonly=True)
    return _READ_ENVS[path]


def _close_read_env(path: str) -> None:
    """Before this process writes a part (and after): readers reopen it with its new size."""
    env = _READ_ENVS.pop(osp.abspath(path), None) if _READ_PID == os.getpid() else None
    if env is not None:
        env.close()


def part_paths(root: str) -> List[str]:
    parts = osp.join(root, PARTS_DIR)
    if not osp.isdir(parts):
        return []
    return [osp.join(parts, p) for p in sorted(os.listdir(parts))
            if osp.isfile(osp.join(parts, p, 'data.mdb'))]


def stored_keys(root: str) -> Set[str]:
    """The image keys already in the cache (all parts)."""
    keys: Set[str] = set()
    for path in part_paths(root):
        with _read_env(path).begin(buffers=False) as txn:
            keys.update(k.decode() for k in txn.cursor().iternext(keys=True, values=False))
        _close_read_env(path)
    return keys


class RegionCacheWriter:
    """One writer process's part of a cache.

    Args:
        root: the cache folder (``meta.json`` must exist: :func:`write_meta`).
        part: this writer's part name (e.g. ``'rank-0000'``); one process per part at a time.
    """

    def __init__(self, root: str, part: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.root = root
        self.meta = read_meta(root)
        self.codec = RegionCodec(self.meta)
        self.path = osp.join(root, PARTS_DIR, part)
        os.makedirs(self.path, exist_ok=True)
        _close_read_env(self.path)
        self.env = _open_env(self.path, readonly=False, map_size=map_size)

    def put_many(self, items: Iterable[Tuple[str, np.ndarray]]) -> int:
        """Store ``(image_key, logits [cells, C])`` pairs in one atomic commit."""
        count = 0
        with self.env.begin(write=True) as txn:
            for key, logits in items:
                txn.put(key.encode(), self.codec.encode(logits))
                count += 1
        return count

    def close(self) -> None:
        self.env.close()
        _close_read_env(self.path)


class RegionCacheReader:
    """Random reads of a cache, safe in dataloader workers (each process opens its own read-only
    handles on first use; the parts are listed once)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.meta = read_meta(root)
        self.codec = RegionCodec(self.meta)
        self.offsets, _ = cell_offsets(self.meta['grid']['pairs'])
        self._paths: Optional[List[str]] = None

    def _parts(self):
        if self._paths is None:
            self._paths = part_paths(self.root)
        return [_read_env(p) for p in self._paths]

    def get_value(self, key: str) -> Optional[bytes]:
        k = key.encode()
        for env in self._parts():
            with env.begin(buffers=False) as txn:
                value = txn.get(k)
            if value is not None:
                return value
        return None

    def __len__(self) -> int:
        return sum(env.stat()['entries'] for env in self._parts())

    def rows(self, key: str, m: int, n: int, cells: np.ndarray) -> np.ndarray:
        """Logits ``[K, C]`` of cells ``cells`` (row-major in the m×n grid) of image ``key``.

        Raises:
            KeyError: the image is not in the cache (names the cache and the fix).
            RegionCacheMismatch: the pair was not cached.
        """
        offset = self.offsets.get((int(m), int(n)))
        if offset is None:
            raise RegionCacheMismatch(
                f'the region cache {self.root!r} holds the grid pairs {self.meta["grid"]["pairs"]}'
                f' but the sampler drew ({m}, {n}): build a cache with this SampleGridRegions '
                '(max_split) or use the cached sampler settings.')
        cells = np.asarray(cells, dtype=np.int64)
        if cells.size and (cells.min() < 0 or cells.max() >= m * n):
            raise ValueError(f'grid cells {cells.tolist()} outside a {m}x{n} grid')
        value = self.get_value(key)
        if value is None:
            raise KeyError(
                f'image {key!r} is not in the P-VLM region cache {self.root!r} ({len(self)} '
                'images cached). The cache was built for another data set, or its pass did not '
                'finish: run `python tools/build_region_cache.py CONFIG` again (it skips the '
                'images already cached).')
        return self.codec.decode(value, offset + cells)

    def iter_items(self) -> Iterator[Tuple[str, bytes]]:
        """Every ``(image_key, stored bytes)``, sorted by key (for comparisons)."""
        items = {}
        for env in self._parts():
            with env.begin(buffers=False) as txn:
                for k, v in txn.cursor():
                    items[k.decode()] = v
        for k in sorted(items):
            yield k, items[k]


def storage_report(root: str, seconds_per_image: Optional[float] = None,
                   processes: int = 1) -> Dict[str, float]:
    """Bytes per image (values, and on disk), estimates for COCO train2017 and SA-1B."""
    reader = RegionCacheReader(root)
    count = len(reader)
    disk = 0
    for path in part_paths(root):
        for name in os.listdir(path):
            st = os.stat(osp.join(path, name))
            disk += st.st_blocks * 512 if hasattr(st, 'st_blocks') else st.st_size
    per_value = reader.codec.nbytes
    per_image_disk = disk / count if count else float('nan')
    out = dict(images=count, value_bytes=per_value, disk_bytes=disk,
               disk_bytes_per_image=per_image_disk)
    for name, n in (('coco', 118287), ('sa1b', 11_000_000)):
        out[f'{name}_value_bytes'] = per_value * n
        out[f'{name}_disk_bytes'] = per_image_disk * n
        if seconds_per_image is not None:
            out[f'{name}_hours'] = seconds_per_image * n / 3600 / max(1, processes)
    return out


def format_report(r: Dict[str, float], mode: str) -> str:
    gib = 2 ** 30
    lines = [f'region cache: {r["images"]} images, {mode}: {r["value_bytes"] / 1024:.1f} KiB per '
             f'image (values), {r["disk_bytes_per_image"] / 1024:.1f} KiB per image on disk '
             f'(LMDB pages, {r["disk_bytes"] / gib:.3f} GiB in all)',
             f'estimate on disk: COCO train2017 (118,287 images) {r["coco_disk_bytes"] / gib:.1f} '
             f'GiB; SA-1B (11M images) {r["sa1b_disk_bytes"] / gib:.0f} GiB']
    if 'coco_hours' in r:
        lines.append(f'generation at the measured rate: COCO {r["coco_hours"]:.1f} h, SA-1B '
                     f'{r["sa1b_hours"]:.0f} h (per this many processes on this machine)')
    return '\n'.join(lines)
