"""Distributed training over MPI. `get_comm()` works the same with and without mpirun."""
from .comm import Communicator, MPIComm, Request, SelfComm, get_comm, launched_by_mpi
from .ddp import DistributedDataParallel, broadcast_module, broadcast_state, verify_same_model
from .runtime import init, local_size, set_threads
from .watchdog import CollectiveMismatchError, get_step, set_step

__all__ = ["CollectiveMismatchError", "Communicator", "DistributedDataParallel", "MPIComm", "Request",
           "SelfComm", "broadcast_module", "broadcast_state", "get_comm", "get_step", "init", "launched_by_mpi",
           "local_size", "set_step", "set_threads", "verify_same_model"]
