"""The communicator interface every backend implements, and the request a nonblocking call returns.

Methods are named after MPI functions (ChainerMN's convention). Array methods act on buffers in
place (mpi4py's upper-case calls, no pickling); `*_obj` methods pickle small Python objects. Every
rank must call every collective in the same order.
"""
from __future__ import annotations

import os

import numpy

from ... import backend

_REDUCTIONS = ("sum", "max", "min")


def slice_bounds(numel: int, size: int) -> list[int]:
    """Where each rank's slice of a flat buffer of `numel` elements starts: rank k owns
    [bounds[k], bounds[k+1]), balanced to within one element. The node shared-memory allreduce
    (shm.py) sums these same slices, so a reduce-scatter over them gives its bits."""
    return [numel * k // size for k in range(size + 1)]


def _check_op(op: str) -> str:
    if op not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {op!r}; expected 'sum', 'max' or 'min'")
    return op


class CommunicatorFreedError(RuntimeError):
    """A communicator, or what was built on it, was used after its free()."""


class Freed:
    """Stands in for the MPI handle of a freed communicator: any use raises CommunicatorFreedError,
    so a freed communicator refuses every call with one clear line instead of an MPI error (or a
    crash) from a released handle."""

    def __init__(self, what: str):
        self._what = what

    def error(self) -> CommunicatorFreedError:
        return CommunicatorFreedError(f"{self._what} was freed (free(), or the end of its `with` block) and "
                                      "cannot be used again; build a new one (comm.split(), a new ProcessGrid)")

    def __getattr__(self, name):
        if name.startswith("__"):  # copy, pickle and friends probe for optional methods
            raise AttributeError(name)
        raise self.error()


class Request:
    """A started nonblocking operation: `test()` drives it forward, `wait()` finishes it."""

    def test(self) -> bool:
        return True

    def wait(self):
        return None


class _Done(Request):
    """Already complete (a world of one)."""

    def __init__(self, result=None):
        self.result = result

    def wait(self):
        return self.result


class Communicator:
    """Interface every communicator implements. `rank`, `size`; collectives on arrays in place."""

    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce(self, array, op: str = "sum"):
        """Reduce `array` over all ranks in place ('sum', 'max' or 'min'); returns it."""
        raise NotImplementedError

    def iallreduce(self, array, op: str = "sum") -> Request:
        """Start an in-place allreduce; `array` is reduced once the request's wait() returns."""
        raise NotImplementedError

    def alloc_buffer(self, numel: int, dtype, xp=numpy):
        """A flat array to reduce with this communicator again and again (a gradient bucket).
        Collective: every rank calls it, in the same order. An MPI communicator whose ranks share
        one machine gives back shared memory, which its sum-allreduce uses (shm.py)."""
        return xp.empty(numel, dtype=dtype)

    def hosts(self) -> list:
        """The ranks of each host (machine), hosts in the order of their lowest rank. Collective on
        an MPI communicator's first call."""
        return [list(range(self.size))]

    def buffer_path(self, array) -> str:
        """How a sum-allreduce of `array` moves its bytes: 'none' (a world of one), 'shared memory'
        (one host), 'hierarchical' (shared memory within hosts, MPI between) or 'mpi'."""
        return "none" if self.size == 1 else "mpi"

    def bcast(self, array, root: int = 0):
        """Overwrite `array` on every rank with root's (same shape and dtype everywhere)."""
        raise NotImplementedError

    def allgather(self, array):
        """Stack every rank's equally shaped array: result shape (size, *array.shape)."""
        raise NotImplementedError

    def reduce_scatter(self, array, op: str = "sum"):
        """Reduce `array` (leading dim = size * k) over ranks; return this rank's block of k rows."""
        raise NotImplementedError

    def reduce_scatter_slices(self, array, op: str = "sum"):
        """Reduce the flat `array` over ranks so that this rank's slice of it (`slice_bounds`) holds
        the result, in place; returns that slice (a view). The other slices are left unspecified.
        This default reduces everything (an allreduce, so the bits are the allreduce's)."""
        self.allreduce(array, op)
        lo, hi = slice_bounds(array.size, self.size)[self.rank:self.rank + 2]
        return array[lo:hi]

    def allgather_slices(self, array):
        """Copy every rank's slice of the flat `array` (`slice_bounds`) into the same place of every
        rank's `array`, in place; returns it. The inverse of `reduce_scatter_slices`."""
        if self.size == 1:
            return array
        bounds = slice_bounds(array.size, self.size)
        counts = numpy.diff(bounds).tolist()
        # allgather takes equal shapes: every slice padded to the longest
        block = backend.get_array_module(array).zeros(max(counts), dtype=array.dtype)
        block[:counts[self.rank]] = array[bounds[self.rank]:bounds[self.rank + 1]]
        rows = self.allgather(block)
        for k in range(self.size):
            array[bounds[k]:bounds[k + 1]] = rows[k, :counts[k]]
        return array

    # Point-to-point. `what` is an optional label ("activation of micro-batch 3 to stage 1") that the
    # watchdog prints, with the op, peer and tag, when the call waits past its deadline.
    def send(self, array, dest: int, tag: int = 0, what: str | None = None) -> None:
        """Send `array` to `dest`; returns when `array` may be modified again."""
        self.isend(array, dest, tag, what=what).wait()

    def recv(self, array, source: int, tag: int = 0, what: str | None = None):
        """Receive into `array` (shape and dtype must match the sender's); returns it."""
        return self.irecv(array, source, tag, what=what).wait()

    def isend(self, array, dest: int, tag: int = 0, what: str | None = None) -> Request:
        """Start sending `array` to `dest`. Do not modify `array` until the request's wait() returns
        (which returns None)."""
        raise NotImplementedError

    def irecv(self, array, source: int, tag: int = 0, what: str | None = None) -> Request:
        """Start receiving into `array` from `source` (shape and dtype must match the sender's: the
        bytes are not checked; `distbp.distributed.p2p` checks them). wait() returns the filled array."""
        raise NotImplementedError

    def irecv_message(self, source: int, tag: int = 0, what: str | None = None) -> Request:
        """Start receiving the next message from `source` on `tag`, whatever its length: wait()
        returns its bytes (a uint8 array of the length sent), so a message longer or shorter than
        expected is neither truncated nor half-filled, and is taken off the queue all the same."""
        raise NotImplementedError

    def split(self, color: int, key: int | None = None) -> Communicator:
        """Sub-communicators: ranks with the same color form one, ordered by key (default rank)."""
        raise NotImplementedError

    def dup(self) -> Communicator:
        """A communicator with the same ranks whose traffic never matches this one's."""
        return self.split(0)

    def bcast_obj(self, obj, root: int = 0):
        raise NotImplementedError

    def allgather_obj(self, obj) -> list:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (used when one rank fails, so none hangs)."""
        os._exit(code)

    # ----- releasing what a communicator holds (torch: dist.destroy_process_group(group)) -----
    def free(self) -> None:
        """Release the MPI communicators and shared-memory windows this communicator created; the
        one it was built over (COMM_WORLD, or a communicator a user passed in) is never freed.
        Collective: every rank of it calls free(), in the same order as its other collectives.
        Calling it again does nothing; any other call afterwards raises CommunicatorFreedError.
        Arrays from `alloc_buffer` live in the released memory: do not touch them after free().
        A world of one holds nothing, so this is a no-op there."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Not after an error: free() is collective, and a rank that raised may be the only one
        # here; the others wait in a collective that it will never join. Leave it to the exit.
        if exc_type is None:
            self.free()
