"""Distributed training over MPI. `get_comm()` works the same with and without mpirun.

Data parallelism: `DistributedDataParallel`, `SyncBatchNorm`, `broadcast_state`; gradients reduced in
flat buckets while backward runs: `Reducer`; communication inside the autograd graph (model
parallelism): `distbp.distributed.functional`; checked point-to-point transfers and the process grid
for pipeline parallelism: `p2p` (`send_array`, `recv_array`, `tag`), `ProcessGrid`. See
docs/distributed.md."""
from . import functional, p2p
from .comm import Communicator, MPIComm, Request, SelfComm, get_comm, launched_by_mpi
from .comm.watchdog import CollectiveMismatchError, get_step, set_step
from .data_parallel import DistributedDataParallel, broadcast_module, broadcast_state, verify_same_model
from .grid import ProcessGrid
from .p2p import recv_array, send_array
from .reducer import Reducer
from .runtime import init, local_size, set_threads
from .sync_batchnorm import SyncBatchNorm

__all__ = ["CollectiveMismatchError", "Communicator", "DistributedDataParallel", "MPIComm", "ProcessGrid", "Reducer",
           "Request", "SelfComm", "SyncBatchNorm", "broadcast_module", "broadcast_state", "functional", "get_comm",
           "get_step", "init", "launched_by_mpi", "local_size", "p2p", "recv_array", "send_array", "set_step",
           "set_threads", "verify_same_model"]
