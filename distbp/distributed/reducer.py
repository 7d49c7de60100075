"""Gradient reduction in flat buckets, started from gradient hooks while backward still runs.

`Reducer` owns the buckets of a fixed list of parameters and reduces their gradients across the
ranks of a communicator; it knows nothing of modules or forward. DistributedDataParallel wraps a
model around one; anything else whose parameters get their gradients from backward (a sharded
optimizer reducing the same flat buckets, a pipeline stage) can use one the same way.

    reducer = Reducer(model.named_parameters(), comm, bucket_cap_bytes(25))
    reducer.prepare_for_backward()      # before building each graph whose gradients are reduced
    loss.backward()                     # .grad of every parameter: the average over ranks

How: parameters go into flat buckets in reverse registration order (about the order backward
produces their gradients, as in torch DDP), one dtype and device per bucket. A post-accumulate-grad
hook copies each final gradient into its bucket slice (pre-divided by the world size when
averaging) and starts the bucket's nonblocking allreduce once the bucket is complete, in bucket
order on every rank. Each hook call also `test()`s the outstanding requests: MPICH progresses a
nonblocking collective only inside MPI calls, so this is what lets the reduction run behind the
rest of backward. The step's first hook queues a callback on the backward that runs it
(`autograd.queue_callback`, as torch DDP does); at the end of that backward it zero-fills the
gradients that never came (warning once, naming them), waits for every bucket and leaves each
`.grad` a view of its slice of the reduced bucket (torch's gradient_as_bucket_view), which the next
reduction overwrites. A backward that reaches none of the parameters leaves the step armed.

Sync points (every rank must reach each, in the same order):
  * the constructor (it duplicates the communicator and allocates the buckets, in node shared
    memory under MPI);
  * each armed backward: the buckets' allreduces start in its hooks in bucket order, and its end
    waits for all of them;
  * `reduce_gradients()`;
  * `free()`: releases the duplicate communicator and the buckets' shared memory (each `.grad`
    is first copied out of its bucket) and removes the gradient hooks; the reducer refuses any
    later step.
"""
from __future__ import annotations

import time
import warnings

import numpy

from .. import autograd, backend
from . import trace
from .comm import Communicator
from .comm.device import transfer_path
from .comm.watchdog import set_step
from .releasing import Releasable


def bucket_cap_bytes(bucket_cap_mb: float) -> int:
    """A bucket size in MB, checked, in bytes."""
    if bucket_cap_mb <= 0:
        raise ValueError(f"Invalid bucket_cap_mb: {bucket_cap_mb}; use a positive size in MB such as 25")
    return int(bucket_cap_mb * 1024 * 1024)


class _Bucket:
    """A flat buffer for some parameters' gradients and its in-flight allreduce."""

    def __init__(self, params, dtype, xp):
        self.params = params
        self.dtype, self.xp = dtype, xp
        self.offsets, n = [], 0
        for p in params:
            self.offsets.append(n)
            n += p.data.size
        self.numel = n
        self.buffer = None
        self.ready = 0
        self.request = None
        self.started_at = self.done_at = None   # perf_counter() times, kept only while tracing

    def view(self, i):
        p = self.params[i]
        return self.buffer[self.offsets[i]:self.offsets[i] + p.data.size].reshape(p.data.shape)


def _group(params, cap_bytes: int) -> list:
    """Consecutive runs of `params` in reverse order, each of one dtype and device and about cap_bytes."""
    # Reverse registration order approximates the order backward produces gradients (torch DDP).
    groups, current, size, key = [], [], 0, None
    for p in reversed(params):
        k = (p.data.dtype, backend.device_of(p.data))
        nbytes = p.data.nbytes
        if current and (k != key or size + nbytes > cap_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(p)
        size += nbytes
        key = k
    if current:
        groups.append(current)
    return groups


class Reducer(Releasable):
    """Sum (or average) the gradients of `named_params` over the ranks of `comm` in flat buckets.

    Args:
        named_params: (name, parameter) pairs, in registration order; those that do not require
            grad are left out. Names appear in warnings and errors.
        comm: the ranks to reduce over; the buckets use a duplicate of it, so other collectives
            never interleave with theirs.
        bucket_cap_bytes: bucket size (`bucket_cap_bytes(mb)` checks and converts a size in MB).
        average: divide the sums by the world size (torch's convention).

    Attributes: `buckets`, `comm` (the duplicate), `iteration` (reduced steps so far; also the
    watchdog's step number), `last_comm_wait_s` (the last reduction's wait at its end),
    `bytes_per_sync`, `armed`.
    """

    def __init__(self, named_params, comm: Communicator, bucket_cap_bytes: int, average: bool = True):
        named = [(n, p) for n, p in named_params if p.requires_grad]
        self.comm = comm.dup()
        self.average = average
        self._names = {id(p): n for n, p in named}
        self.buckets = [_Bucket(ps, ps[0].data.dtype, backend.get_array_module(ps[0].data))
                        for ps in _group([p for _, p in named], bucket_cap_bytes)]
        for b in self.buckets:  # allocated once (fresh pages every step cost as much as the copy);
            b.buffer = self.comm.alloc_buffer(b.numel, b.dtype, b.xp)  # node shared memory under MPI
        self._slot = {}
        self._hooks = []
        for bi, b in enumerate(self.buckets):
            for i, p in enumerate(b.params):
                self._slot[id(p)] = (bi, i)
                self._hooks.append(p.register_post_accumulate_grad_hook(self._on_grad))
        self.armed = False
        self._reduced_this_graph = False  # a backward has reduced the gradients of the latest graph
        self._warned_unused = False
        self.iteration = 0
        self.last_comm_wait_s = 0.0
        self.bytes_per_sync = sum(b.numel * numpy.dtype(b.dtype).itemsize for b in self.buckets)

    def bucket_paths(self) -> list:
        """How each bucket crosses the ranks: (device, bytes, path), path as comm.device.transfer_path
        names it ('nccl', 'cuda-aware mpi', 'host staging', 'node shared memory', 'mpi', 'none')."""
        return [(backend.device_of(b.buffer), int(b.buffer.nbytes), transfer_path(self.comm, b.buffer))
                for b in self.buckets]

    def prepare_for_backward(self, sync: bool = True) -> None:
        """A new graph is being built: with `sync`, its backward reduces the gradients; without, they
        accumulate locally (and the next synchronised backward reduces the sum)."""
        self._check_not_freed()
        self._reduced_this_graph = False
        if sync and self.buckets and not self.armed:
            self._arm()

    def reduce_gradients(self) -> None:
        """Reduce every parameter's current .grad now, outside backward (same buckets and rules)."""
        self._check_not_freed()
        if self.armed:
            raise RuntimeError("a forward already armed the reduction for the coming backward; "
                               "call reduce_gradients() only between steps")
        self._arm()
        self._finish_queued = True  # finished right here, not by a backward
        for b in self.buckets:
            for p in b.params:
                if p.grad is not None:
                    self._on_grad(p)
        self._finish()

    def _release(self) -> None:
        """free(): see the module's text. The parameters stay usable: a wrapper can be built again."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        self.armed = False
        for b in self.buckets:
            for p in b.params:
                if p.grad is not None:  # maybe a view of the bucket, whose memory goes now
                    p.grad = p.grad.copy()
        self.comm.free()
        for b in self.buckets:
            b.buffer = b.request = None

    def _arm(self) -> None:
        self.iteration += 1
        set_step(self.iteration)
        for b in self.buckets:
            b.ready, b.request = 0, None
            b.filled = [False] * len(b.params)
        self._next = 0  # buckets start in index order on every rank, whatever order they fill in
        self.armed = True
        self._finish_queued = False  # the first gradient hook queues the finish on its backward

    # ----- backward: fill buckets, start their allreduces, keep them moving -----
    def _on_grad(self, p) -> None:
        if not self.armed:
            if self._reduced_this_graph:  # torch DDP fails here too ("marked ready twice")
                raise RuntimeError(
                    f"rank {self.comm.rank}: a second backward through one forward's graph; its gradients "
                    "would not be reduced across ranks. Run the forward (the wrapped model) again before each "
                    "backward (to accumulate, run the earlier ones under no_sync())")
            return  # a graph built without sync: gradients stay local
        if not self._finish_queued:  # the step's first gradient: finish at the end of this backward
            self._finish_queued = True
            autograd.queue_callback(self._finish_backward)
        bi, i = self._slot[id(p)]
        b = self.buckets[bi]
        if b.filled[i]:
            raise RuntimeError(f"gradient of {self._names[id(p)]} became final twice in one reduced step; run "
                               "the forward (the wrapped model) again before each backward, or accumulate "
                               "under no_sync()")
        self._copy_in(b, i, p.grad)
        # From now on .grad is the bucket slice (reduced in place later); the array backward made is
        # dropped at once, which keeps the memory in use, and so the cache misses, near one process's.
        p.grad = b.view(i)
        b.filled[i] = True
        b.ready += 1
        self._start_ready_buckets()
        for b in self.buckets[:self._next]:
            if not b.request.test():  # one test progresses every outstanding request
                break
            if b.done_at is None and trace.enabled():   # when the timeline saw it finish
                b.done_at = time.perf_counter()

    def _copy_in(self, b, i, grad) -> None:
        view = b.view(i)
        if self.average and self.comm.size > 1:
            b.xp.multiply(grad, 1.0 / self.comm.size, out=view)
        else:
            view[...] = grad

    def _start_ready_buckets(self) -> None:
        while self._next < len(self.buckets) and self.buckets[self._next].ready == len(
                self.buckets[self._next].params):
            b = self.buckets[self._next]
            b.request = self.comm.iallreduce(b.buffer)
            if trace.enabled():
                b.started_at, b.done_at = time.perf_counter(), None
            self._next += 1

    def _finish_backward(self) -> None:
        self._finish()
        self._reduced_this_graph = True

    def _finish(self) -> None:
        """End of backward: zero-fill grads that never came, wait for every bucket, hand grads back."""
        if not self.armed:
            return
        self.armed = False
        t0 = time.perf_counter()
        unused = []
        for b in self.buckets:
            for i, p in enumerate(b.params):
                if not b.filled[i]:
                    if p.grad is not None:  # accumulated without sync, but not touched by this backward
                        self._copy_in(b, i, p.grad)
                        p.grad = b.view(i)
                    else:
                        b.view(i)[...] = 0
                        unused.append(self._names[id(p)])
                    b.filled[i] = True
                    b.ready += 1
        self._start_ready_buckets()
        if unused and not self._warned_unused:
            self._warned_unused = True
            warnings.warn(f"rank {self.comm.rank}: parameters got no gradient in this backward and are reduced "
                          f"as zeros: {unused}", stacklevel=2)
        for b in self.buckets:
            b.request.wait()
            for i, p in enumerate(b.params):
                if p.grad is None:
                    p.grad = b.view(i)
        self.last_comm_wait_s = time.perf_counter() - t0
        if trace.enabled():
            self._trace(t0)

    def _trace(self, t0: float) -> None:
        """Each bucket's allreduce (from its start to when a test or the wait saw it done) and the wait."""
        end = t0 + self.last_comm_wait_s
        for i, b in enumerate(self.buckets):
            if b.started_at is not None:
                trace.complete(f"allreduce bucket {i}", b.started_at, b.done_at or end, iteration=self.iteration,
                               bytes=b.numel * numpy.dtype(b.dtype).itemsize)
            b.started_at = b.done_at = None
        trace.complete("comm wait", t0, end, cat="wait", tid=trace.COMPUTE_TID, iteration=self.iteration)
