"""GPU communicators' common part: GPU arrays take the device path, everything else the MPI one.

A `DeviceComm` wraps an `MPIComm` (`host`). Calls on GPU (cupy) arrays go to the subclass's device
path (nccl.py: NCCL; cuda_mpi.py: CUDA-aware MPI); calls on host arrays, pickled objects, barriers
and aborts go to `host` unchanged, so a trainer hands one communicator to everything: its gradient
buckets on the GPU, its loss sums and checkpoints on the host. Every device call is numbered and
fingerprinted by the host communicator's watchdog and waited on under its deadline, as MPI calls
are (a GPU collective that never completes reports which ranks are missing, then aborts the job).

`transfer_path(comm, array)` names the path any communicator gives an array (the doctor prints it
for each gradient bucket).
"""
from __future__ import annotations

import numpy

from ... import backend
from .base import Communicator, Freed, Request


def transfer_path(comm, array) -> str:
    """How `comm` moves `array` between ranks, in words: 'nccl', 'cuda-aware mpi', 'host staging'
    (a GPU array copied to host memory for MPI and back), 'node shared memory', 'mpi' or 'none'."""
    if comm.size == 1:
        return "none"
    if isinstance(comm, DeviceComm):
        return comm.path_of(array)
    if backend.device_of(array) == "cuda":
        return "host staging"
    shared = getattr(comm, "uses_shared_memory", None)
    return "node shared memory" if shared is not None and shared(array) else "mpi"


class _EventTest:
    """A CUDA event seen as an MPI request (`Test()`), so the watchdog can wait on it with a deadline."""

    def __init__(self, event):
        self.event = event

    def Test(self) -> bool:  # mpi4py's name: the watchdog calls it
        return bool(self.event.done)


class DeviceRequest(Request):
    """A device operation queued on the communicator's stream: test() asks its event, wait() waits
    for it under the watchdog's deadline, then makes the compute stream wait for it too."""

    def __init__(self, comm: DeviceComm, event, record, result=None, keep=None):
        self.comm, self.event, self.record, self.result = comm, event, record, result
        # NOTE: the arrays the queued call reads or writes stay referenced until wait(): freed early,
        # cupy's memory pool could hand their memory to a kernel while the transfer still uses it.
        self.keep = keep
        self.done = False

    def test(self) -> bool:
        if not self.done:
            self.done = bool(self.event.done)  # cupy's Event.done: cudaEventQuery
        return self.done

    def wait(self):
        if not self.done:
            self.comm.host.watchdog.wait(_EventTest(self.event), self.record)
            self.done = True
        self.comm.cp.cuda.get_current_stream().wait_event(self.event)
        self.keep = None
        return self.result


class DeviceComm(Communicator):
    """Routes each call by where its array lives. Subclasses implement the `_device_*` methods for
    cupy arrays; `path` names their path ('nccl', 'cuda-aware mpi')."""

    path = "device"

    def __init__(self, host, cp=None):
        self.host = host
        self.rank, self.size = host.rank, host.size
        self.cp = cp if cp is not None else backend.cupy_module()
        self._owns_host = False  # True when split() made `host`: free() frees it then

    def _on_device(self, array) -> bool:
        return self.cp is not None and isinstance(array, self.cp.ndarray)

    def path_of(self, array) -> str:
        return self.path if self._on_device(array) else transfer_path(self.host, array)

    # ----- collectives: device arrays here, host arrays through the MPI communicator -----
    def allreduce(self, array, op="sum"):
        return self.iallreduce(array, op).wait() if self._on_device(array) else self.host.allreduce(array, op)

    def iallreduce(self, array, op="sum") -> Request:
        return self._device_iallreduce(array, op) if self._on_device(array) else self.host.iallreduce(array, op)

    def bcast(self, array, root=0):
        return self._device_bcast(array, root) if self._on_device(array) else self.host.bcast(array, root)

    def allgather(self, array):
        return self._device_allgather(array) if self._on_device(array) else self.host.allgather(array)

    def reduce_scatter(self, array, op="sum"):
        if not self._on_device(array):
            return self.host.reduce_scatter(array, op)
        if array.ndim == 0 or array.shape[0] % self.size:
            raise ValueError(f"reduce_scatter needs a leading dimension divisible by the world size "
                             f"{self.size}, got shape {tuple(array.shape)}")
        return self._device_reduce_scatter(array, op)

    def reduce_scatter_slices(self, array, op="sum"):
        if not self._on_device(array):
            return self.host.reduce_scatter_slices(array, op)
        return super().reduce_scatter_slices(array, op)  # an allreduce: slices may be uneven

    def allgather_slices(self, array):
        if not self._on_device(array):
            return self.host.allgather_slices(array)
        return super().allgather_slices(array)

    def alloc_buffer(self, numel, dtype, xp=numpy):
        if xp is numpy:
            return self.host.alloc_buffer(numel, dtype, xp)
        return xp.empty(numel, dtype=dtype)  # a gradient bucket on the GPU, reduced where it lives

    def uses_shared_memory(self, array) -> bool:
        return not self._on_device(array) and self.host.uses_shared_memory(array)

    # ----- point to point -----
    def isend(self, array, dest, tag=0, what=None):
        if not self._on_device(array):
            return self.host.isend(array, dest, tag, what=what)
        return self._device_isend(array, dest, tag, what)

    def irecv(self, array, source, tag=0, what=None):
        if not self._on_device(array):
            return self.host.irecv(array, source, tag, what=what)
        return self._device_irecv(array, source, tag, what)

    def irecv_message(self, source, tag=0, what=None):
        return self.host.irecv_message(source, tag, what=what)  # bytes arrive in host memory

    def send(self, array, dest, tag=0, what=None):
        self.isend(array, dest, tag, what=what).wait()

    def recv(self, array, source, tag=0, what=None):
        return self.irecv(array, source, tag, what=what).wait()

    # ----- the rest is the MPI communicator's -----
    def split(self, color, key=None):
        made = type(self)(self.host.split(color, key), self.cp)
        made._owns_host = True
        return made

    def free(self) -> None:
        """Collective: release the device path's resources, and `host` when split() made it (an MPI
        communicator passed in belongs to the caller and stays usable)."""
        if isinstance(self.host, Freed):
            return
        self._free_device()
        if self._owns_host:
            self.host.free()
        self._released_host = self.host  # still aborts the job (MPIComm.abort works once freed)
        self.host = Freed(f"GPU communicator (rank {self.rank} of {self.size})")

    def bcast_obj(self, obj, root=0):
        return self.host.bcast_obj(obj, root)

    def allgather_obj(self, obj):
        return self.host.allgather_obj(obj)

    def barrier(self):
        self.host.barrier()

    def abort(self, code=1):
        getattr(self, "_released_host", self.host).abort(code)

    @property
    def watchdog(self):
        return self.host.watchdog

    # ----- what a subclass provides -----
    def _free_device(self) -> None:
        """Release what the device path holds (an NCCL communicator); nothing by default."""

    def _device_iallreduce(self, array, op) -> Request:
        raise NotImplementedError

    def _device_bcast(self, array, root):
        raise NotImplementedError

    def _device_allgather(self, array):
        raise NotImplementedError

    def _device_reduce_scatter(self, array, op):
        raise NotImplementedError

    def _device_isend(self, array, dest, tag, what) -> Request:
        raise NotImplementedError

    def _device_irecv(self, array, source, tag, what) -> Request:
        raise NotImplementedError
