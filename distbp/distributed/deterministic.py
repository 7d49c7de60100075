"""Deterministic data parallelism: gradients whose bits do not depend on the number of ranks.

Plain data parallelism sums each rank's gradient, and each rank's gradient is already a sum over its
slice of the batch (inside BLAS): change the number of ranks and the additions happen in another
order, so float32 weights drift apart in the last bits. Here the order is fixed by the batch alone:

* the global batch of B samples is cut into G groups of consecutive samples (numpy.array_split's
  rule, G = min(groups, B)); G is a setting, never the world size;
* each rank owns whole groups, a contiguous run of them (`shard_bounds(G, rank, size)`; uneven is
  fine, a rank may own none), and runs one forward and one backward per group, so every group's
  gradient is computed alone, from the same inputs, wherever it runs;
* the G group gradients are added up in one fixed binary tree over the group indices (node
  [lo, hi) = [lo, mid) + [mid, hi), mid = (lo + hi) // 2), the same tree on every world size.

A rank adds up the subtrees that lie inside its own groups as their gradients arrive (a stack,
memory O(log G) models). A node that straddles ranks is computed by the owner of its first group:
the owner of its right half sends that half's sum to it (point-to-point, leftwards only, so no
cycle can wait on itself), and the root, on rank 0, is broadcast. Each rank sends about one model
per tree level its groups cut, and receives the root: on 2 ranks, one model each way, what an
allreduce moves. Every addition is the same IEEE addition of the same two arrays wherever it runs,
so every world size gets the same bits.

One BLAS thread per rank: a multi-threaded BLAS may split a product differently with the number of
threads, so `GroupReducer` (and DistributedDataParallel(deterministic=True)) sets it to one.
"""
from __future__ import annotations

import functools
import time

import numpy

from .. import autograd, backend
from ..data import shard_bounds
from . import trace
from .comm import Communicator
from .comm.watchdog import set_step
from .releasing import Releasable
from .runtime import set_threads

TAG_LIMIT = 32767   # the MPI standard's guaranteed upper bound for tags (one per tree node)
MAX_GROUPS = (TAG_LIMIT + 1) // 2   # a tree of G leaves has 2G - 1 nodes


def check_groups(groups: int) -> int:
    """A group count, checked."""
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= MAX_GROUPS:
        raise ValueError(f"Invalid groups: {groups!r}; use an integer from 1 to {MAX_GROUPS} (groups of "
                         "each global batch, fixed whatever the number of ranks)")
    return groups


def group_starts(batch: int, groups: int) -> list[int]:
    """Where each of the min(groups, batch) groups of a batch starts, and the batch's end."""
    g = max(1, min(groups, batch))
    return [shard_bounds(batch, k, g)[0] for k in range(g)] + [batch]


@functools.lru_cache(maxsize=64)
def _tree(num_groups: int) -> dict:
    """{(lo, hi): node number} for every node of the fixed tree over groups [0, num_groups), preorder."""
    ids, todo = {}, [(0, num_groups)]
    while todo:
        lo, hi = todo.pop()
        ids[(lo, hi)] = len(ids)
        if hi - lo > 1:
            mid = (lo + hi) // 2
            todo += [(mid, hi), (lo, mid)]
    return ids


def _mid(lo: int, hi: int) -> int:
    return (lo + hi) // 2


def _is_node(lo: int, hi: int, num_groups: int) -> bool:
    """Whether [lo, hi) is a node of the tree over [0, num_groups)."""
    a, b = 0, num_groups
    while (a, b) != (lo, hi):
        if b - a <= 1 or not a <= lo < hi <= b:
            return False
        m = _mid(a, b)
        if hi <= m:
            b = m
        elif lo >= m:
            a = m
        else:
            return False
    return True


class _Sum:
    """A tree node's value: one array per parameter. `owned`: the arrays are this reducer's to
    overwrite (a leaf holds the arrays backward made, which may be shared with other references,
    so the first sum over it writes into fresh arrays; the same IEEE additions either way)."""
    __slots__ = ("arrays", "owned")

    def __init__(self, arrays: list, owned: bool):
        self.arrays, self.owned = arrays, owned

    def add(self, right: _Sum, xp) -> _Sum:
        """self + right (left operand first, whichever storage receives it)."""
        if self.owned:
            for a, b in zip(self.arrays, right.arrays):
                xp.add(a, b, out=a)
            return self
        if right.owned:
            for a, b in zip(self.arrays, right.arrays):
                xp.add(a, b, out=b)
            return right
        return _Sum([xp.add(a, b) for a, b in zip(self.arrays, right.arrays)], True)


class GroupReducer(Releasable):
    """Sum per-group gradients of `named_params` over the ranks of `comm` in the fixed tree.

        reducer = GroupReducer(model.named_parameters(), comm)
        for a, b in reducer.plan(global_batch):     # this rank's groups, global sample bounds, in order
            reducer.prepare_for_backward()          # DistributedDataParallel's forward does this
            loss_fn(model(x[a:b]), y[a:b]).backward()   # this group's gradient, filed apart
        reducer.reduce()                            # collective: .grad = the tree's sum over all groups

    `plan` leaves every .grad None; each armed backward takes the parameters' gradient arrays as a
    leaf of the tree (zeros for a parameter it did not reach) and sets .grad None again. Sync points: the
    constructor (it duplicates the communicator), `reduce()` and `free()` (the duplicate and the hooks
    go). `average` divides the sum by the
    number of groups. Attributes: `iteration`, `last_comm_wait_s` (the exchange's time),
    `bytes_per_sync` (one model), `last_bytes_received` (what this rank received in the last exchange:
    subtree sums and the broadcast root)."""

    def __init__(self, named_params, comm: Communicator, groups: int = 8, average: bool = False):
        named = [(n, p) for n, p in named_params if p.requires_grad]
        kinds = {(p.data.dtype, backend.device_of(p.data)) for _, p in named}
        if len(kinds) > 1:
            raise ValueError(f"deterministic mode needs every parameter in one dtype on one device, got "
                             f"{sorted((str(d), str(v)) for d, v in kinds)}")
        self.groups = check_groups(groups)
        self.comm = comm.dup()
        self.average = average
        self.params = [p for _, p in named]
        self.dtype = self.params[0].data.dtype if self.params else numpy.dtype("float64")
        self.xp = backend.get_array_module(self.params[0].data) if self.params else numpy
        self.offsets, n = [], 0
        for p in self.params:
            self.offsets.append(n)
            n += p.data.size
        self.numel = n
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self.params]
        set_threads(1)   # the same product may round differently on another number of BLAS threads
        self.iteration = 0
        self.last_comm_wait_s = 0.0
        self.bytes_per_sync = n * numpy.dtype(self.dtype).itemsize
        self.last_bytes_received = 0
        self.armed = False
        self._planned = None

    # ----- one step -----
    def plan(self, global_batch: int) -> list[tuple[int, int]]:
        """Start a step on a global batch: the [start, stop) sample bounds of this rank's groups."""
        self._check_not_freed()
        if global_batch < 1:
            raise ValueError(f"a step needs at least one sample, got a global batch of {global_batch}")
        starts = group_starts(global_batch, self.groups)
        num = len(starts) - 1
        first, last = shard_bounds(num, self.comm.rank, self.comm.size)
        self._planned = (num, first, last)
        self._next = first
        self._stack = []       # [(lo, hi, sum of groups lo..hi-1)], subtrees done so far
        for p in self.params:
            p.grad = None
        return [(starts[k], starts[k + 1]) for k in range(first, last)]

    def sample_range(self, global_batch: int) -> tuple[int, int]:
        """[start, stop) of the samples this rank's groups hold (without starting a step)."""
        starts = group_starts(global_batch, self.groups)
        first, last = shard_bounds(len(starts) - 1, self.comm.rank, self.comm.size)
        return starts[first], starts[last]

    def prepare_for_backward(self) -> None:
        """The next backward that reaches the parameters is the next group's."""
        if self._planned is None:
            raise RuntimeError("deterministic mode: call plan(global_batch) (DistributedDataParallel."
                               "group_bounds) before the step's first forward")
        self.armed = True
        self._queued = False

    def _on_grad(self, p) -> None:
        if self.armed and not self._queued:
            self._queued = True
            autograd.queue_callback(self._file_group)

    def _file_group(self) -> None:
        """End of a group's backward: its gradient becomes a leaf of the tree."""
        self.armed = False
        num, _, last = self._planned
        g = self._next
        if g >= last:
            raise RuntimeError(f"rank {self.comm.rank}: more backward passes than the {last - self._planned[1]} "
                               "group(s) this rank owns in the step; run one forward and backward per group")
        leaf = []
        for p in self.params:   # no copy: the arrays are only read until a sum replaces them
            if p.grad is None:
                leaf.append(self.xp.zeros(p.data.shape, dtype=self.dtype))
            else:
                leaf.append(p.grad if p.grad.dtype == self.dtype else p.grad.astype(self.dtype))
            p.grad = None
        self._next = g + 1
        self._push(g, g + 1, _Sum(leaf, False), num)

    def _push(self, lo: int, hi: int, value, num: int) -> None:
        stack = self._stack
        stack.append((lo, hi, value))
        while len(stack) >= 2:   # merge two adjacent subtrees when they are the halves of a node
            (a, m, left), (m2, b, right) = stack[-2], stack[-1]
            if m != m2 or _mid(a, b) != m or not _is_node(a, b, num):
                break
            stack[-2:] = [(a, b, left.add(right, self.xp))]

    def reduce(self) -> None:
        """Collective: combine every rank's subtrees into the root; each .grad is then a view of it."""
        if self._planned is None:
            raise RuntimeError("deterministic mode: reduce() without plan(global_batch)")
        num, first, last = self._planned
        if self._next != last:
            raise RuntimeError(f"rank {self.comm.rank}: {self._next - first} of this rank's {last - first} "
                               "group(s) had a backward before reduce(); run one forward and backward per group")
        self.iteration += 1
        set_step(self.iteration)
        t0 = time.perf_counter()
        root = self._combine(num, first, last)
        if self.average:
            root = _Sum([a / num for a in root.arrays], True)
        for p, a in zip(self.params, root.arrays):
            p.grad = a
        self._planned, self._stack = None, []
        self.last_comm_wait_s = time.perf_counter() - t0
        trace.complete("tree sum", t0, t0 + self.last_comm_wait_s, cat="wait", tid=trace.COMPUTE_TID,
                       iteration=self.iteration, groups=num)

    def _release(self) -> None:
        """free(): the duplicate communicator and the gradient hooks; no step can start after it."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self.armed, self._planned = False, None
        self.comm.free()

    def _combine(self, num: int, first: int, last: int):
        comm, ids = self.comm, _tree(num)
        owner = [0] * num
        for r in range(comm.size):
            lo, hi = shard_bounds(num, r, comm.size)
            owner[lo:hi] = [r] * (hi - lo)
        done = {(lo, hi): v for lo, hi, v in self._stack}
        sends = []
        received = self.bytes_per_sync if comm.rank > 0 else 0   # the root's broadcast

        def value(lo, hi):   # a node whose first group is mine
            if (lo, hi) in done:
                return done.pop((lo, hi))
            if hi - lo == 1:
                raise RuntimeError(f"rank {comm.rank}: the gradient of group {lo} is missing from the tree")
            mid = _mid(lo, hi)
            left = value(lo, mid)
            if owner[mid] == comm.rank:
                right = value(mid, hi)
            else:
                nonlocal received
                received += self.bytes_per_sync
                right = self._unflatten(comm.recv(self.xp.empty(self.numel, dtype=self.dtype), owner[mid],
                                                  ids[(mid, hi)],
                                                  what=f"deterministic gradient sum of groups {mid}..{hi - 1}"))
            return left.add(right, self.xp)

        def visit(lo, hi):   # find the nodes I must send: right halves whose parent starts on another rank
            if hi - lo <= 1:
                return
            mid = _mid(lo, hi)
            if owner[mid] == comm.rank and owner[lo] != comm.rank:
                v = self._flatten(value(mid, hi))
                sends.append((comm.isend(v, owner[lo], ids[(mid, hi)],
                                         what=f"deterministic gradient sum of groups {mid}..{hi - 1}"), v))
            if first < last:
                if lo < last and first < mid:
                    visit(lo, mid)
                if mid < last and first < hi:
                    visit(mid, hi)

        visit(0, num)
        if comm.size == 1:
            return value(0, num)
        root = self._flatten(value(0, num)) if comm.rank == 0 else self.xp.empty(self.numel, dtype=self.dtype)
        for request, _ in sends:
            request.wait()
        comm.bcast(root, 0)
        self.last_bytes_received = received
        return self._unflatten(root)

    def _flatten(self, node: _Sum):
        """One contiguous array of a node's values, in parameter order (what travels)."""
        flat = self.xp.empty(self.numel, dtype=self.dtype)
        for a, off in zip(node.arrays, self.offsets):
            flat[off:off + a.size] = a.reshape(-1)
        return flat

    def _unflatten(self, flat) -> _Sum:
        return _Sum([flat[off:off + p.data.size].reshape(p.data.shape) for p, off in zip(self.params, self.offsets)],
                    True)
