"""A stand-in for cupy, backed by numpy, so distbp's GPU path runs without a GPU. No GPU runs here.

What it is: a module that looks like the part of cupy distbp uses. Its `ndarray` is a numpy array
subclass ("device arrays") that records which fake device it was made on; creation functions
return device arrays and log host-to-device copies; `.get()` logs device-to-host copies; `fuse`
logs the kernel it runs and checks cupy's rule that a fused kernel takes only device arrays and
Python numbers, then runs the formula with this module as `xp`; `cuda` has devices, streams and
events that log what is asked of them; `cuda.nccl` is an NCCL whose calls take raw pointers, as
cupy's do, rebuild the arrays at those addresses and move them with MPI (mpi4py), so a wrong
pointer, count or dtype in distbp gives wrong numbers here too.

What it proves: which code runs for GPU arrays (dispatch, fused-kernel calls, device placement,
communicator selection, bucket paths, pointer arithmetic of the NCCL calls) and that its numbers
equal the CPU's. What it cannot: anything about CUDA itself (kernels compiled by cupy.fuse, real
streams, NCCL's transport, CUDA-aware MPI); those need tests/test_cuda.py on a GPU.

    standin = install(monkeypatch)          # distbp.backend now believes cupy works
    model.to("cuda"); ...; standin.events      # [("h2d", ...), ("fuse", "distbp_relu_backward"), ...]
"""
from __future__ import annotations

import ctypes
import itertools
import struct
import sys
import types

import numpy

_CREATORS = ("zeros", "ones", "empty", "full", "arange", "eye", "linspace")


class StandIn(types.ModuleType):
    """The fake cupy module; one per test (install())."""

    def __init__(self, devices: int = 1):
        super().__init__("cupy")
        self.__version__ = "stand-in"
        self.events: list = []
        self.current_device = 0
        self.devices = devices
        standin = self

        class ndarray(numpy.ndarray):
            """A 'device array': numpy memory, tagged with the device it was made on."""

            def __array_finalize__(self, obj):
                self.device_id = getattr(obj, "device_id", standin.current_device)

            def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
                # cupy refuses to mix its arrays with numpy arrays (TypeError): so does the stand-in,
                # which makes a host array leaking into GPU code fail here as it would on a GPU
                standin._refuse_host(ufunc.__name__, inputs + (out or ()))
                plain = [x.view(numpy.ndarray) if isinstance(x, ndarray) else x for x in inputs]
                if out is not None:
                    kwargs["out"] = tuple(o.view(numpy.ndarray) for o in out)
                result = getattr(ufunc, method)(*plain, **kwargs)
                if out is not None:
                    return out[0] if len(out) == 1 else out
                return standin._dev(result)

            def get(self):
                standin.events.append(("d2h", self.shape))
                return numpy.array(self, subok=False)

            @property
            def device(self):  # cupy's Device (numpy 2's array-API `device` is a string)
                return types.SimpleNamespace(id=self.device_id)

            @property
            def data(self):  # cupy's MemoryPointer: NCCL calls take `array.data.ptr`
                return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

        self.ndarray = ndarray
        self.cuda = _Cuda(self)
        self.random = types.SimpleNamespace(seed=lambda seed: self.events.append(("seed", seed)))

    # ----- arrays -----
    def _dev(self, value):
        if type(value) is numpy.ndarray:
            return value.view(self.ndarray)
        if isinstance(value, numpy.generic):  # cupy has no scalars: a reduction gives a 0-d array
            return numpy.asarray(value).view(self.ndarray)
        if isinstance(value, (tuple, list)) and any(type(v) is numpy.ndarray for v in value):
            return type(value)(self._dev(v) for v in value)
        return value

    def _refuse_host(self, what, args):
        for x in args:
            if type(x) is numpy.ndarray:
                raise TypeError(f"stand-in cupy: {what} got a host numpy array of shape {x.shape} next to "
                                "device arrays (cupy raises TypeError here too); move it with cupy.asarray")
            if isinstance(x, (list, tuple)):
                self._refuse_host(what, x)

    def asarray(self, a, dtype=None, order=None):
        if isinstance(a, self.ndarray):
            return a if dtype is None or numpy.dtype(dtype) == a.dtype else a.astype(dtype)
        self.events.append(("h2d", numpy.shape(a)))
        return numpy.array(a, dtype=dtype, order=order or "K", subok=False).view(self.ndarray)

    def array(self, a, dtype=None, copy=True, order="K"):
        if isinstance(a, self.ndarray):
            return numpy.array(a, dtype=dtype, copy=True, order=order).view(self.ndarray)
        return self.asarray(numpy.array(a, dtype=dtype, copy=True, order=order))

    def asnumpy(self, a):
        return a.get() if isinstance(a, self.ndarray) else numpy.asarray(a)

    def ascontiguousarray(self, a, dtype=None):
        return self._dev(numpy.ascontiguousarray(a, dtype=dtype))

    def __getattr__(self, name):
        value = getattr(numpy, name)  # AttributeError for what numpy lacks, as cupy would
        if isinstance(value, (type, numpy.ufunc)) or not callable(value):
            return value  # dtypes, constants; ufuncs keep the subclass by themselves

        def on_device(*args, **kwargs):
            if any(isinstance(a, self.ndarray) for a in args):
                self._refuse_host(name, args)
            return self._dev(value(*args, **kwargs))
        return on_device

    # ----- kernels -----
    def fuse(self, *args, kernel_name=None):
        def decorate(f):
            name = kernel_name or f.__name__

            def kernel(*xs):
                for x in xs:
                    if isinstance(x, numpy.ndarray) and not isinstance(x, self.ndarray):
                        raise TypeError(f"fused kernel {name} got a host array {x.shape}: cupy.fuse takes "
                                        "device arrays and Python numbers only")
                self.events.append(("fuse", name))
                return f(*xs)
            return kernel
        if args and callable(args[0]):
            return decorate(args[0])
        return decorate

    def calls(self, kind: str) -> list:
        """The details of every event of one kind, in order (one value, or a tuple of several)."""
        return [e[1] if len(e) == 2 else e[1:] for e in self.events if e[0] == kind]


class _Cuda:
    def __init__(self, standin: StandIn):
        self._s = standin
        self.runtime = types.SimpleNamespace(getDeviceCount=lambda: standin.devices)
        self.nccl = _FakeNCCL(standin)
        self._stream = _Stream(standin, 0)

    def is_available(self):
        return self._s.devices > 0

    def Device(self, index):
        standin = self._s

        class Device:
            id = index

            def use(self):
                if not 0 <= index < standin.devices:
                    raise RuntimeError(f"cudaErrorInvalidDevice: device {index} of {standin.devices}")
                standin.current_device = index
                standin.events.append(("use", index))
        return Device()

    def get_current_stream(self):
        return self._stream

    def Stream(self, non_blocking=False):
        return _Stream(self._s, id(object()))

    def Event(self, disable_timing=False):
        return _Event(self._s)


class _Stream:
    def __init__(self, standin, ptr):
        self._s, self.ptr = standin, ptr

    def synchronize(self):
        self._s.events.append(("sync", self.ptr))

    def wait_event(self, event):
        self._s.events.append(("wait_event", self.ptr))


class _Event:
    def __init__(self, standin):
        self._s = standin

    def record(self, stream=None):
        self._s.events.append(("record", getattr(stream, "ptr", None)))

    @property
    def done(self):  # cupy's Event.done (it has no query()); the fake NCCL calls below finish before returning
        return True

    def synchronize(self):
        pass


_NCCL_DTYPES = {0: numpy.int8, 1: numpy.uint8, 2: numpy.int32, 3: numpy.uint32, 4: numpy.int64,
                5: numpy.uint64, 6: numpy.float16, 7: numpy.float32, 8: numpy.float64}


def _at(ptr: int, count: int, datatype: int) -> numpy.ndarray:
    """The `count` elements of NCCL type `datatype` at address `ptr`, as a numpy view."""
    dtype = numpy.dtype(_NCCL_DTYPES[datatype])
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return numpy.frombuffer(raw, dtype=dtype, count=count)


class _FakeNCCL(types.SimpleNamespace):
    """cupy.cuda.nccl's names; communicators run over MPI.COMM_WORLD splits. NOTE: a real NCCL
    communicator is made by its own ranks only; this one splits COMM_WORLD, so every world rank must
    create its communicators in the same order (true of distbp's tests: split and dup are collective)."""

    def __init__(self, standin):
        super().__init__(available=True, NCCL_INT8=0, NCCL_UINT8=1, NCCL_INT32=2, NCCL_UINT32=3, NCCL_INT64=4,
                         NCCL_UINT64=5, NCCL_FLOAT16=6, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0, NCCL_PROD=1,
                         NCCL_MAX=2, NCCL_MIN=3)
        self._ids = itertools.count()
        s = standin

        class NcclCommunicator:
            def __init__(self, ndev, comm_id, rank):
                from mpi4py import MPI
                self.MPI = MPI
                s.events.append(("nccl_init", ndev, rank))
                if not isinstance(comm_id, bytes):
                    raise TypeError(f"NcclCommunicator() argument 'commId' must be bytes, not {type(comm_id).__name__}")
                # the id names its maker (world rank) and its count there: one color per communicator
                maker, count = struct.unpack("<ii", comm_id[:8])
                self.mpi = MPI.COMM_WORLD.Split(maker * 100000 + count, rank)
                assert self.mpi.Get_size() == ndev and self.mpi.Get_rank() == rank
                self._ops = {0: MPI.SUM, 1: MPI.PROD, 2: MPI.MAX, 3: MPI.MIN}
                self._pending = []  # sends not yet received: NCCL's send returns once queued

            def _flush(self):
                self.MPI.Request.Waitall(self._pending)
                self._pending = []

            def destroy(self):
                s.events.append(("nccl_destroy",))
                self._flush()
                self.mpi.Free()

            def allReduce(self, send, recv, count, datatype, op, stream):
                self._flush()
                s.events.append(("nccl", "allReduce", count))
                src = self.MPI.IN_PLACE if send == recv else _at(send, count, datatype)
                self.mpi.Allreduce(src, _at(recv, count, datatype), op=self._ops[op])

            def broadcast(self, send, recv, count, datatype, root, stream):
                self._flush()
                s.events.append(("nccl", "broadcast", count))
                buf = _at(recv, count, datatype)
                if send != recv and self.mpi.Get_rank() == root:
                    buf[...] = _at(send, count, datatype)
                self.mpi.Bcast(buf, root=root)

            def allGather(self, send, recv, count, datatype, stream):
                self._flush()
                s.events.append(("nccl", "allGather", count))
                self.mpi.Allgather(_at(send, count, datatype).copy(),
                                   _at(recv, count * self.mpi.Get_size(), datatype))

            def reduceScatter(self, send, recv, recvcount, datatype, op, stream):
                self._flush()
                s.events.append(("nccl", "reduceScatter", recvcount))
                self.mpi.Reduce_scatter_block(_at(send, recvcount * self.mpi.Get_size(), datatype).copy(),
                                              _at(recv, recvcount, datatype), op=self._ops[op])

            def send(self, send, count, datatype, peer, stream):
                s.events.append(("nccl", "send", count))
                self._pending.append(self.mpi.Isend(_at(send, count, datatype).copy(), dest=peer))

            def recv(self, recv, count, datatype, peer, stream):
                s.events.append(("nccl", "recv", count))
                self.mpi.Recv(_at(recv, count, datatype), source=peer)
                self._flush()

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self):
        from mpi4py import MPI
        return struct.pack("<ii", MPI.COMM_WORLD.Get_rank(), next(self._ids)) + bytes(120)  # bytes, as cupy 14


def install(monkeypatch, devices: int = 1) -> StandIn:
    """Make distbp.backend use a fresh stand-in as its cupy (and cupyx.scatter_add) for one test."""
    from distbp import backend, kernels
    standin = StandIn(devices)
    monkeypatch.setattr(backend, "_cupy", standin)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cupy_problem", "")
    monkeypatch.setattr(backend, "_device_index", None)
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(
        scatter_add=lambda target, index, values: numpy.add.at(target, index, values)))
    return standin
