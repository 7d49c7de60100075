"""Data parallelism: DistributedDataParallel, in torch DDP's order.

Construction: every rank checks that the model has the same parameter and buffer names, shapes and
dtypes everywhere (a mismatch raises on every rank, never a hang), then rank 0's parameters and
buffers are broadcast. Gradients live in flat buckets (reverse registration order, ~25 MB each);
a post-accumulate-grad hook copies each final gradient into its bucket (pre-divided by the world
size when averaging) and starts the bucket's nonblocking allreduce the moment the bucket is full,
in bucket order on every rank. Each hook call also `test()`s the outstanding requests: MPICH only
progresses a nonblocking collective inside MPI calls (PLATFORM.md), so this is what lets the
reduction run behind the rest of backward. The first hook of a step queues a callback on the
backward that runs it (as torch DDP does), which waits for every bucket at the end of that backward;
a backward that reaches none of the model's parameters leaves the step armed for the next one.
Each `.grad` is then a view of its slice of the reduced bucket (torch's gradient_as_bucket_view):
the next synchronised backward overwrites it, so copy a gradient you want to keep across steps.

Sync points (every rank must reach them): the constructor; each forward in training mode when
`broadcast_buffers` and the module has buffers; the end of each backward outside `no_sync()`.
A second backward through one synchronised forward's graph (retain_graph) raises RuntimeError, as in
torch: its gradients would otherwise silently stay unreduced.
"""
from __future__ import annotations

import contextlib
import time
import warnings

import numpy

from .. import autograd, backend
from ..nn.module import Module
from .comm import Communicator, get_comm
from .comm.watchdog import set_step


def _describe(named) -> list:
    return [(name, tuple(a.shape), str(a.dtype)) for name, a in named]


def verify_same_model(module: Module, comm: Communicator) -> None:
    """Raise ValueError on every rank unless all ranks hold the same parameter/buffer names, shapes, dtypes."""
    mine = (_describe((n, p.data) for n, p in module.named_parameters()), _describe(module.named_buffers()))
    everyone = comm.allgather_obj(mine)
    bad = [r for r, theirs in enumerate(everyone) if theirs != everyone[0]]
    if not bad:
        return
    r = bad[0]
    ref, other = everyone[0][0] + everyone[0][1], everyone[r][0] + everyone[r][1]
    diff = [f"rank 0 has {a}, rank {r} has {b}" for a, b in zip(ref, other) if a != b]
    if len(ref) != len(other):
        diff.append(f"rank 0 has {len(ref)} parameters+buffers, rank {r} has {len(other)}")
    raise ValueError(f"the model differs across ranks {[0] + bad}: " + "; ".join(diff[:3])
                     + "; build the same model (same sizes and dtype) on every rank")


def broadcast_module(module: Module, comm: Communicator, root: int = 0) -> None:
    """Overwrite every parameter and buffer with root's values."""
    for p in module.parameters():
        comm.bcast(p.data, root)
    for b in module.buffers():
        if backend.is_array(b):
            comm.bcast(b, root)


def broadcast_state(model: Module, optimizer=None, comm: Communicator | None = None, root: int = 0) -> None:
    """After rank 0 loaded a checkpoint: give every rank its parameters, buffers and optimizer state.

    The optimizer state (momentum buffers, step counts) is pickled from root and loaded on the others,
    so ranks that did not read the file, or a different number of ranks than wrote it, resume alike."""
    comm = comm or get_comm()
    model = model.module if isinstance(model, DistributedDataParallel) else model
    broadcast_module(model, comm, root)
    if optimizer is not None:
        state = comm.bcast_obj(optimizer.state_dict() if comm.rank == root else None, root)
        if comm.rank != root:
            optimizer.load_state_dict(state)


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

    def view(self, i):
        p = self.params[i]
        return self.buffer[self.offsets[i]:self.offsets[i] + p.data.size].reshape(p.data.shape)


class DistributedDataParallel(Module):
    """Wrap a module for data-parallel training: grads are summed over ranks (divided by the world
    size when `average`, torch's convention) at the end of each `loss.backward()`.

    Args:
        module: the model; `.module` gives it back. `state_dict()` keys carry no `module.` prefix.
        comm: communicator (default `get_comm()`); gradient buckets use a duplicate of it, so other
            collectives (SyncBatchNorm's, the user's) never interleave with them.
        bucket_cap_mb: bucket size in MB. Smaller buckets start earlier in backward, but MPI only
            progresses at the next gradient hook, so on CPU one bucket was fastest (docs/distributed.md).
        average: divide the summed gradients by the world size.
        broadcast_buffers: re-broadcast rank 0's buffers (BatchNorm running stats) at each training
            forward, as torch does, so all ranks evaluate the same model.
    """

    def __init__(self, module: Module, comm: Communicator | None = None, bucket_cap_mb: float = 25,
                 average: bool = True, broadcast_buffers: bool = True):
        super().__init__()
        if bucket_cap_mb <= 0:
            raise ValueError(f"Invalid bucket_cap_mb: {bucket_cap_mb}; use a positive size in MB such as 25")
        self.module = module
        object.__setattr__(self, "comm", comm or get_comm())
        self.average, self.broadcast_buffers = average, broadcast_buffers
        self.bucket_cap_bytes = int(bucket_cap_mb * 1024 * 1024)
        verify_same_model(module, self.comm)
        broadcast_module(module, self.comm)
        object.__setattr__(self, "_grad_comm", self.comm.dup())
        self._names = {id(p): n for n, p in module.named_parameters()}
        self._build_buckets([p for p in module.parameters() if p.requires_grad])
        self.require_backward_grad_sync = True
        self._armed = False
        self._reduced_since_forward = False  # a backward has reduced the last forward's gradients
        self._warned_unused = False
        self.iteration = 0            # synchronised steps so far; also the watchdog's step number
        self.last_comm_wait_s = 0.0   # time the last backward waited for its allreduces at the end
        self.bytes_per_sync = sum(b.numel * numpy.dtype(b.dtype).itemsize for b in self._buckets)

    def _build_buckets(self, params) -> None:
        # Reverse registration order approximates the order backward produces gradients (torch DDP).
        buckets, current, size, key = [], [], 0, None
        for p in reversed(params):
            k = (p.data.dtype, backend.device_of(p.data))
            nbytes = p.data.nbytes
            if current and (k != key or size + nbytes > self.bucket_cap_bytes):
                buckets.append(current)
                current, size = [], 0
            current.append(p)
            size += nbytes
            key = k
        if current:
            buckets.append(current)
        object.__setattr__(self, "_buckets", [
            _Bucket(ps, ps[0].data.dtype, backend.get_array_module(ps[0].data)) for ps in buckets])
        for b in self._buckets:  # allocated once (fresh pages every step cost as much as the copy);
            b.buffer = self._grad_comm.alloc_buffer(b.numel, b.dtype, b.xp)  # node shared memory under MPI
        self._slot = {}
        for bi, b in enumerate(self._buckets):
            for i, p in enumerate(b.params):
                self._slot[id(p)] = (bi, i)
                p.register_post_accumulate_grad_hook(self._on_grad)

    # ----- forward: arm the reducer for the coming backward -----
    def forward(self, *args, **kwargs):
        if self.training and self.broadcast_buffers and self.comm.size > 1:
            for b in self.module.buffers():
                if backend.is_array(b):
                    self.comm.bcast(b)
        if autograd.is_grad_enabled():
            self._reduced_since_forward = False
            if self.require_backward_grad_sync and self._buckets and not self._armed:
                self._arm()
        return self.module(*args, **kwargs)

    def _arm(self) -> None:
        self.iteration += 1
        set_step(self.iteration)
        for b in self._buckets:
            b.ready, b.request = 0, None
            b.filled = [False] * len(b.params)
        self._next = 0  # buckets start in index order on every rank, whatever order they fill in
        self._armed = True
        self._finish_queued = False  # the first gradient hook queues the finish on its backward

    def reduce_gradients(self) -> None:
        """Reduce every parameter's current .grad now, outside backward (same buckets and rules)."""
        if self._armed:
            raise RuntimeError("a forward already armed the reduction for the coming backward; "
                               "call reduce_gradients() only between steps")
        self._arm()
        self._finish_queued = True  # finished right here, not by a backward
        for b in self._buckets:
            for p in b.params:
                if p.grad is not None:
                    self._on_grad(p)
        self._finish()

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally: forwards inside this block do not reduce in their backward."""
        prev, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = prev

    # ----- backward: fill buckets, start their allreduces, keep them moving -----
    def _on_grad(self, p) -> None:
        if not self._armed:
            if self._reduced_since_forward:  # torch DDP fails here too ("marked ready twice")
                raise RuntimeError(
                    f"rank {self.comm.rank}: DistributedDataParallel: a second backward through one forward's "
                    "graph; its gradients would not be reduced across ranks. Call the wrapped model again "
                    "before each backward (to accumulate, run the earlier ones under no_sync())")
            return  # a forward under no_sync(): gradients stay local
        if not self._finish_queued:  # the step's first gradient: finish at the end of this backward
            self._finish_queued = True
            autograd.queue_callback(self._finish_backward)
        bi, i = self._slot[id(p)]
        b = self._buckets[bi]
        if b.filled[i]:
            raise RuntimeError(f"gradient of {self._names[id(p)]} became final twice in one DDP step; call "
                               "the wrapped model again before each backward, or accumulate under no_sync()")
        self._copy_in(b, i, p.grad)
        # From now on .grad is the bucket slice (reduced in place later); the array backward made is
        # dropped at once, which keeps the memory in use, and so the cache misses, near one process's.
        p.grad = b.view(i)
        b.filled[i] = True
        b.ready += 1
        self._start_ready_buckets()
        for b in self._buckets[:self._next]:
            if not b.request.test():  # one test progresses every outstanding request
                break

    def _copy_in(self, b, i, grad) -> None:
        view = b.view(i)
        if self.average and self.comm.size > 1:
            b.xp.multiply(grad, 1.0 / self.comm.size, out=view)
        else:
            view[...] = grad

    def _start_ready_buckets(self) -> None:
        while self._next < len(self._buckets) and self._buckets[self._next].ready == len(
                self._buckets[self._next].params):
            b = self._buckets[self._next]
            b.request = self._grad_comm.iallreduce(b.buffer)
            self._next += 1

    def _finish_backward(self) -> None:
        self._finish()
        self._reduced_since_forward = True

    def _finish(self) -> None:
        """End of backward: zero-fill grads that never came, wait for every bucket, hand grads back."""
        if not self._armed:
            return
        self._armed = False
        t0 = time.perf_counter()
        unused = []
        for b in self._buckets:
            for i, p in enumerate(b.params):
                if not b.filled[i]:
                    if p.grad is not None:  # accumulated under no_sync, but not touched by this backward
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
        for b in self._buckets:
            b.request.wait()
            for i, p in enumerate(b.params):
                if p.grad is None:
                    p.grad = b.view(i)
        self.last_comm_wait_s = time.perf_counter() - t0

    # ----- state without the wrapper's prefix (PAINS #6) -----
    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict)

    def extra_repr(self) -> str:
        return f"world_size={self.comm.size}, buckets={len(self._buckets)}, average={self.average}"
