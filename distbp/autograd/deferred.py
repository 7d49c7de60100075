"""Deferred parameter gradients: backward's weight-gradient half ("W"), computed later and at once.

A Linear's backward computes two products: its input gradient gy @ W, which the layers below wait
for, and its weight gradient gy.T @ x, which nothing in the walk needs. When one step runs several
backwards (the micro-batches of a pipeline), each of them would write a full (out x in) weight
gradient from a thin product and add it into `.grad`. Under `defer_weight_grads()` a Function that
supports it (ops.linalg.Linear) returns no gradient for its parameters and stashes what computes
them instead; `WeightGradStash.flush()` then computes each parameter's gradient from all of its
stashed rows in one product, written straight into `.grad` (added when one is there), and fires the
parameter's post-accumulate hooks. This is the B/W split of zero-bubble pipelining and Megatron-LM's
fused gradient accumulation.

    with defer_weight_grads():          # flushed when the block ends
        for x, y in micro_batches:
            loss_fn(model(x), y).backward()

    stash = WeightGradStash()           # or flush when you choose
    with defer_weight_grads(stash):
        loss.backward()
    stash.flush()

Only a parameter that is a leaf is deferred (a weight computed by other ops must send its gradient
on in the same walk), and only in walks that accumulate into `.grad`: `autograd.grad` computes every
gradient at once. Post-accumulate hooks fire at the flush, not in the backward: a gradient reducer
that expects them inside its backward (DDP) must reduce after the flush instead (a pipeline stage
does: it reduces after its step's schedule)."""
from __future__ import annotations

from contextlib import contextmanager

import numpy

from .. import backend
from .engine import _accumulate_leaf

_active = None  # the stash the running code defers into; None: compute every gradient in backward


class WeightGradStash:
    """The deferred parameter gradients of one or more backwards, in the order they were stashed.

    For each parameter (a leaf tensor) it keeps one `compute` function and the arrays of every
    backward that deferred into it; `flush` concatenates each argument's arrays along axis 0 and
    calls compute once. So compute must be a sum over rows: compute(cat(a), cat(b)) equals the sum
    of compute(a_i, b_i), as gy.T @ x and gy.sum(0) are."""

    def __init__(self):
        self._pending = {}  # tensor -> (compute, [argument tuples]), in first-stash order

    def stash(self, tensor, compute, *arrays) -> None:
        entry = self._pending.get(tensor)
        if entry is None:
            self._pending[tensor] = (compute, [arrays])
        else:
            entry[1].append(arrays)

    def extend(self, other: WeightGradStash) -> None:
        """Take `other`'s entries after this stash's own (flushing one merged stash computes one product per
        parameter for both); `other` is left empty."""
        for tensor, (compute, calls) in other._pending.items():
            entry = self._pending.get(tensor)
            if entry is None:
                self._pending[tensor] = (compute, calls)
            else:
                entry[1].extend(calls)
        other._pending = {}

    def __len__(self) -> int:
        """How many parameters have gradients waiting."""
        return len(self._pending)

    @property
    def nbytes(self) -> int:
        """Bytes of the distinct arrays held for the flush (an array stashed for two parameters, or a
        view of another, counts once; a view counts its own extent)."""
        seen, total = set(), 0
        for _, calls in self._pending.values():
            for arrays in calls:
                for a in arrays:
                    key = (_address(a), a.nbytes)
                    if key not in seen:
                        seen.add(key)
                        total += a.nbytes
        return total

    def flush(self) -> None:
        """Compute every waiting gradient, add it into its tensor's `.grad` and fire the tensor's
        post-accumulate hooks, in the order the tensors were first stashed. Leaves the stash empty."""
        pending, self._pending = self._pending, {}
        # a Linear's bias, stashed right after its weight, joins the same output gradients: join them
        # once, keeping only the previous parameter's joined arrays alive
        previous = {}
        for tensor, (compute, calls) in pending.items():
            if len(calls) == 1:
                args = calls[0]
            else:
                args, joined = [], {}
                for i in range(len(calls[0])):
                    parts = [c[i] for c in calls]
                    key = tuple(id(a) for a in parts)
                    joined[key] = previous.get(key)
                    if joined[key] is None:
                        joined[key] = backend.get_array_module(parts[0]).concatenate(parts)
                    args.append(joined[key])
                previous = joined
            _accumulate_leaf(tensor, compute(*args), False)


def current() -> WeightGradStash | None:
    """The stash a Function's backward defers its parameters' gradients into, or None (compute them)."""
    return _active


@contextmanager
def defer_weight_grads(stash: WeightGradStash | None = None):
    """Within the block, backwards defer the gradients of the parameters of Functions that support it
    (Linear's weight and bias) into `stash`. Without a stash, a new one is made and flushed when
    the block ends normally; a stash you pass is yours to flush."""
    global _active
    own = stash is None
    stash = WeightGradStash() if own else stash
    outer, _active = _active, stash
    try:
        yield stash
    finally:
        _active = outer
    if own:
        stash.flush()


@contextmanager
def computing_all_grads():
    """Within the block nothing is deferred (autograd.grad runs its walk in one)."""
    global _active
    outer, _active = _active, None
    try:
        yield
    finally:
        _active = outer


def _address(a) -> int:
    """Where an array's data starts (numpy or cupy)."""
    return a.__array_interface__["data"][0] if isinstance(a, numpy.ndarray) else a.data.ptr
