"""Data parallelism: DistributedDataParallel, in torch DDP's order.

Construction: every rank checks that the model has the same parameter and buffer names, shapes,
dtypes and requires_grad flags everywhere, and that DDP's own options (bucket_cap_mb, average,
broadcast_buffers) are the same (a mismatch raises on every rank, naming it, never a hang), then rank 0's parameters and
buffers are broadcast, then a `Reducer` (reducer.py) takes the gradients: flat buckets whose
allreduces start from gradient hooks while backward runs and are waited for at its end, each `.grad`
left a view of its slice of the reduced bucket (the next synchronised backward overwrites it, so
copy a gradient you want to keep across steps). Each forward with gradients enabled arms the
reducer for the coming backward, unless under `no_sync()`; a backward that reaches none of the
model's parameters leaves the step armed for the next one.

Sync points (every rank must reach them): the constructor; each forward in training mode when
`broadcast_buffers` and the module has buffers; the end of each backward outside `no_sync()`;
`free()`, which releases the reducer's duplicate communicator and shared-memory buckets (the module
and its gradients stay usable; the wrapper refuses any later forward).
A second backward through one synchronised forward's graph (retain_graph) raises RuntimeError, as in
torch: its gradients would otherwise silently stay unreduced.
"""
from __future__ import annotations

import contextlib

from .. import autograd, backend
from ..nn.module import Module
from .agreement import check_same
from .comm import Communicator, get_comm
from .deterministic import GroupReducer, check_groups
from .reducer import Reducer, bucket_cap_bytes
from .releasing import Releasable


def model_layout(module: Module) -> dict:
    """What must be equal on every rank for data parallelism: each parameter's shape, dtype and
    requires_grad, each buffer's shape and dtype, by name (a frozen parameter on one rank only
    would make the ranks' gradient buckets differ)."""
    layout = {f"parameter {n}": f"{tuple(p.data.shape)} {p.data.dtype} requires_grad={p.requires_grad}"
              for n, p in module.named_parameters()}
    layout.update({f"buffer {n}": f"{tuple(b.shape)} {b.dtype}" for n, b in module.named_buffers()})
    return layout


def verify_same_model(module: Module, comm: Communicator, settings: dict | None = None) -> None:
    """Raise SettingsMismatchError (a ValueError) on every rank unless all ranks hold the same
    parameter/buffer names, shapes, dtypes and requires_grad flags, and the same `settings`
    (DistributedDataParallel's options); one small allgather when they agree."""
    check_same(comm, {**(settings or {}), **model_layout(module)}, what="the model or its settings differ "
               "across ranks: ", advice="build the same model with the same settings on every rank")


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


def _check_deterministic(module: Module, groups: int) -> None:
    """Refuse what deterministic mode cannot make independent of the number of ranks."""
    check_groups(groups)
    buffers = [name for name, b in module.named_buffers() if backend.is_array(b)]
    if buffers:   # running statistics would be updated by whichever groups a rank happens to run
        raise ValueError(f"deterministic mode does not support modules with buffers (BatchNorm running "
                         f"statistics: {buffers[:3]}); use a model without BatchNorm")


class DistributedDataParallel(Releasable, Module):
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
        deterministic: gradients with the same bits on any number of ranks (deterministic.py): the
            global batch is cut into `groups` groups, one forward and backward per group
            (`group_bounds`), summed in a fixed tree (`reduce_groups`); `average` then divides by the
            number of groups. Sets one BLAS thread; refuses a model with buffers (BatchNorm).

    `reducer` is the gradient reducer; `iteration` (synchronised steps so far, also the watchdog's
    step number), `last_comm_wait_s` (time the last backward waited for its allreduces at the end)
    and `bytes_per_sync` are its.
    """

    def __init__(self, module: Module, comm: Communicator | None = None, bucket_cap_mb: float = 25,
                 average: bool = True, broadcast_buffers: bool = True, deterministic: bool = False,
                 groups: int = 8):
        super().__init__()
        self.bucket_cap_bytes = bucket_cap_bytes(bucket_cap_mb)  # checked before any collective
        self.deterministic = deterministic
        if deterministic:
            _check_deterministic(module, groups)
        self.module = module
        object.__setattr__(self, "comm", comm or get_comm())
        self.average, self.broadcast_buffers = average, broadcast_buffers
        verify_same_model(module, self.comm, {"bucket_cap_mb": bucket_cap_mb, "average": average,
                                              "broadcast_buffers": broadcast_buffers})
        broadcast_module(module, self.comm)
        if deterministic:
            object.__setattr__(self, "reducer", GroupReducer(module.named_parameters(), self.comm, groups, average))
        else:
            object.__setattr__(self, "reducer", Reducer(module.named_parameters(), self.comm,
                                                        self.bucket_cap_bytes, average))
        self.require_backward_grad_sync = True

    @property
    def iteration(self) -> int:
        return self.reducer.iteration

    @property
    def last_comm_wait_s(self) -> float:
        return self.reducer.last_comm_wait_s

    @property
    def bytes_per_sync(self) -> int:
        return self.reducer.bytes_per_sync

    def _release(self) -> None:
        """free(): collective over `comm`; also `with DistributedDataParallel(...) as ddp:`."""
        self.reducer.free()

    def forward(self, *args, **kwargs):
        self._check_not_freed()
        if self.training and self.broadcast_buffers and self.comm.size > 1:
            for b in self.module.buffers():
                if backend.is_array(b):
                    self.comm.bcast(b)
        if autograd.is_grad_enabled():  # this forward's graph: reduced in its backward unless no_sync
            if self.deterministic:
                self.reducer.prepare_for_backward()
            else:
                self.reducer.prepare_for_backward(sync=self.require_backward_grad_sync)
        return self.module(*args, **kwargs)

    def reduce_gradients(self) -> None:
        """Reduce every parameter's current .grad now, outside backward (same buckets and rules)."""
        if self.deterministic:
            raise RuntimeError("deterministic mode reduces per-group gradients: use group_bounds() and "
                               "reduce_groups()")
        self.reducer.reduce_gradients()

    # ----- deterministic mode -----
    def group_bounds(self, global_batch: int) -> list:
        """Deterministic mode: start a step; [start, stop) global sample bounds of this rank's groups.
        Run one forward and one backward per group, in this order, then `reduce_groups()`."""
        return self.reducer.plan(global_batch)

    def reduce_groups(self) -> None:
        """Deterministic mode, collective: every .grad = the fixed tree's sum of all groups' gradients."""
        self.reducer.reduce()

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally: forwards inside this block do not reduce in their backward."""
        if self.deterministic:
            raise RuntimeError("no_sync() is not available in deterministic mode: each group is its own backward")
        prev, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = prev

    # ----- state without the wrapper's prefix -----
    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict)

    def extra_repr(self) -> str:
        if self.deterministic:
            return f"world_size={self.comm.size}, groups={self.reducer.groups}, average={self.average}, deterministic"
        return f"world_size={self.comm.size}, buckets={len(self.reducer.buckets)}, average={self.average}"
