"""How many MPI communicators this process holds, measured from outside distbp.

MPICH gives each communicator (and each window, which carries a communicator inside) a context id
from a fixed pool of about 2048 per process; once the pool is empty, Split and Dup fail. mpi4py's
classes cannot be patched to count calls, so this probes the pool instead: it duplicates
COMM_WORLD until MPICH refuses, then frees the duplicates. Context ids are agreed on by all ranks
of the new communicator, so every rank gets the same count. Collective over COMM_WORLD; takes a
few hundredths of a second."""
from __future__ import annotations


def free_context_ids() -> int:
    """The number of communicators that COMM_WORLD's ranks could still create together."""
    from mpi4py import MPI
    made = []
    try:
        while True:
            made.append(MPI.COMM_WORLD.Dup())
    except MPI.Exception:   # "Too many communicators": the pool is empty
        pass
    finally:
        for c in made:
            c.Free()
    return len(made)


def mpi_running() -> bool:
    """Whether this process is a rank of an MPI job (an MPI test run); initialises MPI then."""
    from distbp.distributed.comm import launched_by_mpi
    if not launched_by_mpi():
        return False
    from mpi4py import MPI
    return not MPI.Is_finalized()
