"""Image loading that skips unreadable images and counts them across dataloader workers.

:class:`LoadImageSafe` is the first step of every training pipeline. It decodes with PIL (EXIF
orientation applied, 16-bit grayscale scaled to 8 bits), returns ``None`` for an image that cannot be decoded or has a side
shorter than ``min_size`` (spec §2), and records the skip in a process-wide counter.

The counter lives in shared memory created in the main process, so skips that happen inside
dataloader worker processes (fork, spawn or forkserver) are visible to the main process, where
:class:`~densevlm_mm.engine.hooks.SkippedImagesHook` logs them. Read it with
:func:`get_skipped_images`.
"""
import io
import logging
import math
import multiprocessing as mp
import os
import threading
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.fileio import get as read_bytes
from mmengine.logging import print_log
from PIL import Image, ImageOps

from densevlm_mm.registry import TRANSFORMS

_MAX_PATHS = 64  # most recent skipped paths kept in shared memory
_PATH_BYTES = 512  # longer paths are truncated (from the left, keeping the file name)
_MAX_WARNINGS = 20  # per-process warnings; the count keeps going after that


class SkippedImages(NamedTuple):
    """The skip record: total ``count`` and the most recent ``paths`` (oldest first)."""
    count: int
    paths: List[str]


class _SkipRecord:
    """A counter and a ring buffer of paths in shared memory.

    Created in the main process. Forked workers inherit it; spawned workers receive it pickled
    with the dataset (``multiprocessing`` allows that only while a process is being started,
    which is when the DataLoader pickles its dataset). Pickled in any other situation (a deepcopy,
    ``serialize_data``) it turns into the receiving process's own record instead of failing.
    """

    def __init__(self) -> None:
        try:
            ctx = mp.get_context('spawn')  # a spawn-context lock works for fork children too
            self._lock = ctx.Lock()
            self._count = ctx.RawValue('q', 0)
            self._paths = ctx.RawArray('c', _MAX_PATHS * _PATH_BYTES)
            self.shared = True
        except (OSError, ImportError, PermissionError) as exc:  # no /dev/shm or sem_open
            print_log(f'LoadImageSafe: no shared memory ({exc}); skipped images are counted per '
                      'process only', logger='current', level=logging.WARNING)
            self._lock = threading.Lock()
            self._count = _LocalValue()
            self._paths = bytearray(_MAX_PATHS * _PATH_BYTES)
            self.shared = False
        self._warned = 0

    def add(self, path: str) -> int:
        raw = path.encode('utf-8', 'replace')[-(_PATH_BYTES - 1):]
        with self._lock:
            slot = self._count.value % _MAX_PATHS
            start = slot * _PATH_BYTES
            self._paths[start:start + _PATH_BYTES] = raw.ljust(_PATH_BYTES, b'\0')
            self._count.value += 1
            return self._count.value

    def read(self) -> SkippedImages:
        with self._lock:
            count = self._count.value
            buf = bytes(self._paths[:])
        n = min(count, _MAX_PATHS)
        slots = [(count - n + i) % _MAX_PATHS for i in range(n)]
        paths = [buf[s * _PATH_BYTES:(s + 1) * _PATH_BYTES].rstrip(b'\0').decode('utf-8', 'replace')
                 for s in slots]
        return SkippedImages(count, paths)

    def reset(self) -> None:
        with self._lock:
            self._count.value = 0

    def __reduce__(self):
        if self.shared and mp.context.get_spawning_popen() is not None:
            return _adopt_record, (self._lock, self._count, self._paths)
        return _get_record, ()

    def __deepcopy__(self, memo) -> '_SkipRecord':
        return self


class _LocalValue:
    value = 0


_RECORD: Optional[_SkipRecord] = None
_RECORD_PID: Optional[int] = None


def _get_record() -> _SkipRecord:
    """This process's record, created on first use."""
    global _RECORD, _RECORD_PID
    if _RECORD is None:
        _RECORD, _RECORD_PID = _SkipRecord(), os.getpid()
    return _RECORD


def _adopt_record(lock, count, paths) -> _SkipRecord:
    """Unpickle the parent's shared record in a spawned worker and make it this process's one."""
    global _RECORD, _RECORD_PID
    if _RECORD is not None and _RECORD_PID == os.getpid() and getattr(_RECORD, '_adopted', False):
        return _RECORD  # several transforms hold the record: share one object per process
    record = _SkipRecord.__new__(_SkipRecord)
    record._lock, record._count, record._paths = lock, count, paths
    record.shared, record._warned, record._adopted = True, 0, True
    _RECORD, _RECORD_PID = record, os.getpid()
    return record


def get_skipped_images() -> SkippedImages:
    """Images skipped so far by :class:`LoadImageSafe` in this process and its dataloader workers.

    Returns:
        ``SkippedImages(count, paths)``: ``paths`` are the last (up to 64) skipped images, each
        ``"<path>: <reason>"``.
    """
    return _get_record().read()


def reset_skipped_images() -> None:
    """Set the skipped-image count to zero (the path buffer is overwritten as new skips come)."""
    _get_record().reset()


def record_skipped_image(path: str, reason: str) -> int:
    """Count one skipped image and warn (for the first few per process). Returns the new total."""
    record = _get_record()
    total = record.add(f'{path}: {reason}')
    if record._warned < _MAX_WARNINGS:
        record._warned += 1
        more = ' (further skips in this process are only counted)' \
            if record._warned == _MAX_WARNINGS else ''
        print_log(f'skipping image {path}: {reason}{more}', logger='current', level=logging.WARNING)
    return total


def to_rgb8(img: Image.Image) -> Image.Image:
    """A PIL image of any mode as 8-bit RGB.

    PIL's ``convert('RGB')`` clips 16- and 32-bit grayscale (``I;16``, ``I``) and float (``F``)
    images to 255 (a 16-bit PNG becomes white); those are scaled to 8 bits instead: 16-bit by
    ``/257`` (65535 → 255), 32-bit integers by their bit depth (16-bit PNGs open as ``I`` in some
    PIL versions: values up to 65535 are read as 16-bit), floats in [0, 1] by 255.
    """
    if img.mode == 'RGB':
        return img
    if img.mode.startswith('I') or img.mode == 'F':
        arr = np.asarray(img)
        if img.mode == 'F':
            arr = arr.astype(np.float64)
            scale = 255.0 if np.nanmax(arr, initial=0) <= 1.0 else 1.0
            arr = np.nan_to_num(arr) * scale
        else:
            arr = arr.astype(np.float64)
            peak = np.max(arr, initial=0)
            arr = arr / 257.0 if img.mode.startswith('I;16') or peak <= 65535 else \
                arr / 16843009.0  # 2**32-1 -> 255
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), 'RGB')
    return img.convert('RGB')


def decode_image(data: bytes,
                 draft_size: Optional[int] = None,
                 exif_orientation: bool = False) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Decode image bytes with PIL into an RGB uint8 ``[H, W, 3]`` array.

    With ``draft_size``, a JPEG is decoded by libjpeg at a reduced scale (1/2, 1/4 or 1/8) that
    keeps its longer side >= ``draft_size`` (see :class:`LoadImageSafe`). With
    ``exif_orientation``, the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), so
    a photo is upright as a viewer shows it. 16-bit / float grayscale is scaled to 8 bits
    (:func:`to_rgb8`).

    Returns:
        The array and the ``(h, w)`` of the (possibly transposed) image at full resolution.
    """
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if draft_size and img.format == 'JPEG' and max(w, h) > draft_size:
            scale = draft_size / max(w, h)
            img.draft('RGB', (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        if exif_orientation:
            orientation = img.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):  # transposed: width and height swap
                w, h = h, w
            img = ImageOps.exif_transpose(img)
        img = to_rgb8(img)
        return np.array(img), (h, w)  # np.asarray would give a read-only view of PIL's bytes


@TRANSFORMS.register_module()
class LoadImageSafe(BaseTransform):
    """Load an image as RGB, or return ``None`` (and count it) when it cannot be used.

    Training datasets (:class:`CocoImageDataset`, :class:`ImageFolderDataset`) then draw another
    sample; :class:`SA1BShardDataset` moves on to the next one.

    Required keys: ``img_path``; or ``img_bytes`` (the encoded file, as read from an SA-1B tar
    shard; ``img_path`` then only names it in messages).
    Added keys: ``img`` (RGB uint8 ``[H, W, 3]``), ``ori_shape`` (``(h, w)`` of the file) and
    ``img_shape`` (``(h, w)`` of ``img``; smaller than ``ori_shape`` only with ``draft_size``).
    Removed keys: ``img_bytes``.

    Args:
        min_size: images with a side shorter than this are skipped (reference: 10 px). Images too
            thin for the model after resizing are skipped by ``ResizeLongestPad(min_valid_side)``.
        exif_orientation: apply the EXIF orientation tag (default: photos are used upright, as
            shown by viewers; the reference ignored the tag). Off for evaluation images, whose
            annotations are in the stored pixel orientation.
        draft_size: off by default (the reference decodes at full size). With e.g. 512 (for
            ``ResizeLongestPad(512)``), JPEGs whose longer side exceeds it are decoded by libjpeg
            at 1/2, 1/4 or 1/8 scale, keeping the longer side >= ``draft_size``; the resize that
            follows then starts from a smaller image. About 5x faster for SA-1B's 2250x1500
            images; pixels differ slightly from decoding at full size and resizing.
        backend_args: mmengine file backend arguments for reading ``img_path``.
    """

    def __init__(self, min_size: int = 10, draft_size: Optional[int] = None,
                 exif_orientation: bool = True, backend_args: Optional[dict] = None) -> None:
        self.min_size = int(min_size)
        self.exif_orientation = bool(exif_orientation)
        self.draft_size = int(draft_size) if draft_size else None
        self.backend_args = backend_args
        # Keep a reference so that spawned workers count into the main process's record.
        self._record = _get_record()

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path', '<bytes>')
        try:
            data = results.pop('img_bytes', None)
            if data is None:
                data = read_bytes(path, backend_args=self.backend_args)
            img, (h, w) = decode_image(data, self.draft_size, self.exif_orientation)
        except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
            self._skip(path, f'cannot decode ({type(exc).__name__}: {exc})')
            return None
        if min(h, w) < self.min_size:
            self._skip(path, f'too small ({w}x{h} < {self.min_size} px)')
            return None
        results['img'] = img
        results['img_path'] = path
        results['ori_shape'] = (h, w)
        results['img_shape'] = img.shape[:2]
        return results

    def _skip(self, path: str, reason: str) -> None:
        skip_with(self._record, path, reason)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(min_size={self.min_size}, draft_size={self.draft_size}, '
                f'exif_orientation={self.exif_orientation}, backend_args={self.backend_args})')


def skip_with(record: '_SkipRecord', path: str, reason: str) -> None:
    """Count a skipped image into ``record`` (a transform's reference to the main process's
    record: spawned workers count into it) and warn."""
    global _RECORD, _RECORD_PID
    if _RECORD is None or _RECORD_PID != os.getpid():  # a worker: count into the shared record
        _RECORD, _RECORD_PID = record, os.getpid()
    record_skipped_image(path, reason)
