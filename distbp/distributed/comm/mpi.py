"""MPIComm: collectives over an mpi4py communicator, the only module that starts MPI calls
(watchdog.py and shm.py aside, which it drives).

Every MPI call goes through `MPIComm._run`, one seam that numbers it, fingerprints it (op, dtype,
shape, call site) and waits on it with a deadline (watchdog.py). Alone it stages cupy arrays through
host memory; nccl.py and cuda_mpi.py wrap it to move them on the GPU (device.py).
"""
from __future__ import annotations

import atexit
import pickle

import numpy

from ... import _env, backend
from .base import Communicator, Freed, Request, _check_op, slice_bounds
from .hierarchical import HierarchicalAllreduce, HostBuffers, host_layout
from .leftovers import unlink_after_start
from .shm import ALLGATHER, REDUCE_SCATTER, SharedAllreduce, SharedSegments
from .watchdog import Watchdog


class _MPIRequest(Request):
    """A started MPI call. `array` is what wait() returns (None for a send); `staged` the host copy of a
    GPU array to copy back into it; `keep` a buffer MPI reads until the call completes (a send's)."""

    def __init__(self, comm: MPIComm, request, record, array, staged=None, keep=None):
        self.comm, self.request, self.record, self.array, self.staged = comm, request, record, array, staged
        self.keep = keep
        self.done = False

    def test(self) -> bool:
        if not self.done:
            self.done = self.request.Test()
        return self.done

    def wait(self):
        if not self.done:
            self.comm.watchdog.wait(self.request, self.record)
            self.done = True
        self.keep = None
        if self.staged is not None:  # a GPU array reduced through host memory: copy the result back
            self.array[...] = backend.get_array_module(self.array).asarray(self.staged)
            self.staged = None
        return self.array


class _ProbedRecv(Request):
    """A receive of whatever message comes next from `source` on `tag`: it probes until one has
    arrived, then takes it whole into a byte array of its length (MPI_Improbe, then MPI_Imrecv on
    the matched message, which no other receive can take). `Test()` is what the watchdog's wait
    loop calls."""

    def __init__(self, comm: MPIComm, source, tag, record):
        self.comm, self.source, self.tag, self.record = comm, source, tag, record
        self.status = comm.MPI.Status()
        self.array = self.request = None
        self.done = False

    def Test(self) -> bool:  # the name the watchdog calls, as on an mpi4py request
        if self.request is None:
            message = self.comm.comm.Improbe(self.source, self.tag, self.status)
            if message is None:
                return False
            self.array = numpy.empty(self.status.Get_count(self.comm.MPI.BYTE), dtype=numpy.uint8)
            self.request = message.Irecv(self.array)
        return self.request.Test()

    def test(self) -> bool:
        if not self.done:
            self.done = self.Test()
        return self.done

    def wait(self):
        if not self.done:
            self.comm.watchdog.wait(self, self.record)
            self.done = True
        return self.array


def _host(array):
    """A contiguous host buffer for MPI, and whether it is a staging copy of a GPU array."""
    if isinstance(array, numpy.ndarray):
        if not array.flags.c_contiguous:
            raise ValueError("MPI buffers must be C-contiguous; pass numpy.ascontiguousarray(array)")
        return array, False
    return backend.to_numpy(array), True  # NOTE: a NCCL communicator would avoid this round trip


class MPIComm(Communicator):
    """Collectives over an mpi4py communicator (COMM_WORLD by default).

    Blocking calls are the nonblocking MPI call plus a watched wait, so every call has a deadline
    (`timeout` seconds, default DISTBP_COLLECTIVE_TIMEOUT or 300) and, in debug mode, a fingerprint
    check across ranks.

    `free()` releases what it created (see Communicator.free): the communicators of its node groups,
    its shared windows, its watchdog's side communicator, and `mpi_comm` itself only when `split`
    made it (a communicator passed in belongs to the caller)."""

    def __init__(self, mpi_comm=None, timeout: float | None = None, debug: bool | None = None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = mpi_comm if mpi_comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
        self.watchdog = Watchdog(self.comm, timeout, debug)
        if mpi_comm is None:   # the world: no MPICH file in /dev/shm outlives the job (leftovers.py)
            unlink_after_start(self.comm)
        self._node = None   # the ranks on this machine (_node_group)
        self._shared = {}   # id(array) -> SharedSegments, for arrays from alloc_buffer
        self._layout = None  # (this host's index, the ranks of every host)
        self._cross = None   # local rank r of every host, when all hosts have as many ranks
        self._hierarchical = {}  # id(array) -> HostBuffers, for arrays from alloc_buffer across hosts
        self._in_flight = []  # shared-memory and hierarchical requests not finished yet
        self._windows = []    # SharedSegments and HostBuffers, freed at exit
        self._owns_comm = False  # True when split() made self.comm: free() frees it then
        self._freed = False

    def _op(self, op):
        return self._ops[_check_op(op)]

    def _run(self, name, array, start, collective=True):
        """The seam: number + fingerprint the call, start it, wait on it under the watchdog."""
        rec = self.watchdog.begin(name, array, collective)
        self.watchdog.wait(start(), rec)

    def alloc_buffer(self, numel, dtype, xp=numpy):
        if self._freed:
            raise self.comm.error()
        if (xp is not numpy or self.size == 1 or numel < self.size
                or not _env.get("DISTBP_SHM_ALLREDUCE", lenient=True)):
            return xp.empty(numel, dtype=dtype)
        if self._node_group().Get_size() != self.size:  # ranks on several machines
            return self._alloc_across_hosts(numel, dtype)
        segments = SharedSegments(self.MPI, self._node, numel, dtype)
        self._shared[id(segments.mine)] = segments
        self._keep_until_exit(segments)
        return segments.mine

    def _keep_until_exit(self, buffers) -> None:
        """Free shared windows at exit, before mpi4py finalizes MPI (atexit runs last-in first-out):
        MPICH's libfabric netmod fails MPI_Finalize ("fabricclose failed ... Device or resource
        busy") while a window is still allocated. Every rank allocated the same windows in the same
        order, so every rank frees them in that order."""
        if not self._windows:
            atexit.register(self._free_windows)
        self._windows.append(buffers)

    def _free_windows(self) -> None:
        if not self.MPI.Is_finalized():
            for buffers in self._windows:
                buffers.free()
        self._windows.clear()
        self._shared.clear()
        self._hierarchical.clear()

    def free(self) -> None:
        """Collective over this communicator; see Communicator.free. Starts with a barrier under the
        watchdog, so a rank that never arrives is reported instead of hanging the others in MPI's
        frees (a window's free waits for every rank of its node)."""
        if self._freed or self.MPI.Is_finalized():
            return
        if self._in_flight:
            raise RuntimeError(f"free() with {len(self._in_flight)} shared-memory allreduce(s) not finished; "
                               "wait() for their requests first")
        self.barrier()
        if self._windows:
            atexit.unregister(self._free_windows)
            self._free_windows()
        for handle in (self._cross, self._node):  # made by Split; every rank made the same ones
            if handle is not None:
                handle.Free()
        self._cross = self._node = self._layout = None
        if self.watchdog.free() and self._owns_comm:  # the world's watchdog keeps its communicator
            self.comm.Free()
        self._freed = True
        what = f"communicator (rank {self.rank} of {self.size})"
        self.comm = self.watchdog = Freed(what)

    def _node_group(self):
        """The ranks that share this machine (collective on first call)."""
        if self._node is None:
            pretend = _env.get("DISTBP_RANKS_PER_HOST", lenient=True)
            if pretend > 0:  # tests: hosts of N consecutive world ranks
                host = self.MPI.COMM_WORLD.Get_rank() // pretend
                self._node = self.comm.Split(host, self.rank)
            else:
                self._node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        return self._node

    def _host_layout(self) -> tuple:
        """(this host's index, the ranks of every host); also makes the cross communicator when
        there are several hosts with as many ranks each. Collective on first call."""
        if self._layout is None:
            self._layout = host_layout(self.MPI, self.comm, self._node_group())
            host, members = self._layout
            if (len(members) > 1 and len({len(m) for m in members}) == 1
                    and _env.get("DISTBP_HIERARCHICAL_ALLREDUCE", lenient=True)):
                self._cross = self.comm.Split(self._node.Get_rank(), host)
        return self._layout

    def hosts(self) -> list:
        return [[0]] if self.size == 1 else [list(m) for m in self._host_layout()[1]]

    def _alloc_across_hosts(self, numel, dtype):
        """Shared memory within each host and MPI between (hierarchical.py) when every host runs as
        many ranks; else a plain array, which MPI's allreduce moves."""
        self._host_layout()
        if self._cross is None:
            return numpy.empty(numel, dtype=dtype)
        buffers = HostBuffers(self.MPI, self._node, self._cross, numel, dtype)
        self._hierarchical[id(buffers.mine)] = buffers
        self._keep_until_exit(buffers)
        return buffers.mine

    def buffer_path(self, array) -> str:
        if self.size == 1:
            return "none"
        if self.uses_shared_memory(array):
            return "shared memory"
        seg = self._hierarchical.get(id(array))
        return "hierarchical" if seg is not None and seg.mine is array else "mpi"

    def uses_shared_memory(self, array) -> bool:
        """Whether a sum-allreduce of `array` goes through node shared memory (see alloc_buffer)."""
        seg = self._shared.get(id(array))
        return seg is not None and seg.mine is array

    def iallreduce(self, array, op="sum"):
        rec = self.watchdog.begin("iallreduce", array)
        if _check_op(op) == "sum" and self.uses_shared_memory(array):
            return SharedAllreduce(self._shared[id(array)], self.watchdog, rec, self._in_flight)
        if op == "sum" and self.buffer_path(array) == "hierarchical":
            return HierarchicalAllreduce(self._hierarchical[id(array)], self.watchdog, rec, self._in_flight)
        buf, staged = _host(array)
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._op(op))
        return _MPIRequest(self, req, rec, array, buf if staged else None)

    def allreduce(self, array, op="sum"):
        buf, staged = _host(array)
        self._run("allreduce", array, lambda: self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._op(op)))
        if staged:
            array[...] = backend.get_array_module(array).asarray(buf)
        return array

    def bcast(self, array, root=0):
        buf, staged = _host(array)
        self._run("bcast", array, lambda: self.comm.Ibcast(buf, root=root))
        if staged:
            array[...] = backend.get_array_module(array).asarray(buf)
        return array

    def allgather(self, array):
        buf, _ = _host(numpy.ascontiguousarray(array) if isinstance(array, numpy.ndarray) else array)
        out = numpy.empty((self.size,) + buf.shape, dtype=buf.dtype)
        self._run("allgather", buf, lambda: self.comm.Iallgather(buf, out))
        return backend.get_array_module(array).asarray(out)

    def reduce_scatter(self, array, op="sum"):
        buf, _ = _host(array)
        if buf.ndim == 0 or buf.shape[0] % self.size:
            raise ValueError(f"reduce_scatter needs a leading dimension divisible by the world size "
                             f"{self.size}, got shape {tuple(buf.shape)}")
        out = numpy.empty((buf.shape[0] // self.size,) + buf.shape[1:], dtype=buf.dtype)
        self._run("reduce_scatter", buf, lambda: self.comm.Ireduce_scatter_block(buf, out, op=self._op(op)))
        return backend.get_array_module(array).asarray(out)

    def reduce_scatter_slices(self, array, op="sum"):
        """Through node shared memory for an alloc_buffer array (a sum): the same slices, summed in
        the same rank order, as `iallreduce` there, so the same bits. Otherwise MPI's
        Reduce_scatter, whose summation order MPI chooses: equal to its allreduce's bits at two ranks
        (a sum of two is commutative), not promised beyond."""
        bounds = slice_bounds(array.size, self.size)
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        if self.size == 1:
            return array[lo:hi]
        if _check_op(op) == "sum" and self.uses_shared_memory(array):
            rec = self.watchdog.begin("reduce_scatter_slices", array)
            SharedAllreduce(self._shared[id(array)], self.watchdog, rec, self._in_flight, REDUCE_SCATTER).wait()
            return array[lo:hi]
        if _check_op(op) == "sum" and self.buffer_path(array) == "hierarchical":  # the allreduce's bits
            self.iallreduce(array).wait()
            return array[lo:hi]
        buf, staged = _host(array)
        counts = numpy.diff(bounds).tolist()
        out = numpy.empty(hi - lo, dtype=buf.dtype)
        self._run("reduce_scatter_slices", buf,
                  lambda: self.comm.Ireduce_scatter(buf.reshape(-1), out, counts, op=self._op(op)))
        array[lo:hi] = backend.get_array_module(array).asarray(out) if staged else out
        return array[lo:hi]

    def allgather_slices(self, array):
        """Through node shared memory for an alloc_buffer array, else MPI's Allgatherv."""
        if self.size == 1:
            return array
        if self.uses_shared_memory(array):
            rec = self.watchdog.begin("allgather_slices", array)
            SharedAllreduce(self._shared[id(array)], self.watchdog, rec, self._in_flight, ALLGATHER).wait()
            return array
        bounds = slice_bounds(array.size, self.size)
        buf, staged = _host(array)
        flat = buf.reshape(-1)
        mine = flat[bounds[self.rank]:bounds[self.rank + 1]].copy()
        counts = numpy.diff(bounds).tolist()
        self._run("allgather_slices", buf, lambda: self.comm.Iallgatherv(mine, (flat, counts)))
        if staged:
            array[...] = backend.get_array_module(array).asarray(buf)
        return array

    # Point-to-point calls have no sequence number (ranks make different ones) but are waited on
    # under the same deadline; the watchdog names the peer, the tag and the caller's `what`.
    def isend(self, array, dest, tag=0, what=None):
        buf, _ = _host(array)
        rec = self.watchdog.begin("isend", buf, collective=False, peer=dest, tag=tag, what=what)
        return _MPIRequest(self, self.comm.Isend(buf, dest=dest, tag=tag), rec, None, keep=buf)

    def irecv(self, array, source, tag=0, what=None):
        buf, staged = _host(array)
        rec = self.watchdog.begin("irecv", buf, collective=False, peer=source, tag=tag, what=what)
        return _MPIRequest(self, self.comm.Irecv(buf, source=source, tag=tag), rec, array, buf if staged else None)

    def irecv_message(self, source, tag=0, what=None):
        rec = self.watchdog.begin("irecv", None, collective=False, peer=source, tag=tag, what=what)
        return _ProbedRecv(self, source, tag, rec)

    def send(self, array, dest, tag=0, what=None):
        buf, _ = _host(array)
        rec = self.watchdog.begin("send", buf, collective=False, peer=dest, tag=tag, what=what)
        self.watchdog.wait(self.comm.Isend(buf, dest=dest, tag=tag), rec)

    def recv(self, array, source, tag=0, what=None):
        buf, staged = _host(array)
        rec = self.watchdog.begin("recv", buf, collective=False, peer=source, tag=tag, what=what)
        self.watchdog.wait(self.comm.Irecv(buf, source=source, tag=tag), rec)
        if staged:
            array[...] = backend.get_array_module(array).asarray(buf)
        return array

    def split(self, color, key=None):
        self.watchdog.begin("split")
        sub = self.comm.Split(color, self.rank if key is None else key)
        made = MPIComm(sub, self.watchdog.timeout, self.watchdog.debug)
        made._owns_comm = True
        return made

    # Pickled objects travel as byte arrays through the same watched calls as arrays.
    def bcast_obj(self, obj, root=0):
        data = numpy.frombuffer(pickle.dumps(obj), dtype=numpy.uint8) if self.rank == root else None
        n = numpy.array([0 if data is None else data.size], dtype=numpy.int64)
        self._run("bcast_obj", None, lambda: self.comm.Ibcast(n, root=root))
        buf = data.copy() if data is not None else numpy.empty(int(n[0]), dtype=numpy.uint8)
        self._run("bcast_obj", None, lambda: self.comm.Ibcast(buf, root=root))
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def allgather_obj(self, obj):
        data = numpy.frombuffer(pickle.dumps(obj), dtype=numpy.uint8)
        sizes = numpy.empty(self.size, dtype=numpy.int64)
        mine = numpy.array([data.size], dtype=numpy.int64)
        self._run("allgather_obj", None, lambda: self.comm.Iallgather(mine, sizes))
        out = numpy.empty(int(sizes.sum()), dtype=numpy.uint8)
        self._run("allgather_obj", None, lambda: self.comm.Iallgatherv(data, (out, sizes)))
        ends = numpy.cumsum(sizes)
        return [pickle.loads(out[e - s:e].tobytes()) for s, e in zip(sizes, ends)]

    def barrier(self):
        self._run("barrier", None, self.comm.Ibarrier)

    def abort(self, code=1):
        (self.MPI.COMM_WORLD if self._freed else self.comm).Abort(code)
