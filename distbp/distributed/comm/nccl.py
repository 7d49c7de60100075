"""NCCLComm: collectives on GPU arrays through NCCL (`cupy.cuda.nccl`), host arrays through MPI.

Start-up: rank 0 makes NCCL's unique id and broadcasts it over the MPI communicator; every rank
then joins the NCCL communicator with it (ncclCommInitRank). The MPI communicator stays for host
arrays, pickled objects and barriers (device.py), and its watchdog numbers and times every NCCL
call too.

Streams: NCCL runs on the communicator's own stream. Before a call, that stream waits for an event
recorded on the current (compute) stream, so the collective sees the gradient the engine wrote;
after it, an event marks the end, and `wait()` makes the compute stream wait for it, so the next
kernels see the result. Between the two the compute stream is free: backward keeps computing while
a bucket is reduced.

NCCL matches point-to-point messages between two ranks in the order they are posted: `tag` is only
recorded for the watchdog's report, not used for matching.
"""
from __future__ import annotations

import numpy

from ... import backend
from .base import _check_op
from .device import DeviceComm, DeviceRequest

# NCCL's names for the dtypes and reductions distbp reduces (cupy.cuda.nccl constants)
_DTYPES = {"int8": "NCCL_INT8", "uint8": "NCCL_UINT8", "int32": "NCCL_INT32", "uint32": "NCCL_UINT32",
           "int64": "NCCL_INT64", "uint64": "NCCL_UINT64", "float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32",
           "float64": "NCCL_FLOAT64"}
_OPS = {"sum": "NCCL_SUM", "max": "NCCL_MAX", "min": "NCCL_MIN"}


def nccl_module(cp):
    """cupy's NCCL binding (`cupy.cuda.nccl`), or None when this cupy has none."""
    nccl = getattr(cp.cuda, "nccl", None)
    if nccl is None:
        try:
            from cupy.cuda import nccl  # a submodule `import cupy` does not load
        except ImportError:
            return None
    return nccl


def nccl_problem(cp) -> str:
    """Why NCCL cannot be used by this process, or "" when it can (cupy imported, libnccl loaded)."""
    if cp is None:
        return backend.cuda_problem() or "no cupy"
    nccl = nccl_module(cp)
    if nccl is None:
        return "this cupy has no NCCL binding"
    if not getattr(nccl, "available", False):
        return "libnccl is not loadable (pip install nvidia-nccl-cu12, or cupyx.tools.install_library)"
    return ""


class NCCLComm(DeviceComm):
    """Collectives on cupy arrays over NCCL; host arrays and objects over `host` (an MPIComm).
    Collective: every rank of `host` constructs it, in the same order."""

    path = "nccl"

    def __init__(self, host, cp=None):
        super().__init__(host, cp)
        nccl = nccl_module(self.cp)
        self._nccl = nccl
        uid = nccl.get_unique_id() if host.rank == 0 else None
        uid = host.bcast_obj(uid)
        self.nccl = nccl.NcclCommunicator(host.size, uid, host.rank)
        self.stream = self.cp.cuda.Stream(non_blocking=True)

    def _free_device(self) -> None:
        self.stream.synchronize()  # nothing queued may still use the NCCL communicator
        self.nccl.destroy()

    def _type(self, array) -> int:
        name = _DTYPES.get(numpy.dtype(array.dtype).name)
        if name is None:
            raise TypeError(f"NCCL cannot move {array.dtype} arrays; use one of {sorted(_DTYPES)}")
        return getattr(self._nccl, name)

    def _reduction(self, op: str) -> int:
        return getattr(self._nccl, _OPS[_check_op(op)])

    def _contiguous(self, array):
        if not array.flags.c_contiguous:
            raise ValueError("NCCL buffers must be C-contiguous; pass cupy.ascontiguousarray(array)")
        return array

    def _launch(self, name, array, call, result=None, peer=None, tag=None, what=None) -> DeviceRequest:
        """Number the call, order it after the compute stream's work, run `call(stream_ptr)` on the
        communicator's stream, and return a request for its end."""
        rec = self.host.watchdog.begin(name, array, collective=peer is None, peer=peer, tag=tag, what=what)
        cuda = self.cp.cuda
        ready = cuda.Event(disable_timing=True)
        ready.record(cuda.get_current_stream())
        self.stream.wait_event(ready)
        call(self.stream.ptr)
        done = cuda.Event(disable_timing=True)
        done.record(self.stream)
        return DeviceRequest(self, done, rec, result, keep=(array, result))

    def _device_iallreduce(self, array, op):
        buf = self._contiguous(array)
        ptr = buf.data.ptr
        return self._launch("iallreduce", buf, lambda s: self.nccl.allReduce(
            ptr, ptr, buf.size, self._type(buf), self._reduction(op), s), result=array)

    def _device_bcast(self, array, root):
        buf = self._contiguous(array)
        return self._launch("bcast", buf, lambda s: self.nccl.broadcast(
            buf.data.ptr, buf.data.ptr, buf.size, self._type(buf), root, s), result=array).wait()

    def _device_allgather(self, array):
        buf = self.cp.ascontiguousarray(array)
        out = self.cp.empty((self.size,) + buf.shape, dtype=buf.dtype)
        return self._launch("allgather", buf, lambda s: self.nccl.allGather(
            buf.data.ptr, out.data.ptr, buf.size, self._type(buf), s), result=out).wait()

    def _device_reduce_scatter(self, array, op):
        buf = self.cp.ascontiguousarray(array)
        out = self.cp.empty((buf.shape[0] // self.size,) + buf.shape[1:], dtype=buf.dtype)
        return self._launch("reduce_scatter", buf, lambda s: self.nccl.reduceScatter(
            buf.data.ptr, out.data.ptr, out.size, self._type(buf), self._reduction(op), s), result=out).wait()

    def _device_isend(self, array, dest, tag, what):
        buf = self._contiguous(array)
        return self._launch("isend", buf, lambda s: self.nccl.send(
            buf.data.ptr, buf.size, self._type(buf), dest, s), peer=dest, tag=tag, what=what)

    def _device_irecv(self, array, source, tag, what):
        buf = self._contiguous(array)
        return self._launch("irecv", buf, lambda s: self.nccl.recv(
            buf.data.ptr, buf.size, self._type(buf), source, s), result=array, peer=source, tag=tag, what=what)
