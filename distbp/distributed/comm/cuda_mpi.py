"""CudaMPIComm: GPU arrays handed to a CUDA-aware MPI library as they are (no host copy).

mpi4py passes any object with `__cuda_array_interface__` (a cupy array) to MPI as a device pointer.
Only an MPI library built with CUDA support can read it; any other crashes on it, so this path is
taken only when the library says it can (`cuda_aware_mpi()`; the selection is in
distbp/distributed/gpu.py). MPI knows nothing of CUDA streams: before each call the current stream
is synchronised, so the buffer holds what the kernels queued before the call wrote
(mpi4py's demo/cuda-aware-mpi does the same).
"""
from __future__ import annotations

import ctypes

from .base import _check_op
from .device import DeviceComm
from .mpi import _MPIRequest


def cuda_aware_mpi() -> tuple[bool, str]:
    """(whether the MPI library under mpi4py accepts GPU buffers, how that was decided).

    Open MPI and MPICH (5.0.2 has it) export `MPIX_Query_cuda_support()`: 1 when the library was built
    with CUDA and its runtime accepts device buffers. mpi4py does not wrap it, so it is looked up in
    the library mpi4py loaded. Without the symbol the answer is no: guessing yes would crash."""
    from mpi4py import MPI
    try:
        query = ctypes.CDLL(MPI.__file__).MPIX_Query_cuda_support
    except (OSError, AttributeError):
        return False, "the MPI library has no MPIX_Query_cuda_support()"
    query.restype = ctypes.c_int
    if query() == 1:
        return True, "MPIX_Query_cuda_support() = 1"
    return False, "MPIX_Query_cuda_support() = 0 (built without CUDA, or its GPU support is off)"


class CudaMPIComm(DeviceComm):
    """Collectives on cupy arrays by a CUDA-aware MPI; host arrays and objects as MPIComm does."""

    path = "cuda-aware mpi"

    def _ready(self, array):
        if not array.flags.c_contiguous:
            raise ValueError("MPI buffers must be C-contiguous; pass cupy.ascontiguousarray(array)")
        self.cp.cuda.get_current_stream().synchronize()  # MPI reads the memory now, not in stream order
        return array

    def _op(self, op):
        return self.host._op(_check_op(op))

    def _device_iallreduce(self, array, op):
        buf = self._ready(array)
        rec = self.host.watchdog.begin("iallreduce", buf)
        return _MPIRequest(self.host, self.host.comm.Iallreduce(self.host.MPI.IN_PLACE, buf, op=self._op(op)),
                           rec, array)

    def _device_bcast(self, array, root):
        buf = self._ready(array)
        self.host._run("bcast", buf, lambda: self.host.comm.Ibcast(buf, root=root))
        return array

    def _device_allgather(self, array):
        buf = self._ready(self.cp.ascontiguousarray(array))
        out = self.cp.empty((self.size,) + buf.shape, dtype=buf.dtype)
        self.host._run("allgather", buf, lambda: self.host.comm.Iallgather(buf, out))
        return out

    def _device_reduce_scatter(self, array, op):
        buf = self._ready(self.cp.ascontiguousarray(array))
        out = self.cp.empty((buf.shape[0] // self.size,) + buf.shape[1:], dtype=buf.dtype)
        self.host._run("reduce_scatter", buf,
                       lambda: self.host.comm.Ireduce_scatter_block(buf, out, op=self._op(op)))
        return out

    def _device_isend(self, array, dest, tag, what):
        buf = self._ready(array)
        rec = self.host.watchdog.begin("isend", buf, collective=False, peer=dest, tag=tag, what=what)
        return _MPIRequest(self.host, self.host.comm.Isend(buf, dest=dest, tag=tag), rec, None, keep=buf)

    def _device_irecv(self, array, source, tag, what):
        buf = self._ready(array)
        rec = self.host.watchdog.begin("irecv", buf, collective=False, peer=source, tag=tag, what=what)
        return _MPIRequest(self.host, self.host.comm.Irecv(buf, source=source, tag=tag), rec, array)
