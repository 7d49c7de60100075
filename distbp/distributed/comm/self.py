"""SelfComm: a world of one, so `python -m distbp.train` needs no launcher to debug."""
from __future__ import annotations

from ... import backend
from .base import Communicator, _check_op, _Done


class SelfComm(Communicator):
    """A world of one: every collective is the identity."""

    rank, size = 0, 1

    def allreduce(self, array, op="sum"):
        _check_op(op)
        return array

    def iallreduce(self, array, op="sum"):
        _check_op(op)
        return _Done(array)

    def bcast(self, array, root=0):
        return array

    def allgather(self, array):
        return backend.get_array_module(array).asarray(array)[None].copy()

    def reduce_scatter(self, array, op="sum"):
        _check_op(op)
        return array.copy()

    def send(self, array, dest, tag=0):
        raise RuntimeError(f"send to rank {dest} in a world of one; launch with mpiexec -n 2 or more")

    def recv(self, array, source, tag=0):
        raise RuntimeError(f"recv from rank {source} in a world of one; launch with mpiexec -n 2 or more")

    def split(self, color, key=None):
        return SelfComm()

    def bcast_obj(self, obj, root=0):
        return obj

    def allgather_obj(self, obj):
        return [obj]

    def barrier(self):
        pass
