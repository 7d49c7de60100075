"""Process start-up for distributed runs: BLAS threads per rank, and failure = end of the job.

`init()` is what a training script calls first. It returns the communicator, gives each rank its
share of the cores (4 ranks on 2 cores with default BLAS threads ran 9x slower, PLATFORM.md), and
installs an excepthook so an exception on any rank prints `rank N: <error>` and aborts the whole
job instead of leaving the other ranks waiting in a collective forever (ChainerMN's global_except_hook,
chainer/chainermn#236). It also asks glibc to keep freed memory for reuse (`retain_freed_memory`) and
Linux to end short sleeps on time (`precise_naps`)."""
from __future__ import annotations

import ctypes
import ctypes.util
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


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def retain_freed_memory() -> bool:
    """Have glibc keep freed blocks up to 32 MB in the heap instead of returning them to the OS.

    A training step allocates the same arrays every step. With glibc's default, a rank of a 2-rank
    MLP job paid ~2,600 page faults a step (10 MB of fresh pages, 3-5 ms of a 45 ms step) because
    blocks were unmapped and mapped again; with both thresholds set, none (docs/distributed.md). The
    cost: the heap stays at its peak size, as a caching allocator's pool does. Only glibc on Linux;
    elsewhere, or with DISTBP_RETAIN_FREED_MEMORY=0, it does nothing and returns False."""
    if os.environ.get("DISTBP_RETAIN_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    # Both, or neither: setting one turns off glibc's adaptive thresholds and made it worse.
    # 32 MB is the largest mmap threshold glibc accepts on 64-bit.
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


_PR_SET_TIMERSLACK = 29  # linux/prctl.h


def precise_naps(slack_ns: int = 1000) -> bool:
    """Let a short sleep end on time: Linux adds up to 50 us of timer slack to every sleep.

    A rank waiting on a collective naps between MPI Test() calls (comm/watchdog.py) so that it does
    not slow the rank it waits for; with the default slack each nap cost a 7.45 MB allreduce ~0.3 ms
    (+14%), with 1 us ~0.08 ms. Linux only; returns whether it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(
            _PR_SET_TIMERSLACK, int(slack_ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


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
    retain_freed_memory()
    precise_naps()
    install_failure_hook(comm)
    return comm
