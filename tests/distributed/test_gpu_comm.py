"""The GPU communicators' logic on the numpy-backed cupy stand-in (tests/cupy_standin.py): NCCLComm
(whose fake NCCL rebuilds arrays from the raw pointers distbp passes and moves them with MPI),
CudaMPIComm, the path selection every rank agrees on, and DDP with its buckets on the "device"
equal to one process. No GPU, NCCL or CUDA-aware MPI runs here: tests/test_cuda.py and
benchmarks/gpu_check.sh do that on a GPU."""
import copy
from pathlib import Path

import numpy as np
import pytest
from cupy_standin import install
from distributed_helpers import max_diff, train_on_gpu_shards

import distbp as db
from distbp import nn
from distbp.distributed import DistributedDataParallel, MPIComm
from distbp.distributed.comm.cuda_mpi import CudaMPIComm, cuda_aware_mpi
from distbp.distributed.comm.nccl import NCCLComm
from distbp.distributed.gpu import DeviceError, local_rank, setup_cuda

COMMS = {"nccl": NCCLComm, "cuda-aware mpi": CudaMPIComm}


@pytest.fixture
def standin(monkeypatch):
    return install(monkeypatch)


def _mpi(comm):
    if not isinstance(comm, MPIComm):
        pytest.skip("needs an MPI communicator (run under mpiexec)")
    return comm


@pytest.mark.mpi
@pytest.mark.parametrize("kind", sorted(COMMS))
def test_device_collectives_against_closed_forms(comm, standin, kind):
    gpu = COMMS[kind](_mpi(comm))
    n, r = gpu.size, gpu.rank
    a = standin.asarray(np.full((2, 3), float(r)))
    assert gpu.allreduce(a) is a
    np.testing.assert_array_equal(a.get(), n * (n - 1) / 2)
    for op, want in (("max", n - 1), ("min", 0)):
        b = standin.asarray(np.full(4, float(r), dtype=np.float32))
        gpu.allreduce(b, op)
        np.testing.assert_array_equal(b.get(), want)
    req = gpu.iallreduce(standin.asarray(np.arange(5.0) * (r + 1)))
    np.testing.assert_array_equal(req.wait().get(), np.arange(5.0) * n * (n + 1) / 2)
    c = standin.asarray(np.full(3, 42.0 if r == 0 else -1.0))
    np.testing.assert_array_equal(gpu.bcast(c).get(), 42.0)
    rows = gpu.allgather(standin.asarray(np.array([r, 10 * r], dtype=np.int64)))
    assert isinstance(rows, standin.ndarray)
    np.testing.assert_array_equal(rows.get(), [[k, 10 * k] for k in range(n)])
    big = standin.asarray(np.arange(2.0 * n * 3).reshape(2 * n, 3) + r)
    mine = gpu.reduce_scatter(big)
    full = sum(np.arange(2.0 * n * 3).reshape(2 * n, 3) + k for k in range(n))
    np.testing.assert_array_equal(mine.get(), full[2 * r:2 * r + 2])
    flat = standin.asarray(np.arange(7.0) + r)  # 7: uneven slices on 2-4 ranks
    gpu.allgather_slices(flat)
    np.testing.assert_array_equal(flat.get(), np.arange(7.0) + np.repeat(np.arange(n), np.diff(
        [7 * k // n for k in range(n + 1)])))
    if n > 1:  # (a world of one moves nothing: path "none")
        assert gpu.path_of(a) == kind
        assert gpu.path_of(np.zeros(2)) in ("mpi", "node shared memory")


@pytest.mark.mpi
def test_nccl_calls_take_the_pointer_of_a_slice_not_of_its_base(comm, standin):
    """A view's pointer is its own first element: the fake NCCL rebuilds the array from it."""
    gpu = NCCLComm(_mpi(comm))
    base = standin.asarray(np.zeros(10))
    view = base[4:7]
    view[...] = standin.asarray(np.full(3, 1.0 + gpu.rank))
    gpu.allreduce(view)
    want = np.zeros(10)
    want[4:7] = gpu.size * (gpu.size + 1) / 2
    np.testing.assert_array_equal(base.get(), want)


@pytest.mark.mpi
def test_nccl_point_to_point_in_a_ring(comm, standin):
    gpu = NCCLComm(_mpi(comm))
    if gpu.size < 2:
        pytest.skip("needs two ranks")
    right, left = (gpu.rank + 1) % gpu.size, (gpu.rank - 1) % gpu.size
    out = standin.asarray(np.full(4, float(gpu.rank)))
    got = standin.asarray(np.zeros(4))
    send = gpu.isend(out, right)
    gpu.recv(got, left)
    send.wait()
    np.testing.assert_array_equal(got.get(), float(left))


@pytest.mark.mpi
def test_host_arrays_and_objects_go_through_mpi(comm, standin):
    gpu = NCCLComm(_mpi(comm))
    a = np.full(3, float(gpu.rank))
    gpu.allreduce(a)
    np.testing.assert_array_equal(a, gpu.size * (gpu.size - 1) / 2)
    assert gpu.allgather_obj(gpu.rank) == list(range(gpu.size))
    assert [e for e in standin.events if e[0] == "nccl" and e[1] == "allReduce"] == []


@pytest.mark.mpi
@pytest.mark.parametrize("kind", sorted(COMMS))
def test_ddp_with_device_buckets_equals_one_process(comm, standin, kind):
    """DDP's buckets on the device, reduced by the GPU communicator: N ranks == one process (1e-10)."""
    gpu = COMMS[kind](_mpi(comm))
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    mine = copy.deepcopy(ref).to("cuda")
    ddp = DistributedDataParallel(mine, gpu, bucket_cap_mb=0.001)  # several buckets
    paths = ddp.reducer.bucket_paths()
    want = kind if gpu.size > 1 else "none"
    assert len(paths) > 1 and all(device == "cuda" and path == want for device, _, path in paths)
    assert all(isinstance(b.buffer, standin.ndarray) for b in ddp.reducer.buckets)
    train_on_gpu_shards(ref, ddp, gpu)
    assert all(isinstance(p.data, standin.ndarray) for p in mine.parameters())
    assert max_diff(mine, ref) <= 1e-10
    if kind == "nccl" and gpu.size > 1:
        assert any(e[:2] == ("nccl", "allReduce") for e in standin.events)


@pytest.mark.mpi
def test_setup_cuda_takes_nccl_when_every_rank_has_it(comm, standin, monkeypatch):
    monkeypatch.delenv("DISTBP_GPU_COMM", raising=False)
    chosen = setup_cuda(_mpi(comm))
    assert isinstance(chosen, NCCLComm) if comm.size > 1 else chosen is comm


@pytest.mark.mpi
def test_setup_cuda_falls_back_on_every_rank_when_one_lacks_nccl(comm, standin, monkeypatch):
    monkeypatch.delenv("DISTBP_GPU_COMM", raising=False)
    if _mpi(comm).size < 2:
        pytest.skip("needs two ranks")
    if comm.rank == comm.size - 1:
        standin.cuda.nccl.available = False
    chosen = setup_cuda(comm)
    assert chosen is comm or isinstance(chosen, CudaMPIComm)  # MPICH here: host staging
    assert (chosen is comm) == (not cuda_aware_mpi()[0])


@pytest.mark.mpi
def test_setup_cuda_falls_back_when_nccl_does_not_start(comm, standin, monkeypatch):
    """NCCL refuses, for instance, two ranks on one GPU: every rank then takes the next path."""
    monkeypatch.delenv("DISTBP_GPU_COMM", raising=False)
    if _mpi(comm).size < 2:
        pytest.skip("needs two ranks")

    def refuse(*args):
        raise RuntimeError("ncclInvalidUsage: Duplicate GPU detected")
    monkeypatch.setattr(standin.cuda.nccl, "NcclCommunicator", refuse)
    chosen = setup_cuda(comm)
    assert not isinstance(chosen, NCCLComm)


@pytest.mark.mpi
@pytest.mark.parametrize("preference", ["host", "mpi"])
def test_setup_cuda_honours_distbp_gpu_comm(comm, standin, monkeypatch, preference):
    monkeypatch.setenv("DISTBP_GPU_COMM", preference)
    if _mpi(comm).size < 2:
        pytest.skip("a world of one has no GPU path")
    if preference == "host":
        assert setup_cuda(comm) is comm
    elif cuda_aware_mpi()[0]:
        assert isinstance(setup_cuda(comm), CudaMPIComm)
    else:
        with pytest.raises(DeviceError, match="DISTBP_GPU_COMM=mpi but MPI is not CUDA-aware"):
            setup_cuda(comm)


@pytest.mark.mpi
def test_every_rank_refuses_cuda_when_one_rank_has_no_gpu(comm, standin, monkeypatch):
    """The check is collective: no rank goes on to a collective the others never reach."""
    from distbp import backend
    if _mpi(comm).size < 2:
        pytest.skip("needs two ranks")
    if comm.rank == 1:
        monkeypatch.setattr(backend, "_cupy", None)
        monkeypatch.setattr(backend, "_cupy_problem", "cupy is not installed (pip install 'distbp[cuda]')")
    with pytest.raises(DeviceError, match="--device cuda: rank 1: cupy is not installed"):
        setup_cuda(comm)


@pytest.mark.mpi
def test_local_rank_counts_the_ranks_on_this_machine(comm):
    assert local_rank(comm) == comm.rank  # every rank of the test job runs on this machine


@pytest.mark.mpi
def test_this_mpi_library_is_not_cuda_aware(comm):
    """MPICH from pip is built without CUDA: the query must say so (a wrong yes would crash)."""
    _mpi(comm)
    aware, why = cuda_aware_mpi()
    assert not aware and "MPIX_Query_cuda_support() = 0" in why


@pytest.mark.mpi
def test_doctor_names_the_gpu_bucket_path(comm, standin, monkeypatch):
    from distbp.doctor import check_gpu_buckets
    monkeypatch.delenv("DISTBP_GPU_COMM", raising=False)
    lines, figures = check_gpu_buckets(_mpi(comm))
    path = "nccl" if comm.size > 1 else "none"
    assert figures == {"gpu_bucket_path": path}
    assert lines[0].startswith("OK   GPU gradient-bucket allreduce through ")


@pytest.mark.mpi
def test_nccl_runs_on_its_stream_between_two_events(comm, standin):
    """The stream protocol: wait for the compute stream's work, run on the NCCL stream, mark the end,
    and at wait() make the compute stream (cupy's current one, ptr 0 in the stand-in) wait for it."""
    gpu = NCCLComm(_mpi(comm))
    a = standin.asarray(np.ones(5))
    start = len(standin.events)
    req = gpu.iallreduce(a)
    queued = standin.events[start:]
    assert queued == [("record", 0), ("wait_event", gpu.stream.ptr), ("nccl", "allReduce", 5),
                      ("record", gpu.stream.ptr)]
    assert req.keep is not None  # the buffer stays referenced while the call may still use it
    req.wait()
    assert standin.events[-1] == ("wait_event", 0) and req.keep is None


@pytest.mark.mpi
@pytest.mark.parametrize("kind", sorted(COMMS))
def test_free_releases_the_device_path_and_only_the_mpi_communicator_it_made(comm, standin, kind):
    from context_ids import free_context_ids

    from distbp.distributed import CommunicatorFreedError
    before = free_context_ids()
    gpu = COMMS[kind](_mpi(comm))
    sub = gpu.split(0)   # its own MPI communicator (and, for NCCL, its own NCCL communicator)
    a = standin.asarray(np.ones(3))
    np.testing.assert_array_equal(sub.allreduce(a).get(), sub.size)
    sub.free()
    gpu.free()
    gpu.free()   # again: nothing happens
    assert free_context_ids() == before
    if kind == "nccl":
        assert standin.events.count(("nccl_destroy",)) == 2
    for freed in (sub, gpu):
        with pytest.raises(CommunicatorFreedError, match="was freed"):
            freed.allreduce(standin.asarray(np.ones(3)))
        with pytest.raises(CommunicatorFreedError, match="was freed"):
            freed.allreduce(np.ones(3))
    assert comm.allreduce(np.ones(1))[0] == comm.size   # the MPI communicator gpu was given stays


@pytest.mark.mpi
def test_cuda_aware_mpi_synchronises_the_stream_before_mpi_reads(comm, standin):
    gpu = CudaMPIComm(_mpi(comm))
    a = standin.asarray(np.ones(5))
    start = len(standin.events)
    gpu.allreduce(a)
    assert ("sync", 0) in standin.events[start:]
    np.testing.assert_array_equal(a.get(), gpu.size)


def test_train_device_cuda_on_two_ranks_through_nccl_equals_the_cpu_run(tmp_path):
    """`distbp.train --device cuda` under mpiexec -n 2, the stand-in posing as cupy (its NCCL over
    MPI): the trainer on the GPU communicator gives the CPU data-parallel run's weights (1e-10)."""
    from distributed_helpers import MPIEXEC, launch_job
    from safetensors.numpy import load_file

    from distbp.training import checkpoint
    if not MPIEXEC.exists():
        pytest.skip("mpiexec not installed next to python")
    args = ["--no-progress", "--steps", "8", "--batch-size", "50", "--dtype", "float64", "--hidden", "32",
            "--optimizer", "adam", "--lr", "0.003"]
    tests = str(Path(__file__).resolve().parents[1])
    prelude = (f"import sys, types\nsys.path.insert(0, {tests!r})\nimport cupy_standin\n"
               "sys.modules['cupy'] = cupy_standin.StandIn()\n"
               "sys.modules['cupyx'] = types.SimpleNamespace(scatter_add=lambda t, i, v: np.add.at(t, i, v))\n")
    runs = {}
    for device in ("cpu", "cuda"):
        argv = [*args, "--device", device, "--checkpoint-dir", str(tmp_path / device)]
        proc, _ = launch_job(tmp_path, 2, f"from distbp.train import main\nsys.exit(main({argv!r}))\n",
                             prelude=prelude if device == "cuda" else "import sys\n")
        assert proc.returncode == 0, proc.stderr
        runs[device] = load_file(str(checkpoint.latest(tmp_path / device)))
        if device == "cuda":
            assert "GPU gradients through nccl" in proc.stdout, proc.stdout
    assert runs["cpu"].keys() == runs["cuda"].keys()
    for key in runs["cpu"]:
        np.testing.assert_allclose(runs["cuda"][key], runs["cpu"][key], rtol=1e-10, atol=1e-12, err_msg=key)
