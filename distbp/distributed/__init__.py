"""Distributed training over MPI. `get_comm()` works the same with and without mpirun.

Data parallelism: `DistributedDataParallel`, `SyncBatchNorm`, `broadcast_state`; gradients reduced in
flat buckets while backward runs: `Reducer`; communication inside the autograd graph (model
parallelism): `distbp.distributed.functional`; checked point-to-point transfers and the process grid
for pipeline parallelism: `p2p` (`send_array`, `recv_array`, `tag`), `ProcessGrid`; tensor
parallelism (Megatron's column/row split): `tensor_parallel` (`ColumnParallelLinear`,
`RowParallelLinear`, `VocabParallelEmbedding`); optimizer state sharded over the data-parallel ranks (ZeRO-1):
`ZeroRedundancyOptimizer`; gradient clipping over the grid's shards and stages: `clip_grad_norm_`.
See docs/distributed.md and docs/model_parallel.md."""
from . import functional, p2p, tensor_parallel, trace
from .agreement import SettingsMismatchError, check_same
from .clip import clip_grad_norm_
from .comm import Communicator, MPIComm, Request, SelfComm, get_comm, launched_by_mpi
from .comm.base import CommunicatorFreedError
from .comm.watchdog import CollectiveMismatchError, get_step, set_step
from .data_parallel import DistributedDataParallel, broadcast_module, broadcast_state, verify_same_model
from .grid import ProcessGrid
from .p2p import recv_array, send_array
from .reducer import Reducer
from .runtime import end_job, init, local_size, set_threads
from .sync_batchnorm import SyncBatchNorm
from .tensor_parallel import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding
from .zero import ZeroRedundancyOptimizer

__all__ = ["CollectiveMismatchError", "ColumnParallelLinear", "Communicator", "CommunicatorFreedError",
           "DistributedDataParallel", "MPIComm",
           "ProcessGrid", "Reducer", "Request", "RowParallelLinear", "SelfComm", "SettingsMismatchError",
           "SyncBatchNorm", "VocabParallelEmbedding", "ZeroRedundancyOptimizer", "broadcast_module", "broadcast_state",
           "check_same", "clip_grad_norm_", "end_job", "functional", "get_comm", "get_step", "init", "launched_by_mpi",
           "local_size", "p2p", "recv_array", "send_array", "set_step", "set_threads", "tensor_parallel", "trace",
           "verify_same_model"]
