"""One training per work dir at a time.

Two trainings started on the same work dir write ``epoch_N.pth``, ``last_checkpoint`` and the
logs into one folder; a later ``--resume`` then mixes their checkpoints without a word. The first
process of a training (rank 0; the other ranks of a distributed run do not take it) holds an
exclusive ``fcntl.flock`` on ``<work_dir>/.train.lock`` for the run's life. The operating system
releases a ``flock`` when the process ends in any way (normal exit, exception, SIGKILL, crash), so
a crashed run never leaves the work dir locked, and ``--resume`` of a finished or crashed run
works. The lock file holds the holder's pid, host, start time and command, named in the error of
a second run. On a system without ``fcntl`` (Windows) nothing is locked.
"""
import contextlib
import os
import os.path as osp
import socket
import sys
import time
from typing import Iterator, Optional

__all__ = ['WorkDirInUseError', 'hold_work_dir', 'launch_rank', 'LOCK_FILE']

LOCK_FILE = '.train.lock'

#: environment variable holding the process rank, per ``--launcher``
_RANK_VARIABLES = dict(pytorch='RANK', slurm='SLURM_PROCID', mpi='OMPI_COMM_WORLD_RANK')


class WorkDirInUseError(RuntimeError):
    """Another running training holds the work dir."""


def launch_rank(launcher: str = 'none') -> int:
    """The global rank this process will have, read from the launcher's environment before the
    process group exists (``0`` for ``launcher='none'``)."""
    variable = _RANK_VARIABLES.get(launcher)
    return int(os.environ.get(variable, 0)) if variable else 0


@contextlib.contextmanager
def hold_work_dir(work_dir: str, launcher: str = 'none') -> Iterator[Optional[str]]:
    """Hold ``work_dir`` for one training (rank 0 only) while the ``with`` block runs.

    Yields:
        The lock file's path (``None`` on ranks > 0 and without ``fcntl``).

    Raises:
        WorkDirInUseError: another live process holds the work dir; the message names it (pid,
            host, start, command) and the fix.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield None
        return
    if launch_rank(launcher) != 0:
        yield None
        return
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_FILE)
    handle = open(path, 'a+')
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by another open file (another process)
        handle.seek(0)
        holder = handle.read().strip() or 'another process'
        handle.close()
        raise WorkDirInUseError(
            f'the work dir {work_dir!r} is in use by a training that is still running '
            f'({holder}); two trainings in one work dir would mix their checkpoints and logs. '
            'Give this run another --work-dir, or wait until that one ends (stop it to resume '
            'it later with --resume). The lock goes with its process: a crashed run does not '
            f'keep it ({path}).') from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f'pid {os.getpid()} on {socket.gethostname()}, started '
                     f'{time.strftime("%Y-%m-%d %H:%M:%S")}: {" ".join(sys.argv)}\n')
        handle.flush()
        yield path
    finally:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
