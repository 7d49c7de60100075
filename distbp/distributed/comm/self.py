"""SelfComm: a world of one, so `python -m distbp.train` needs no launcher to debug."""
from __future__ import annotations

from collections import deque

import numpy

from ... import backend
from .base import Communicator, _check_op, _Done


class SelfComm(Communicator):
    """A world of one: every collective is the identity. Point-to-point goes to rank 0 itself through a
    mailbox (FIFO per tag, as MPI matches messages of one sender and tag in order), so a 1-stage
    pipeline or a single-process test can exchange with itself. A send is copied at once, so it is
    complete when `isend` returns; a receive must come after its send: with one process nothing
    could send later, so a receive with no message waiting raises instead of hanging."""

    rank, size = 0, 1

    def __init__(self):
        self._mailbox: dict[int, deque] = {}

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

    def isend(self, array, dest, tag=0, what=None):
        if dest != 0:
            raise RuntimeError(f"send to rank {dest} in a world of one; launch with mpiexec -n {dest + 1} or more")
        self._mailbox.setdefault(tag, deque()).append(backend.get_array_module(array).array(array, copy=True))
        return _Done(None)

    def _queue(self, source, tag, what) -> deque:
        label = f" ({what})" if what else ""
        if source != 0:
            raise RuntimeError(f"recv from rank {source}{label} in a world of one; launch with mpiexec -n "
                               f"{source + 1} or more")
        queue = self._mailbox.get(tag)
        if not queue:
            raise RuntimeError(f"recv from rank 0 with tag {tag}{label} in a world of one has no matching send: "
                               "nothing was sent to this rank with that tag, and no other rank exists to send "
                               "it, so the receive could never complete; send before receiving")
        return queue

    def irecv_message(self, source, tag=0, what=None):
        message = self._queue(source, tag, what).popleft()
        return _Done(backend.to_numpy(message).reshape(-1).view(numpy.uint8))

    def irecv(self, array, source, tag=0, what=None):
        label = f" ({what})" if what else ""
        queue = self._queue(source, tag, what)
        message = queue[0]
        if message.dtype != array.dtype or message.size != array.size:
            raise ValueError(f"recv with tag {tag}{label} into {array.dtype} {tuple(array.shape)} in a world of one, "
                             f"but the message sent is {message.dtype} {tuple(message.shape)}")
        queue.popleft()
        array[...] = message.reshape(array.shape)
        return _Done(array)

    def split(self, color, key=None):
        return SelfComm()

    def bcast_obj(self, obj, root=0):
        return obj

    def allgather_obj(self, obj):
        return [obj]

    def barrier(self):
        pass
