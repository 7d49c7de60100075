"""Function: one differentiable op, and `Function.apply`, which runs it and records the graph.

A subclass implements `forward(self, *arrays, **kwargs)` on arrays and `backward(self, *grad_outputs)`
(see Function). `apply` unwraps tensor inputs, runs forward and, when grad mode is on and an input
requires grad, records the node on its output tensors (`_ctx`): a define-by-run graph.

A Function with several outputs is recorded as one shared node behind its outputs: each output
tensor's node (`_Output`) sends its gradient, in its slot, to a hidden tensor whose node (`_Node`)
runs the Function's backward once with every output's gradient. The engine needs nothing special
for it: the hidden tensor is one more tensor whose gradients (the slots) are summed.
"""
from __future__ import annotations

import numpy

from .. import backend
from . import grad_mode
from .tensor import Tensor

_new_object = object.__new__
_ndarray = numpy.ndarray
_NUMPY_SCALARS = frozenset(numpy.sctypeDict.values())


class Function:
    """One differentiable op.

    forward(self, *arrays, **kwargs): arrays in (one per `apply` input, non-tensor inputs as given);
        returns one array, or a tuple of arrays for several outputs. Save on `self` whatever
        backward needs. `self.needs_input_grad[i]` says whether input i wants a gradient.
        `self.mark_non_differentiable(*arrays)` marks outputs that carry no gradient (indices).
    backward(self, *grad_outputs): one gradient per output, in forward's order. An output that got
        no gradient in this backward receives zeros of its shape and dtype (torch's default,
        materialize_grads); a non-differentiable output always receives None. Returns one gradient
        per input (None where not needed; a bare array for a one-input op). It must never write
        into a grad_output (another branch may hold the same array), and must return a distinct
        array per input, except that it may return a grad_output itself, for several inputs even.
    """

    parents: tuple | list = ()           # per input: the tensor if it wants a gradient, else None
    needs_input_grad: list | tuple = ()  # one bool per input, set by apply()
    _non_differentiable: tuple = ()      # output arrays that carry no gradient

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, *grad_outputs):
        raise NotImplementedError

    def mark_non_differentiable(self, *arrays) -> None:
        """Call in forward with outputs (of a multi-output Function) that carry no gradient, as
        torch's: their tensors are leaves that do not require grad, and backward receives None for them."""
        self._non_differentiable = arrays

    @classmethod
    def apply(cls, *inputs, **kwargs):
        """Run the op on tensors (or plain values); keyword arguments go to forward. Returns a
        Tensor, or a tuple of Tensors when forward returns a tuple."""
        ctx = cls()
        # One plain loop, no comprehensions, no zip: this runs for every op of every step, and an
        # MLP step's Python overhead is counted in hundreds of these small costs.
        arrays, needs, parents, record = [], [], [], False
        for x in inputs:
            if isinstance(x, Tensor):
                arrays.append(x.data)
                if x.requires_grad:
                    record = True
                    needs.append(True)
                    parents.append(x)
                    continue
                needs.append(False)
            else:
                arrays.append(x)
                needs.append(False)
            parents.append(None)
        ctx.needs_input_grad = needs
        out = ctx.forward(*arrays, **kwargs) if kwargs else ctx.forward(*arrays)
        if out.__class__ is not _ndarray:
            if out.__class__ is tuple:
                return _outputs(ctx, out, parents, record and grad_mode.enabled)
            if out.__class__ in _NUMPY_SCALARS:  # numpy gives 0-d results as scalars; .data is an array
                out = numpy.asarray(out)
        t = _new_object(Tensor)  # Tensor._wrap, inlined
        t.data = out
        t.grad = t._post_hooks = None
        t._retains_grad = False
        if record and grad_mode.enabled:
            ctx.parents = parents
            t._ctx = ctx
            t.requires_grad = True
        else:
            t._ctx = None
            t.requires_grad = False
        return t


def _outputs(ctx, outs, parents, record) -> tuple:
    """The output tensors of a Function whose forward returned a tuple of arrays."""
    arrays = [numpy.asarray(a) if a.__class__ in _NUMPY_SCALARS else a for a in outs]
    marked = ctx._non_differentiable
    differentiable = [not any(a is m for m in marked) for a in arrays]
    if not (record and any(differentiable)):
        return tuple(Tensor._wrap(a) for a in arrays)
    ctx.parents = parents
    specs = [(a.shape, a.dtype) if d else None for a, d in zip(arrays, differentiable)]
    packed = Tensor._wrap(None, _Node(ctx, specs))
    n = len(arrays)
    return tuple(Tensor._wrap(a, _Output(packed, i, n)) if d else Tensor._wrap(a)
                 for i, (a, d) in enumerate(zip(arrays, differentiable)))


class _Slots:
    """The gradients of a multi-output Function's outputs, one slot each (None until one arrives).
    The engine sums a tensor's gradients with `+`: here that fills the other's slots in."""

    __slots__ = ("grads",)

    def __init__(self, grads):
        self.grads = grads

    def __add__(self, other):
        mine = self.grads
        for i, g in enumerate(other.grads):
            if g is not None:
                mine[i] = g if mine[i] is None else mine[i] + g
        return self


class _Output:
    """The node of output `index` of a multi-output Function: sends its gradient, in its slot, to
    the hidden tensor that stands for the Function (its only parent)."""

    __slots__ = ("index", "n", "parents")

    def __init__(self, packed, index, n):
        self.parents, self.index, self.n = (packed,), index, n

    def backward(self, g):
        grads = [None] * self.n
        grads[self.index] = g
        return (_Slots(grads),)


class _Node:
    """The node of the hidden tensor: runs the Function's backward once, with every output's
    gradient (zeros where none arrived, None for non-differentiable outputs)."""

    __slots__ = ("fn", "parents", "specs")

    def __init__(self, fn, specs):
        self.fn, self.parents, self.specs = fn, fn.parents, specs

    def backward(self, slots):
        grads = slots.grads
        if any(g is None for g in grads):  # not `None in grads`: that compares arrays with ==
            xp = backend.get_array_module(*[g for g in grads if g is not None])
            for i, spec in enumerate(self.specs):
                if grads[i] is None and spec is not None:
                    grads[i] = xp.zeros(spec[0], dtype=spec[1])
        return self.fn.backward(*grads)


def unbroadcast(g, shape):
    """Sum a broadcast gradient back down to `shape` (numpy broadcasting run in reverse)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
