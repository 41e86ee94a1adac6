"""The training epoch and seed, shared with dataloader workers, for reproducible data randomness.

Random choices of the training pipeline (the grid of :class:`SampleGridRegions`) are drawn from a
generator seeded with ``(seed, epoch, sample index)``, so that a run interrupted and resumed with
``--resume`` draws exactly the regions of an uninterrupted run. Dataloader workers cannot see the
Runner's epoch (persistent workers are started once, with a copy of the dataset), so the main
process writes it here, into shared memory that the workers read: ``tools/train.py`` registers a
hook that calls :func:`set_data_epoch` with the Runner's epoch and seed before every training epoch
(a script that builds its own Runner does the same with one hook).

Until :func:`set_data_epoch` is called, :func:`get_data_epoch` returns ``None`` and the transforms
fall back to torch's global generator (seeded per worker by mmengine).
"""
import multiprocessing as mp
import os
from typing import Optional, Tuple

import numpy as np


class _SharedEpoch:
    """``[is_set, epoch, seed]`` in shared memory created in the main process (fork: inherited;
    spawn: pickled with the dataset while the worker starts)."""

    def __init__(self) -> None:
        try:
            self._values = mp.get_context('spawn').RawArray('q', 3)
            self.shared = True
        except (OSError, ImportError, PermissionError):  # no /dev/shm: this process only
            self._values = [0, 0, 0]
            self.shared = False

    def set(self, epoch: int, seed: int) -> None:
        self._values[1] = int(epoch)
        self._values[2] = int(seed)
        self._values[0] = 1

    def clear(self) -> None:
        self._values[0] = 0

    def get(self) -> Optional[Tuple[int, int]]:
        if not self._values[0]:
            return None
        return int(self._values[1]), int(self._values[2])

    def __reduce__(self):
        if self.shared and mp.context.get_spawning_popen() is not None:
            return _adopt, (self._values, )
        return _get_shared, ()

    def __deepcopy__(self, memo) -> '_SharedEpoch':
        return self


_SHARED: Optional[_SharedEpoch] = None
_SHARED_PID: Optional[int] = None


def _get_shared() -> _SharedEpoch:
    global _SHARED, _SHARED_PID
    if _SHARED is None:
        _SHARED, _SHARED_PID = _SharedEpoch(), os.getpid()
    return _SHARED


def _adopt(values) -> _SharedEpoch:
    """In a spawned worker: use the parent's shared values as this process's record."""
    global _SHARED, _SHARED_PID
    record = _SharedEpoch.__new__(_SharedEpoch)
    record._values, record.shared = values, True
    _SHARED, _SHARED_PID = record, os.getpid()
    return record


def data_epoch_record() -> _SharedEpoch:
    """The record; transforms keep a reference so that spawned workers share the parent's."""
    return _get_shared()


def set_data_epoch(epoch: int, seed: Optional[int] = None) -> None:
    """Publish the training ``epoch`` (0-based) and ``seed`` to this process and its workers."""
    _get_shared().set(epoch, 0 if seed is None else seed)


def clear_data_epoch() -> None:
    """Forget the published epoch (the transforms fall back to the global generator)."""
    _get_shared().clear()


def get_data_epoch() -> Optional[Tuple[int, int]]:
    """``(epoch, seed)`` as last published, or ``None`` when no epoch was set."""
    return _get_shared().get()


def sample_seed(seed: int, epoch: int, sample_idx: int, salt: int = 0) -> int:
    """A 63-bit seed that is a function of ``(seed, epoch, sample index, salt)`` only (numpy's
    ``SeedSequence`` hash: nearby inputs give unrelated streams)."""
    words = [int(seed) & 0xFFFFFFFF, int(epoch), int(sample_idx), int(salt)]
    state = np.random.SeedSequence([w if w >= 0 else (1 << 32) + w for w in words])
    return int(state.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1)
