"""Distributed training over MPI. `get_comm()` works the same with and without mpirun."""
from .comm import Communicator, MPIComm, SelfComm, get_comm, launched_by_mpi

__all__ = ["Communicator", "MPIComm", "SelfComm", "get_comm", "launched_by_mpi"]
