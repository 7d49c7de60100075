"""Process start-up for distributed runs: BLAS threads per rank, and failure = end of the job.

`init()` is what a training script calls first. It returns the communicator, gives each rank its
share of the cores (4 ranks on 2 cores with default BLAS threads ran 9x slower, PLATFORM.md), and
installs an excepthook so an exception on any rank prints `rank N: <error>` and aborts the whole
job instead of leaving the other ranks waiting in a collective forever (ChainerMN's global_except_hook,
chainer/chainermn#236)."""
from __future__ import annotations

import os
import sys
import traceback

from .comm import get_comm

_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
_threadpool_limiter = None


def local_size(comm) -> int:
    """How many ranks share this machine (launcher variables, else the whole world)."""
    for var in _LOCAL_SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return comm.size


def set_threads(n: int) -> None:
    """Limit BLAS/OpenMP threads in this process to n (threadpoolctl works after numpy loads)."""
    global _threadpool_limiter
    from threadpoolctl import threadpool_limits
    _threadpool_limiter = threadpool_limits(limits=max(1, int(n)))


def install_failure_hook(comm) -> None:
    """On an uncaught exception: print it once with the rank, then abort every rank."""
    if comm.size == 1:
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
        else:
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            sys.stderr.write(f"rank {comm.rank}: {text}")
        sys.stderr.flush()
        comm.abort(1)

    sys.excepthook = hook


def init(threads: int | None = None):
    """Start-up for a training process; returns the communicator."""
    comm = get_comm()
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // local_size(comm))
    set_threads(threads)
    install_failure_hook(comm)
    return comm
