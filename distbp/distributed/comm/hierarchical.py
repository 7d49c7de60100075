"""Allreduce across several machines: shared memory within each, MPI only between them.

When the ranks of a communicator span H hosts with L ranks each, a sum-allreduce of a gradient
bucket (`MPIComm.alloc_buffer`) runs in three stages:

1. within each host, through node shared memory (shm.py's reduce-scatter): local rank r ends up
   with slice r (of L) of its host's sum;
2. between hosts, local rank r talks only to the local ranks r of the other hosts (the "cross"
   communicator, one member per host): it cuts its slice into H pieces, sends piece h to host h
   (an all-to-all, as point-to-point messages), adds the H copies of its own piece in host order 0, 1, ..., H-1, and
   all-gathers the pieces back into its slice;
3. within each host, every rank copies the other slices from their owners' segments (shm.py's
   allgather).

Every element is summed exactly once, by one rank, in one fixed order (ranks of a host in rank
order, then hosts in order), and copied everywhere else: every rank gets the same bits, and the
order does not depend on MPI's choice of algorithm. Bytes between hosts: each host sends
2 (H-1)/H of the buffer per allreduce (the L cross communicators share the links), where a flat
allreduce over all ranks sends at least that from each host and, with MPI's usual algorithms,
a multiple of it (figures in docs/multi_host.md).

The request advances like shm.py's: its MPI parts progress inside MPI calls, its own steps only
when this process calls in, so waiting on one bucket moves every bucket in flight.
"""
from __future__ import annotations

import numpy

from .base import slice_bounds
from .shm import ALLGATHER, REDUCE_SCATTER, PolledRequest, SharedAllreduce, SharedSegments


def host_layout(MPI, comm, node) -> tuple[int, list]:
    """(this host's index, the ranks of every host), hosts numbered in the order of their lowest
    rank. Collective over `comm`."""
    first = node.allreduce(comm.Get_rank(), op=MPI.MIN)  # this host's lowest rank names it
    firsts = comm.allgather(first)
    order = sorted(set(firsts))
    members = [[r for r, f in enumerate(firsts) if f == lowest] for lowest in order]
    return order.index(first), members


class HostBuffers:
    """A flat buffer reduced hierarchically: this rank's shared segment on its host, and the cross
    communicator (a duplicate per buffer, so buckets in flight never mix their collectives)."""

    def __init__(self, MPI, node, cross, numel: int, dtype):
        self.MPI = MPI
        self.segments = SharedSegments(MPI, node, numel, dtype)
        self.mine = self.segments.mine
        self.cross = cross.Dup()
        self.hosts = self.cross.Get_size()
        self.host = self.cross.Get_rank()
        lo, hi = self.segments.bounds[self.segments.rank:self.segments.rank + 2]
        self.slice = self.mine[lo:hi]  # the part of the buffer this rank reduces between hosts
        self.pieces = slice_bounds(hi - lo, self.hosts)
        self.counts = numpy.diff(self.pieces).tolist()
        width = self.counts[self.host]
        self.received = numpy.empty((self.hosts, width), dtype=self.mine.dtype)

    def free(self) -> None:
        """Collective: release the window and the communicator (before MPI_Finalize)."""
        self.segments.free()
        self.cross.Free()

    def start_exchange(self):
        """Piece h of my slice to host h; every host's copy of my piece into `received` (row h from
        host h). Point-to-point: MPICH's Ialltoallv of the same bytes took ~5x as long over TCP."""
        lo, hi = self.pieces[self.host], self.pieces[self.host + 1]
        self.received[self.host] = self.slice[lo:hi]
        requests = []
        for h in range(self.hosts):
            if h != self.host:
                requests.append(self.cross.Irecv(self.received[h], source=h))
                requests.append(self.cross.Isend(self.slice[self.pieces[h]:self.pieces[h + 1]], dest=h))
        return _AllOf(self.MPI, requests)

    def sum_my_piece(self) -> None:
        """My piece of the slice = the hosts' copies added in host order."""
        lo, hi = self.pieces[self.host], self.pieces[self.host + 1]
        out = self.slice[lo:hi]
        if self.hosts == 1:
            out[...] = self.received[0]
            return
        numpy.add(self.received[0], self.received[1], out=out)
        for part in self.received[2:]:
            out += part

    def start_share(self):
        """Every host's piece of my slice, from the rank that summed it."""
        return self.cross.Iallgatherv(self.MPI.IN_PLACE, [self.slice, (self.counts, self.pieces[:-1])])


class _AllOf:
    """Several MPI requests as one, for the waits and tests that take one."""

    def __init__(self, MPI, requests: list):
        self.MPI, self.requests = MPI, requests

    def Test(self) -> bool:  # MPI's name: it stands in for MPI requests
        return self.MPI.Request.Testall(self.requests)


class HierarchicalAllreduce(PolledRequest):
    """A started hierarchical sum-allreduce of `buffers.mine`: a request with test() and wait().
    Joins `in_flight`, the list that shm.py's requests share, so any wait moves it on."""

    def __init__(self, buffers: HostBuffers, watchdog, record, in_flight: list):
        self.buffers, self.watchdog, self.record = buffers, watchdog, record
        self.in_flight = in_flight
        alone = len(buffers.segments.all) == 1  # one rank on its host: no shared-memory stages
        self.stages = (() if alone else ("node reduce-scatter",)) + ("host exchange", "host share") + (
            () if alone else ("node allgather",))
        self.stage = -1
        self.current = None
        self._advance()
        in_flight.append(self)

    def _stage_done(self) -> bool:
        if isinstance(self.current, SharedAllreduce):
            return self.current._poll()
        return self.current.Test()

    def _advance(self) -> None:
        b = self.buffers
        if self.stage >= 0 and self.stages[self.stage] == "host exchange":
            b.sum_my_piece()
        self.stage += 1
        what = self.stages[self.stage] if self.stage < len(self.stages) else None
        if what == "node reduce-scatter":
            self.current = SharedAllreduce(b.segments, self.watchdog, self.record, [], REDUCE_SCATTER)
        elif what == "host exchange":
            self.current = b.start_exchange()
        elif what == "host share":
            self.current = b.start_share()
        elif what == "node allgather":
            self.current = SharedAllreduce(b.segments, self.watchdog, self.record, [], ALLGATHER)
        else:
            self.current = None
            if self in self.in_flight:
                self.in_flight.remove(self)

    def _done(self) -> bool:
        return self.current is None

    def wait(self):
        while not self._done():
            current = self.current
            mpi_request = current.barrier if isinstance(current, SharedAllreduce) else current
            self.watchdog.wait(mpi_request, self.record, progress=self._progress_all)
            self._poll()
        return self.buffers.mine
