"""DDP on real GPUs through the communicator setup_cuda chooses (NCCL, CUDA-aware MPI or host
staging) equals one process to 1e-10 (float64), and the collectives' closed forms hold on device
arrays. Skips without a GPU (DISTBP_REQUIRE_GPU=1 makes that a failure: benchmarks/gpu_check.sh).
Several ranks may share one GPU; NCCL then usually refuses to start and the next path is taken,
which the test prints. tests/distributed/test_gpu_comm.py checks the same logic without a GPU."""
import copy
import os

import numpy as np
import pytest
from distributed_helpers import max_diff, train_on_gpu_shards

import distbp as db
from distbp import backend, nn
from distbp.distributed import DistributedDataParallel, MPIComm
from distbp.distributed.comm.device import transfer_path
from distbp.distributed.gpu import last_choice, setup_cuda


def _gpu_comm(comm):
    if not isinstance(comm, MPIComm):
        pytest.skip("needs an MPI communicator (run under mpiexec)")
    if not db.cuda_available():
        if os.environ.get("DISTBP_REQUIRE_GPU") == "1":
            pytest.fail(f"DISTBP_REQUIRE_GPU=1 but no GPU is usable: {backend.cuda_problem()}", pytrace=False)
        pytest.skip(f"no CUDA device: {backend.cuda_problem()}")
    gpu = setup_cuda(comm)
    path, skipped = last_choice()
    print(f"rank {comm.rank}: GPU path {path if comm.size > 1 else 'none'}; passed over: {skipped}")
    return gpu, backend.cupy_module()


@pytest.mark.mpi
def test_cuda_collectives_against_closed_forms(comm):
    gpu, cp = _gpu_comm(comm)
    n, r = gpu.size, gpu.rank
    a = cp.full((2, 3), float(r))
    gpu.allreduce(a)
    np.testing.assert_array_equal(cp.asnumpy(a), n * (n - 1) / 2)
    rows = gpu.allgather(cp.asarray([r, 10 * r]))
    np.testing.assert_array_equal(cp.asnumpy(rows), [[k, 10 * k] for k in range(n)])
    b = cp.full(3, 42.0 if r == 0 else -1.0)
    np.testing.assert_array_equal(cp.asnumpy(gpu.bcast(b)), 42.0)


@pytest.mark.mpi
def test_cuda_ddp_equals_one_process(comm):
    gpu, cp = _gpu_comm(comm)
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    mine = copy.deepcopy(ref).to("cuda")
    ddp = DistributedDataParallel(mine, gpu, bucket_cap_mb=0.001)
    if comm.rank == 0:
        print("bucket paths:", ddp.reducer.bucket_paths())
    assert all(isinstance(b.buffer, cp.ndarray) for b in ddp.reducer.buckets)
    assert all(path == transfer_path(ddp.reducer.comm, ddp.reducer.buckets[0].buffer)
               for _, _, path in ddp.reducer.bucket_paths())
    train_on_gpu_shards(ref, ddp, gpu)
    assert max_diff(mine, ref) <= 1e-10
