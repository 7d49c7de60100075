"""Communication inside the autograd graph: the seam for model (tensor/pipeline) parallelism.

Each op is a Function whose backward is the adjoint communication (ChainerMN's functions,
Horovod's HorovodAllreduce): y = sum_r x_r gives dL/dx_r = sum_r' dL_r'/dy (an allreduce of the
gradients); allgather's adjoint is a reduce-scatter; send's is a recv from the same peer and recv's
a send back. Every rank must run the same ops in the same order, forward AND backward.
"""
from __future__ import annotations

import numpy

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .comm import Communicator, get_comm


class AllReduce(Function):
    def forward(self, x, comm=None, op="sum"):
        if op != "sum":
            raise ValueError(f"differentiable allreduce supports op='sum' only, got {op!r}")
        self.comm = comm
        return comm.allreduce(x.copy(), "sum")

    def backward(self, gy):
        return (self.comm.allreduce(gy.copy(), "sum"),)


class AllGather(Function):
    def forward(self, x, comm=None):
        self.comm = comm
        return comm.allgather(x)

    def backward(self, gy):
        # d/dx_r of sum_r' <gy_r', y> = sum_r' gy_r'[r]: the reduce-scatter of the stacked gradients
        block = self.comm.reduce_scatter(get_array_module(gy).ascontiguousarray(gy))
        return (block[0],)


class Send(Function):
    def forward(self, x, comm=None, dest=0, tag=0):
        self.comm, self.dest, self.tag, self.shape, self.dtype = comm, dest, tag, x.shape, x.dtype
        comm.send(get_array_module(x).ascontiguousarray(x), dest, tag)
        return get_array_module(x).zeros((0,), dtype=x.dtype)  # a handle to call backward() on

    def backward(self, gy):
        gx = get_array_module(gy).empty(self.shape, dtype=self.dtype)
        return (self.comm.recv(gx, self.dest, self.tag),)


class Recv(Function):
    def forward(self, delegate, comm=None, source=0, shape=(), dtype=None, tag=0):
        self.comm, self.source, self.tag = comm, source, tag
        self.delegate_shape = delegate.shape
        return comm.recv(numpy.empty(shape, dtype=dtype), source, tag)

    def backward(self, gy):
        self.comm.send(get_array_module(gy).ascontiguousarray(gy), self.source, self.tag)
        return (get_array_module(gy).zeros(self.delegate_shape, dtype=gy.dtype),)


def allreduce(x: Tensor, comm: Communicator | None = None) -> Tensor:
    """Sum of x over ranks; backward sums the ranks' gradients (every rank must call backward)."""
    return AllReduce.apply(x, comm=comm or get_comm())


def allgather(x: Tensor, comm: Communicator | None = None) -> Tensor:
    """Stack of every rank's x, shape (size, *x.shape); backward is a reduce-scatter."""
    return AllGather.apply(x, comm=comm or get_comm())


def send(x: Tensor, dest: int, comm: Communicator | None = None, tag: int = 0) -> Tensor:
    """Send x to `dest`. Returns an empty tensor: calling backward() on it (or on a sum that includes
    it) receives dL/dx from `dest` and continues backward on this rank."""
    return Send.apply(x, comm=comm or get_comm(), dest=dest, tag=tag)


def recv(source: int, shape, dtype=numpy.float64, comm: Communicator | None = None, tag: int = 0,
         delegate: Tensor | None = None) -> Tensor:
    """Receive a tensor of `shape`/`dtype` from `source`; its gradient is sent back there in backward.

    `delegate` links this recv into a graph (e.g. the handle of an earlier send on this rank) so one
    backward() covers both; by default a fresh empty leaf that requires grad."""
    if delegate is None:
        delegate = Tensor(numpy.zeros((0,), dtype=dtype), requires_grad=True)
    return Recv.apply(delegate, comm=comm or get_comm(), source=source, shape=tuple(shape), dtype=dtype, tag=tag)
