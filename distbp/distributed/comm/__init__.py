"""Communicators. `get_comm()` returns one process-wide communicator: `MPIComm` over
`MPI.COMM_WORLD` when the program was launched by an MPI launcher (mpirun/mpiexec/srun), else
`SelfComm`, a world of one whose collectives are identities.

One file per backend: base.py (the interface), self.py, mpi.py, shm.py (node shared-memory
allreduce), hierarchical.py (shared memory within hosts, MPI between), watchdog.py (deadlines and
fingerprints for every MPI call); for GPU arrays device.py (routing), nccl.py and cuda_mpi.py,
chosen by distbp/distributed/gpu.py.
"""
from __future__ import annotations

import os
import sys

from ... import _env
from .base import Communicator, CommunicatorFreedError, Request
from .mpi import MPIComm
from .self import SelfComm

# Variables that MPI launchers set in every rank they start (MPICH/Hydra, Open MPI, PMIx, Slurm PMI).
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
                  "HYDI_CONTROL_FD")


_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # the job's size, as MPICH/Hydra and Open MPI give it


def launcher_size() -> int:
    """How many ranks the MPI launcher that started this process started (1 without one)."""
    for var in _SIZE_VARS:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process (or mpi4py is already initialised).

    DISTBP_NO_MPI=1 says no; but not in a job of several ranks (`mpiexec -n 4` with DISTBP_NO_MPI=1
    exported): each rank would train alone and all would write the same files. That raises EnvError."""
    if _env.get("DISTBP_NO_MPI"):
        if launcher_size() > 1:
            raise _env.EnvError(f"DISTBP_NO_MPI is set but an MPI launcher started this process as one of "
                                f"{launcher_size()} ranks: each would train alone and write the same files; "
                                f"unset DISTBP_NO_MPI, or start one process without mpiexec")
        return False
    return "mpi4py.MPI" in sys.modules or any(v in os.environ for v in _LAUNCHER_VARS)


_world = None


def get_comm() -> Communicator:
    """The process-wide communicator (MPI when launched by MPI, else a world of one). After its
    free(), the next call makes a new one (COMM_WORLD itself is never freed)."""
    global _world
    if _world is None or getattr(_world, "_freed", False):
        _world = MPIComm() if launched_by_mpi() else SelfComm()
    return _world


__all__ = ["Communicator", "CommunicatorFreedError", "MPIComm", "Request", "SelfComm", "get_comm", "launched_by_mpi"]
