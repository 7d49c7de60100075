"""Distributed training over MPI. `get_comm()` works the same with and without mpirun."""
from .comm import Communicator, MPIComm, SelfComm, get_comm, launched_by_mpi
from .runtime import init, local_size, set_threads

__all__ = ["Communicator", "MPIComm", "SelfComm", "get_comm", "init", "launched_by_mpi", "local_size", "set_threads"]
