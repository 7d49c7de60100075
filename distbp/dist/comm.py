"""Communicators: the only module that imports mpi4py.

`get_comm()` returns one process-wide communicator: `MPIComm` over `MPI.COMM_WORLD` when the program
was launched by an MPI launcher (mpirun/mpiexec/srun), else `SelfComm`, a world of one whose
collectives are identities, so `python -m distbp.train` needs no launcher to debug.

Methods are named after MPI functions (ChainerMN's convention). Array methods act on numpy
buffers in place with mpi4py's upper-case (buffer) calls — no pickling; `*_obj` methods pickle
small Python objects. Every rank must call every collective in the same order.
"""
from __future__ import annotations

import os
import sys

import numpy

# Variables that MPI launchers set in every rank they start (MPICH/Hydra, Open MPI, PMIx, Slurm PMI).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDI_CONTROL_FD")


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process (or mpi4py is already initialised)."""
    if os.environ.get("DISTBP_NO_MPI"):
        return False
    return "mpi4py.MPI" in sys.modules or any(v in os.environ for v in _LAUNCHER_VARS)


class Communicator:
    """Interface every communicator implements. `rank`, `size`; collectives on arrays in place."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce(self, array, op: str = "sum"):
        """Reduce `array` over all ranks in place ('sum', 'max' or 'min'); returns it."""
        raise NotImplementedError

    def bcast(self, array, root: int = 0):
        """Overwrite `array` on every rank with root's (same shape and dtype everywhere)."""
        raise NotImplementedError

    def allgather(self, array):
        """Stack every rank's equally shaped array: result shape (size, *array.shape)."""
        raise NotImplementedError

    def bcast_obj(self, obj, root: int = 0):
        raise NotImplementedError

    def allgather_obj(self, obj) -> list:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (used when one rank fails, so none hangs)."""
        os._exit(code)


class SelfComm(Communicator):
    """A world of one: every collective is the identity."""

    rank, size = 0, 1

    def allreduce(self, array, op="sum"):
        if op not in ("sum", "max", "min"):
            raise ValueError(f"unknown reduction {op!r}; expected 'sum', 'max' or 'min'")
        return array

    def bcast(self, array, root=0):
        return array

    def allgather(self, array):
        return numpy.asarray(array)[None].copy()

    def bcast_obj(self, obj, root=0):
        return obj

    def allgather_obj(self, obj):
        return [obj]

    def barrier(self):
        pass


class MPIComm(Communicator):
    """Collectives over an mpi4py communicator (COMM_WORLD by default)."""

    def __init__(self, mpi_comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = mpi_comm if mpi_comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}

    def _op(self, op):
        try:
            return self._ops[op]
        except KeyError:
            raise ValueError(f"unknown reduction {op!r}; expected 'sum', 'max' or 'min'") from None

    def allreduce(self, array, op="sum"):
        self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self._op(op))
        return array

    def bcast(self, array, root=0):
        self.comm.Bcast(array, root=root)
        return array

    def allgather(self, array):
        array = numpy.ascontiguousarray(array)
        out = numpy.empty((self.size,) + array.shape, dtype=array.dtype)
        self.comm.Allgather(array, out)
        return out

    def bcast_obj(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def allgather_obj(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        self.comm.Abort(code)


_world = None


def get_comm() -> Communicator:
    """The process-wide communicator (MPI when launched by MPI, else a world of one)."""
    global _world
    if _world is None:
        _world = MPIComm() if launched_by_mpi() else SelfComm()
    return _world
