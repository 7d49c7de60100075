"""Training on GPUs: which GPU each rank uses, and how GPU arrays cross ranks. The one place both
are decided.

    comm = setup_cuda(distributed.init())   # before the first cupy allocation

* One GPU per rank, chosen by local rank (the rank's place among the ranks on its machine, from
  MPI's shared-memory split): local rank r uses GPU r % count, so no rank allocates on GPU 0 by
  default (a classic surprise: every process holding a context on device 0).
* The path for GPU arrays, decided by every rank together (all ranks take the same one):
  1. NCCL, when every rank has cupy's NCCL binding and libnccl, and the NCCL communicator starts
     on every rank (it refuses two ranks on one GPU, for instance);
  2. CUDA-aware MPI, when the MPI library says it accepts device buffers (MPIX_Query_cuda_support);
  3. host staging: MPIComm copies each GPU array to host memory, reduces it with MPI (or node
     shared memory) and copies the result back. Always works; the slowest.
  DISTBP_GPU_COMM=nccl|mpi|host asks for one path (an error if it cannot be taken); auto (the
  default) takes the first that works. `choose_path` is the rule; `setup_cuda` gathers the facts.
"""
from __future__ import annotations

from .. import backend
from .comm import Communicator, MPIComm
from .comm.cuda_mpi import CudaMPIComm, cuda_aware_mpi
from .comm.nccl import NCCLComm, nccl_problem

PREFERENCES = ("auto", "nccl", "mpi", "host")  # DISTBP_GPU_COMM's values


class DeviceError(RuntimeError):
    """--device cuda cannot run here (no cupy, no GPU, or a GPU path that was asked for is missing)."""


def choose_path(preference: str, nccl_why: str, cuda_mpi: bool, cuda_mpi_why: str = "") -> tuple[str, list]:
    """The GPU path, and why each better one was passed over (lines for the doctor and the log).

    `nccl_why` is "" when NCCL can be used on every rank, else the reason; `cuda_mpi` whether the
    MPI library accepts GPU buffers on every rank. `preference`: auto, nccl, mpi or host."""
    if preference not in PREFERENCES:
        raise ValueError(f"unknown GPU communication path {preference!r}; expected auto, nccl, mpi or host")
    skipped = []
    if preference in ("auto", "nccl"):
        if not nccl_why:
            return "nccl", skipped
        if preference == "nccl":
            raise DeviceError(f"DISTBP_GPU_COMM=nccl but NCCL cannot be used: {nccl_why}")
        skipped.append(f"nccl: {nccl_why}")
    if preference in ("auto", "mpi"):
        if cuda_mpi:
            return "cuda-aware mpi", skipped
        why = cuda_mpi_why or "the MPI library does not accept GPU buffers"
        if preference == "mpi":
            raise DeviceError(f"DISTBP_GPU_COMM=mpi but MPI is not CUDA-aware: {why}")
        skipped.append(f"cuda-aware mpi: {why}")
    return "host staging", skipped


def local_rank(comm: Communicator) -> int:
    """This rank's place among the ranks on its machine (0 in a world of one)."""
    comm = getattr(comm, "host", comm)  # a GPU communicator's MPI one
    if not isinstance(comm, MPIComm) or comm.size == 1:
        return 0
    node = comm.comm.Split_type(comm.MPI.COMM_TYPE_SHARED, key=comm.rank)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def pin_device(comm: Communicator) -> int:
    """Give this rank its GPU (local rank modulo the GPUs it sees) before cupy allocates; its index."""
    mine = local_rank(comm)  # collective: every rank asks, whatever it finds
    count = backend.device_count()
    index = mine % count if count else 0
    backend.use_device(index)
    return index


def _agree(comm, value):
    """Every rank's `value` (a collective); the caller decides from the whole list."""
    return comm.allgather_obj(value) if comm.size > 1 else [value]


def setup_cuda(comm: Communicator) -> Communicator:
    """Pin this rank's GPU, check that every rank has one, and return the communicator for GPU
    training: `comm` itself in a world of one or with host staging, else an NCCLComm or a
    CudaMPIComm around it. Collective; raises DeviceError (on every rank alike) when it cannot."""
    try:
        backend.gpu_comm_preference()  # a bad DISTBP_GPU_COMM is a usage error, before any collective
    except ValueError as e:
        raise DeviceError(str(e)) from None
    pin_device(comm)
    problems = _agree(comm, backend.cuda_problem())
    bad = [(r, p) for r, p in enumerate(problems) if p]
    if bad:
        r, p = bad[0]
        where = "" if comm.size == 1 else f"rank {r}{' and others' if len(bad) > 1 else ''}: "
        raise DeviceError(f"--device cuda: {where}{p}; use --device cpu")
    if comm.size == 1 or not isinstance(comm, MPIComm):
        return comm
    path, skipped = select_path(comm)
    return _build(path, skipped, comm)


_last_choice: tuple = ("none", [])


def last_choice() -> tuple[str, list]:
    """The path the last setup_cuda took and why it passed the better ones over (for the doctor)."""
    return _last_choice


def select_path(comm: MPIComm) -> tuple[str, list]:
    """Every rank's facts gathered, the rule applied: the same (path, reasons) on every rank."""
    cp = backend.cupy_module()
    aware, aware_why = cuda_aware_mpi()
    facts = _agree(comm, (nccl_problem(cp), aware, aware_why))
    nccl_why = next((f"rank {r}: {f[0]}" for r, f in enumerate(facts) if f[0]), "")
    cuda_mpi = all(f[1] for f in facts)
    why = next((f"rank {r}: {f[2]}" for r, f in enumerate(facts) if not f[1]), "")
    return choose_path(backend.gpu_comm_preference(), nccl_why, cuda_mpi, why)


def _build(path: str, skipped: list, comm: MPIComm) -> Communicator:
    global _last_choice
    if path == "nccl":
        try:
            made, error = NCCLComm(comm), ""
        except Exception as e:  # noqa: BLE001 (NcclError, CUDA errors: any failure is a fallback)
            made, error = None, f"{type(e).__name__}: {e}"
        errors = _agree(comm, error)
        failed = [(r, e) for r, e in enumerate(errors) if e]
        if not failed:
            _last_choice = (path, skipped)
            return made
        # Some rank could not start NCCL (two ranks on one GPU, for one): all take the next path.
        why = f"rank {failed[0][0]}: NCCL did not start ({failed[0][1]})"
        if backend.gpu_comm_preference() == "nccl":
            raise DeviceError(f"DISTBP_GPU_COMM=nccl but {why}")
        aware, aware_why = cuda_aware_mpi()
        path, skipped = choose_path("auto", why, all(_agree(comm, aware)), aware_why)
    _last_choice = (path, skipped)
    return CudaMPIComm(comm) if path == "cuda-aware mpi" else comm

