"""Communicators. `get_comm()` returns one process-wide communicator: `MPIComm` over
`MPI.COMM_WORLD` when the program was launched by an MPI launcher (mpirun/mpiexec/srun), else
`SelfComm`, a world of one whose collectives are identities.

One file per backend: base.py (the interface), self.py, mpi.py, shm.py (node shared-memory
allreduce), hierarchical.py (shared memory within hosts, MPI between), watchdog.py (deadlines and
fingerprints for every MPI call).
"""
from __future__ import annotations

import os
import sys

from .base import Communicator, Request
from .mpi import MPIComm
from .self import SelfComm

# Variables that MPI launchers set in every rank they start (MPICH/Hydra, Open MPI, PMIx, Slurm PMI).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDI_CONTROL_FD")


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process (or mpi4py is already initialised)."""
    if os.environ.get("DISTBP_NO_MPI"):
        return False
    return "mpi4py.MPI" in sys.modules or any(v in os.environ for v in _LAUNCHER_VARS)


_world = None


def get_comm() -> Communicator:
    """The process-wide communicator (MPI when launched by MPI, else a world of one)."""
    global _world
    if _world is None:
        _world = MPIComm() if launched_by_mpi() else SelfComm()
    return _world


__all__ = ["Communicator", "MPIComm", "Request", "SelfComm", "get_comm", "launched_by_mpi"]
