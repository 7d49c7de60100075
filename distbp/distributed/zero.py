"""ZeroRedundancyOptimizer: ZeRO stage 1 (Rajbhandari et al. 2020), the optimizer state sharded over
the data-parallel ranks, with torch.distributed.optim.ZeroRedundancyOptimizer's name and arguments.

The parameters are laid out, per dtype, in one flat buffer; rank r owns the contiguous slice r of it
(`slice_bounds`: balanced, a slice may cut through a parameter). The wrapped optimizer sees only
the pieces of parameters inside this rank's slice, so its state (momentum, exp_avg, exp_avg_sq, ...)
is 1/size of the plain optimizer's. `step()`:

1. copies every local gradient into the flat buffer and reduce-scatters it (a SUM by default, as
   distbp.train's data parallelism reduces with average=False; average=True divides each gradient
   by the world size first, as the Reducer does), so this rank holds the reduced gradients of its slice;
2. the wrapped optimizer updates this rank's slice of the parameters;
3. the slices are all-gathered back into every rank's parameters.

The reduction uses the node shared-memory segments where the communicator has them (comm/shm.py),
summing each element in rank order as its allreduce does, and every update is elementwise, so
the weights are bitwise those of plain data parallelism on one machine. The buffers and their
collectives live on a duplicate of the communicator, which `free()` releases (collective).
"""
from __future__ import annotations

import pickle
from collections import defaultdict

import numpy

from .. import backend
from ..autograd import enable_grad
from ..optim import Optimizer
from ..optim.optimizer import _pack, load_param_groups
from .comm import get_comm
from .comm.base import slice_bounds
from .releasing import Releasable

_TAG = 7  # consolidation's messages, on a communicator of their own (dup), so no tag can collide


class _Piece:
    """The part of one parameter inside this rank's slice, as the wrapped optimizer sees it:
    `data` a view of this rank's parameter shard, `grad` a view of the reduced gradients."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data, self.grad = data, None


class ZeroRedundancyOptimizer(Releasable, Optimizer):
    """Wraps `optimizer_class(params, **defaults)` (any distbp optimizer) so that each rank of `comm`
    (the data-parallel communicator, default get_comm()) keeps and updates only its slice.

    Call `step()` with each rank's own, unreduced gradients: it reduces them (sum, or mean with
    average=True). `param_groups` are the full groups, as the plain optimizer's: a change to them (a
    learning-rate scheduler's) reaches the wrapped optimizer at the next step. `optim` is the wrapped
    optimizer over this rank's pieces. `state_dict()` is this rank's shard (the wrapped optimizer's);
    `consolidate_state_dict(to)` returns on rank `to` the full state in the plain optimizer's format
    (None elsewhere); `load_state_dict` takes such a full state, each rank keeping its slice.
    `free()` (collective; also `with ZeroRedundancyOptimizer(...) as opt:`) releases its duplicate
    of `comm` and the buffers' shared memory; the optimizer refuses any later step."""

    def __init__(self, params, optimizer_class, comm=None, average: bool = False, **defaults):
        self.comm = comm if comm is not None else get_comm()
        self.average = average
        self.optimizer_class = optimizer_class
        # the plain optimizer over the full parameters: it checks the arguments and fills every group
        # with its defaults, so param_groups and the consolidated state are exactly its own
        plain = optimizer_class(params, **defaults)
        self.defaults = plain.defaults
        self.param_groups = plain.param_groups
        self.state = defaultdict(dict)
        self._channel = self.comm.dup() if self.comm.size > 1 else self.comm
        self._layout()
        self.optim = optimizer_class([{**_hyper(g), "params": [self._pieces[id(p)] for p in g["params"]
                                                                if id(p) in self._pieces]}
                                      for g in self.param_groups], **defaults)

    def _layout(self) -> None:
        """Per dtype, in parameter order: each parameter's offset in the flat buffer, the buffer
        (collective: from the duplicate's alloc_buffer), this rank's slice and the pieces inside it."""
        self._params = []  # distinct parameters, in param_groups order: the state_dict's indices
        seen = set()
        for g in self.param_groups:
            for p in g["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    self._params.append(p)
        xp = backend.get_array_module(self._params[0].data)
        self._flat = {}  # dtype -> [(param, offset)], numel
        for p in self._params:
            entries, numel = self._flat.get(p.data.dtype, ([], 0))
            entries.append((p, numel))
            self._flat[p.data.dtype] = (entries, numel + p.data.size)
        self._buffers, self.shard_bounds, self._shards = {}, {}, {}
        self._pieces = {}  # id(param) -> _Piece
        self._where = {}   # id(param) -> (start, stop) of its piece within the parameter, flattened
        for dtype, (entries, numel) in self._flat.items():
            self._buffers[dtype] = self._channel.alloc_buffer(numel, dtype, xp)
            lo, hi = slice_bounds(numel, self.comm.size)[self.comm.rank:self.comm.rank + 2]
            self.shard_bounds[dtype] = lo, hi
            shard = self._shards[dtype] = xp.empty(hi - lo, dtype=dtype)
            for p, off in entries:
                a, b = max(lo, off), min(hi, off + p.data.size)
                if a < b:
                    self._pieces[id(p)] = _Piece(shard[a - lo:b - lo])
                    self._where[id(p)] = a - off, b - off

    def add_param_group(self, group: dict) -> None:
        if hasattr(self, "optim"):
            raise NotImplementedError("ZeroRedundancyOptimizer lays out its parameters once: "
                                      "pass every parameter group to the constructor")
        super().add_param_group(group)

    def _release(self) -> None:
        if self._channel is not self.comm:  # a world of one shares the caller's communicator
            self._channel.free()
        self._buffers = {}

    def step(self, closure=None):
        self._check_not_freed()
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for outer, inner in zip(self.param_groups, self.optim.param_groups):
            inner.update(_hyper(outer))  # a scheduler changed the full groups
        scale = 1.0 / self.comm.size if self.average and self.comm.size > 1 else None
        for dtype, (entries, _) in self._flat.items():
            buf = self._buffers[dtype]
            xp = backend.get_array_module(buf)
            for p, off in entries:
                view = buf[off:off + p.data.size]
                if p.grad is None:
                    view[...] = 0
                elif scale is not None:  # the Reducer's average, the same bits
                    xp.multiply(p.grad.reshape(-1), scale, out=view)
                else:
                    view[...] = p.grad.reshape(-1)
            lo, _ = self.shard_bounds[dtype]
            reduced = self._channel.reduce_scatter_slices(buf)
            for p, off in entries:
                piece = self._pieces.get(id(p))
                if piece is not None:
                    a, b = self._where[id(p)]
                    piece.data[...] = p.data.reshape(-1)[a:b]  # p.data may have been replaced
                    piece.grad = None if p.grad is None else reduced[off + a - lo:off + b - lo]
        self.optim.step()
        for dtype, (entries, _) in self._flat.items():
            buf = self._buffers[dtype]
            lo, hi = self.shard_bounds[dtype]
            buf[lo:hi] = self._shards[dtype]
            self._channel.allgather_slices(buf)
            for p, off in entries:
                p.data[...] = buf[off:off + p.data.size].reshape(p.data.shape)
                piece = self._pieces.get(id(p))
                if piece is not None:
                    piece.grad = None
        return loss

    # ----- state -----
    def state_dict(self) -> dict:
        """This rank's shard: the wrapped optimizer's state_dict over its pieces."""
        return self.optim.state_dict()

    def _local_state(self) -> dict:
        """{parameter index: this rank's piece state, packed}."""
        out = {}
        for i, p in enumerate(self._params):
            piece = self._pieces.get(id(p))
            if piece is not None and piece in self.optim.state:
                out[i] = {k: _pack(k, v) for k, v in self.optim.state[piece].items()}
        return out

    def consolidate_state_dict(self, to: int = 0) -> dict | None:
        """Collective. On rank `to`: the full state in the plain optimizer's format (every state
        array whole, in the parameter's shape); None on the other ranks."""
        self._check_not_freed()
        mine = self._local_state()
        comm = self._channel
        if comm.rank != to:
            data = numpy.frombuffer(pickle.dumps(mine), dtype=numpy.uint8)
            comm.send(numpy.array([data.size], dtype=numpy.int64), to, _TAG)
            comm.send(data, to, _TAG)
            return None
        parts = []
        for k in range(comm.size):
            if k == to:
                parts.append(mine)
                continue
            n = comm.recv(numpy.empty(1, dtype=numpy.int64), k, _TAG)
            parts.append(pickle.loads(comm.recv(numpy.empty(int(n[0]), dtype=numpy.uint8), k, _TAG).tobytes()))
        state = {}
        for i, p in enumerate(self._params):
            pieces = [part[i] for part in parts if i in part]  # rank order = offset order
            if not pieces:
                continue
            state[i] = {}
            for key, value in pieces[0].items():
                if isinstance(value, numpy.ndarray) and value.ndim >= 1:
                    value = numpy.concatenate([piece[key] for piece in pieces]).reshape(p.data.shape)
                state[i][key] = value
        full = Optimizer.state_dict(self)  # the groups, packed as the plain optimizer packs them
        full["state"] = state
        return full

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a full state (the plain optimizer's, or consolidate_state_dict's): each rank keeps
        the slice of every state array that its pieces cover."""
        index = load_param_groups(self.param_groups, state_dict)
        inner_index = {}
        for g in self.optim.param_groups:
            for piece in g["params"]:
                inner_index.setdefault(id(piece), len(inner_index))
        state = {}
        for i, st in state_dict["state"].items():
            p = index[int(i)]
            piece = self._pieces.get(id(p))
            if piece is None:
                continue
            a, b = self._where[id(p)]
            state[inner_index[id(piece)]] = {
                k: backend.to_numpy(v).reshape(-1)[a:b] if backend.is_array(v) and v.ndim >= 1 else v
                for k, v in st.items()}
        inner_groups = [{**_hyper(g), "params": [inner_index[id(piece)] for piece in inner["params"]]}
                        for g, inner in zip(self.param_groups, self.optim.param_groups)]
        self.optim.load_state_dict({"state": state, "param_groups": inner_groups})
        for outer, inner in zip(self.param_groups, self.optim.param_groups):
            outer.update(_hyper(inner))  # e.g. AdamW keeps decoupled_weight_decay whatever was saved


def _hyper(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "params"}
