"""Process start-up for distributed runs: BLAS threads per rank, and failure = end of the job.

`init()` is what a training script calls first. It returns the communicator, gives each rank its
share of the cores (ranks that each start a BLAS thread per core oversubscribe the machine), and
installs an excepthook so an exception on any rank prints `rank N: <error>` and aborts the whole
job instead of leaving the other ranks waiting in a collective forever (ChainerMN's global_except_hook,
chainer/chainermn#236). It also asks Linux to end short sleeps on time (`precise_naps`). Keeping
freed memory for reuse (`retain_freed_memory`) is not a distributed matter: `import distbp` applies
it in every process (distbp/_process.py); init() only confirms it."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
import traceback

from .. import _env
from .._process import retain_freed_memory
from .comm import ending, get_comm, watchdog

_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
_threadpool_limiter = None
_ABORT_GRACE_S = watchdog.ABORT_GRACE_S  # see install_failure_hook


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

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, (KeyboardInterrupt, _env.EnvError)):
            # Ctrl-C on one rank or all (status 130), or a user's bad setting (one line, status 2)
            code, line = (130, "interrupted") if issubclass(exc_type, KeyboardInterrupt) else (2, f"error: {exc}")
            _exit_after_finalize(end_job(code, line))   # every rank failed alike: leave together
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(f"rank {comm.rank}: {text}")
        sys.stderr.flush()
        # NOTE: MPI_Abort makes the launcher tear the job down at once, and Hydra can close this rank's
        # stderr pipe before it has forwarded what is in it: the one line that says what failed was
        # lost in about 1 run of 10. A moment's pause lets the launcher read it first.
        time.sleep(_ABORT_GRACE_S)
        comm.abort(1)

    sys.excepthook = hook


def _exit_after_finalize(code: int) -> None:
    """Leave with `code` from inside sys.excepthook (where SystemExit is not honoured)."""
    from mpi4py import MPI
    sys.stdout.flush()
    sys.stderr.flush()
    if MPI.Is_initialized() and not MPI.Is_finalized():
        MPI.Finalize()
    os._exit(code)


def end_job(code: int, line: str) -> int:
    """A failure on this rank ends the whole job: `line` printed once, every rank ending with `code`.

    Returns `code` when every rank failed alike (the caller exits with it); otherwise prints
    `rank N: line` and aborts every rank with `code` (comm/ending.py). Call it from the place that
    catches a user's error, on the rank that caught it; in a world of one it prints and returns."""
    try:
        get_comm()
    except _env.EnvError:   # DISTBP_NO_MPI under a launcher: MPI is there, and the ranks must agree
        from .comm.mpi import MPIComm
        MPIComm()
    return ending.end_job(code, line)


def init(threads: int | None = None):
    """Start-up for a training process; returns the communicator.

    Checks every DISTBP_* setting (a bad one ends the job with one line, exit status 2)."""
    comm = get_comm()
    install_failure_hook(comm)
    _env.check_all()
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // local_size(comm))
    set_threads(threads)
    retain_freed_memory()
    precise_naps()
    return comm
