"""The backward walk over the graph that Function.apply recorded.

`run_backward(roots, grads, ...)` walks the graph below one or more roots once, in reverse
topological order (Kahn's algorithm): a tensor is processed when every consumer has sent its
gradient, so each node's backward runs once, with its summed gradient, and a leaf is finished the
moment its last gradient arrives. Finishing a leaf adds into `.grad` and fires its post-accumulate
hooks at once (the data-parallel layer starts an allreduce there, while earlier layers are still
being differentiated). Nodes are released as the walk passes them unless `retain_graph`.

Who owns a gradient array: a leaf keeps the array it is handed as its `.grad`, except a view
(`base` is not None) or the very gradient the node that sent it received (passed through, as Add
does, so another branch or the caller may hold it): those are copied. With Functions returning a
distinct array per input (their own gy excepted), no two leaves share a `.grad` array and none
aliases the gradient the caller passed in, and a freshly computed gradient is never copied.

The engine knows tensors only by their attributes (`_ctx`, `grad`, `data`, `_post_hooks`,
`_retains_grad`) and nodes by `parents` and `backward`, so it imports neither Tensor nor Function.
"""
from __future__ import annotations

import numpy

from .. import backend


class _Freed:
    """Stands in for a node whose saved arrays were released by an earlier backward."""

    parents = ()

    def backward(self, *grads):
        raise RuntimeError("Trying to backward through the graph a second time; "
                           "pass retain_graph=True to the first backward() if you need to")


FREED = _Freed()

_SEEDS = {}  # (dtype, shape) -> read-only numpy array of ones: the implicit gradient of a scalar


def seed(data):
    """The gradient 1 for a one-element tensor. On the CPU one cached read-only array per dtype and
    shape (an op writing into its gy would be a bug, and a leaf handed the seed copies it: it is the
    caller's gradient); on a GPU a fresh one on the tensor's device."""
    if data.__class__ is not numpy.ndarray:
        return backend.get_array_module(data).ones(data.shape, dtype=data.dtype)
    key = (data.dtype, data.shape)
    s = _SEEDS.get(key)
    if s is None:
        s = _SEEDS[key] = numpy.ones(data.shape, dtype=data.dtype)
        s.flags.writeable = False
    return s


# ----- callbacks owned by the running backward call -----
_callbacks = None  # the callback list of the innermost backward call now running; None outside backward


def queue_callback(fn) -> None:
    """Run fn() once when the backward call now running ends, after every hook (torch's
    Variable._execution_engine.queue_callback). Only valid during backward (from a hook or a
    Function's backward); a nested backward started from a hook owns its own callbacks. The
    data-parallel gradient reducer queues its wait for the last allreduces here from its first gradient hook."""
    if _callbacks is None:
        raise RuntimeError("queue_callback can only be called while a backward pass runs "
                           "(from a gradient hook or a Function's backward)")
    _callbacks.append(fn)


def run_backward(roots, grads, retain_graph=False, inputs=None, grad_of=None) -> None:
    """Walk the graph below `roots`, the gradient of root i being grads[i] (an array of its shape).

    inputs: None, or a set of tensors; then only gradients on paths from the roots to them are
        computed, and only they receive one.
    grad_of: None to accumulate into `.grad` (backward); or a dict that receives {tensor: gradient}
        for each of `inputs` that got one, touching no `.grad` and firing no hook (autograd.grad).
    Callbacks queued during the walk run at its end, also when it raised."""
    global _callbacks
    outer, _callbacks = _callbacks, []  # a backward started by a hook gets its own, then the outer's are back
    try:
        if inputs is None:
            uses = _count_uses(roots, None)
            leaf_sink = _accumulate_leaf
        else:
            uses = _count_uses(roots, _on_paths_to(roots, inputs))
            leaf_sink = _accumulate_leaf if grad_of is None else _Capture(grad_of)
        for r in roots:
            if r._ctx is None:  # a leaf root would keep the caller's gradient: copy those now
                grads = [g.copy() if q._ctx is None and g is not None else g for q, g in zip(roots, grads)]
                break
        partial = {}  # tensor -> gradient summed so far, only for tensors with gradients still to come
        ready = [None]  # non-leaf tensors whose gradient is complete, with that gradient
        ready.pop()  # (capacity one: see _count_uses' stack)
        # Kahn's algorithm on the reversed graph: each round hands a node's input gradients on (the
        # first round, the roots' own); a tensor whose last gradient arrived is ready, a leaf is done.
        parents, gins, g = roots, grads, None
        while True:
            for p, gp in zip(parents, gins):
                if p is None:
                    continue
                n = uses[p]
                if n != 1:
                    if not n:  # off every path to `inputs`
                        continue
                    uses[p] = n - 1  # more gradients will arrive for p: keep the running sum
                    if gp is not None:
                        prev = partial.get(p)
                        if prev is not None:
                            partial[p] = prev + gp
                        elif gp is g and p._ctx is None:  # a leaf may end up with this one alone
                            partial[p] = gp.copy()
                        else:
                            partial[p] = gp
                    continue
                if partial:  # p's last gradient: add what arrived earlier, if p was used more than once
                    prev = partial.pop(p, None)
                    if prev is not None:
                        gp = prev if gp is None else prev + gp
                if p._ctx is not None:
                    ready.append((p, gp))
                elif gp is not None:
                    leaf_sink(p, gp, gp is g)
            if not ready:
                return
            t, g = ready.pop()
            ctx = t._ctx
            parents = ctx.parents
            if g is None:  # no gradient reached t (every path returned None): still release its inputs
                gins = (None,) * len(parents)
            else:
                if t._retains_grad and grad_of is None:
                    t.grad = g.copy() if t.grad is None else t.grad + g
                if inputs is not None and t in inputs:  # a non-leaf among `inputs`
                    if grad_of is not None:
                        grad_of[t] = g.copy()
                    elif not t._retains_grad:  # (if it does, it has just been given it)
                        t.grad = g.copy() if t.grad is None else t.grad + g
                gins = ctx.backward(g)
                if gins.__class__ is not tuple:  # a bare array for a one-input op is fine, as in torch
                    gins = tuple(gins) if isinstance(gins, list) else (gins,)
                if len(gins) != len(parents):  # zip would silently drop the missing ones
                    raise RuntimeError(f"{type(ctx).__name__}.backward returned {len(gins)} gradients for "
                                       f"{len(parents)} inputs; return one per input (None where unused)")
            if not retain_graph:
                t._ctx = FREED  # drops ctx and the arrays it saved once this loop moves on
    finally:
        try:
            callbacks = _callbacks
            while callbacks:
                callbacks.pop(0)()
        finally:
            _callbacks = outer


def _count_uses(roots, keep):
    """For every tensor below the roots that wants a gradient: how many gradients will reach it,
    one per graph edge into it and one per time it is a root. A tensor is done (its gradient
    complete) when that many have arrived. With `keep` (not None), a tensor not in it counts 0:
    it is off every path to the inputs, and the walk skips it."""
    uses = {}
    # Each item is the tensors to visit next: the roots first, then the inputs of each non-leaf on
    # its first visit. CPython frees a list's storage when a list grown from empty empties again, and
    # reallocates it on the next append; along a chain of nodes this stack goes 1, 0, 1, 0, ... so it
    # starts with room for exactly one item, which it keeps.
    stack = [roots]
    while stack:
        for p in stack.pop():
            if p is None:
                continue
            n = uses.get(p)
            if n:
                uses[p] = n + 1
            elif n is None:
                if keep is None or p in keep:
                    uses[p] = 1
                    ctx = p._ctx
                    if ctx is not None:
                        stack.append(ctx.parents)  # first visit of a non-leaf: walk its inputs once
                else:
                    uses[p] = 0
    return uses


def _on_paths_to(roots, targets) -> set:
    """The tensors on some path from a root down to one of `targets` (targets included)."""
    reaches = {}
    for root in roots:
        stack = [root]
        while stack:
            t = stack[-1]
            if t in reaches:
                stack.pop()
                continue
            ctx = t._ctx
            if ctx is None or ctx is FREED:  # a freed node is kept, so the walk reaches it and raises
                reaches[t] = ctx is FREED or t in targets
                stack.pop()
                continue
            below = [p for p in ctx.parents if p is not None and p not in reaches]
            if below:
                stack.extend(below)
                continue
            stack.pop()
            reaches[t] = t in targets or any(reaches[p] for p in ctx.parents if p is not None)
    return {t for t, on_path in reaches.items() if on_path}


def _accumulate_leaf(p, g, borrowed):
    data = p.data
    if g.__class__ is not data.__class__ or g.dtype is not data.dtype or g.shape != data.shape:
        g = _conform(g, data)
    if p.grad is None:
        # A view (a read-only broadcast, a slice of gy) or a gradient passed through from the
        # sending node's gy may be held elsewhere too: keep a copy of those.
        p.grad = g.copy() if borrowed or g.base is not None else g
    else:
        p.grad = p.grad + g
    if p._post_hooks:
        for hook in tuple(p._post_hooks):
            hook(p)


class _Capture:
    """The leaf sink of autograd.grad: records each leaf's gradient (owned, as a .grad would be)
    and touches no `.grad`."""

    def __init__(self, grad_of):
        self.grad_of = grad_of

    def __call__(self, p, g, borrowed):
        data = p.data
        if g.__class__ is not data.__class__ or g.dtype is not data.dtype or g.shape != data.shape:
            g = _conform(g, data)
        self.grad_of[p] = g.copy() if borrowed or g.base is not None else g


def _conform(g, data):
    """The rare cases of a leaf gradient: a numpy scalar (full reductions give one) becomes an
    array, another float dtype is cast; a wrong shape is a bug in the op that made it."""
    if isinstance(g, numpy.generic):
        g = numpy.array(g)
    if g.shape != data.shape:
        raise RuntimeError(f"gradient shape {g.shape} does not match tensor shape {data.shape}")
    if g.dtype != data.dtype:
        g = g.astype(data.dtype)
    return g
