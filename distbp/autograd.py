"""Tensor and reverse-mode autograd.

A `Tensor` wraps an ndarray (`.data`). Every op is a `Function` subclass whose `forward` works on
arrays and whose `backward` maps the output's gradient `gy` to one gradient per input (None where
an input needs none). `Function.apply` runs forward and, when grad mode is on and an input requires
grad, records the node on the output tensor (`_ctx`) — a define-by-run graph.

`Tensor.backward()` walks that graph once in reverse topological order, sums gradients of
tensors used more than once, writes `.grad` of leaves, fires post-accumulate hooks the moment a
leaf's gradient is final (the data-parallel layer starts its allreduce there), and frees the graph.
Inspired by micrograd (karpathy) and early tinygrad; ctx-style backward as in Chainer/PyTorch.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy

from . import backend

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        global _grad_enabled
        self.prev, _grad_enabled = _grad_enabled, self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev
        return False


def no_grad():
    """Context manager / decorator: ops inside record no graph (inference, optimizer updates)."""
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)


class Function:
    """One differentiable op. Subclasses implement `forward(self, *arrays, **kw)` -> array and
    `backward(self, gy)` -> tuple of input gradients. Save what backward needs on `self`.
    `self.needs_input_grad[i]` says whether input i wants a gradient (skip computing it if not)."""

    parents: tuple = ()                 # per input: the tensor if it wants a gradient, else None
    needs_input_grad: list | tuple = ()  # one bool per input, set by apply()

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **kwargs) -> Tensor:
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
        if out.__class__ in _NUMPY_SCALARS:  # numpy gives 0-d results as scalars; .data is always an array
            out = numpy.asarray(out)
        t = _new_object(Tensor)  # Tensor._wrap, inlined
        t.data = out
        t.grad = t._post_hooks = None
        t._retains_grad = False
        if record and _grad_enabled:
            ctx.parents = parents
            t._ctx = ctx
            t.requires_grad = True
        else:
            t._ctx = None
            t.requires_grad = False
        return t


_new_object = object.__new__
_NUMPY_SCALARS = frozenset(numpy.sctypeDict.values())


class _Freed(Function):
    """Stands in for a node whose saved arrays were released by an earlier backward."""

    def backward(self, gy):
        raise RuntimeError("Trying to backward through the graph a second time; "
                           "pass retain_graph=True to the first backward() if you need to")


_FREED = _Freed()


def unbroadcast(g, shape):
    """Sum a broadcast gradient back down to `shape` (numpy broadcasting run in reverse)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _as_array(value, like=None):
    """Array for a non-tensor operand. Python numbers stay scalars so float32 stays float32."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, numbers.Number):
        return value
    xp = backend.get_array_module(like) if like is not None else numpy
    arr = xp.asarray(value)
    if like is not None and arr.dtype.kind in "fiub" and like.dtype.kind == "f":
        arr = arr.astype(like.dtype, copy=False)
    return arr


# ----- operators and methods -----
class _TensorOps:
    """Tensor's operators and methods, each one call into distbp.ops (bound at the bottom of
    this file, since the ops import this module)."""

    __slots__ = ()

    def __add__(self, o): return _ops.add(self, o)
    def __radd__(self, o): return _ops.add(self, o)
    def __sub__(self, o): return _ops.sub(self, o)
    def __rsub__(self, o): return _ops.sub(_ops.elementwise._tensorish(o, self), self)
    def __mul__(self, o): return _ops.mul(self, o)
    def __rmul__(self, o): return _ops.mul(self, o)
    def __truediv__(self, o): return _ops.div(self, o)
    def __rtruediv__(self, o): return _ops.div(_ops.elementwise._tensorish(o, self), self)
    def __pow__(self, o): return _ops.pow(self, o)
    def __rpow__(self, o): return _ops.pow(_ops.elementwise._tensorish(o, self), self)
    def __neg__(self): return _ops.neg(self)
    def __matmul__(self, o): return _ops.matmul(self, o)
    def __rmatmul__(self, o): return _ops.matmul(_ops.elementwise._tensorish(o, self), self)
    def __getitem__(self, index): return _ops.getitem(self, index)
    def __abs__(self): return _ops.abs(self)

    # comparisons give plain boolean tensors (no gradient), as in PyTorch
    def __lt__(self, o): return Tensor._wrap(self.data < _as_array(o, self.data))
    def __le__(self, o): return Tensor._wrap(self.data <= _as_array(o, self.data))
    def __gt__(self, o): return Tensor._wrap(self.data > _as_array(o, self.data))
    def __ge__(self, o): return Tensor._wrap(self.data >= _as_array(o, self.data))
    def __eq__(self, o): return Tensor._wrap(self.data == _as_array(o, self.data))
    def __ne__(self, o): return Tensor._wrap(self.data != _as_array(o, self.data))

    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def abs(self): return _ops.abs(self)
    def relu(self): return _ops.relu(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def tanh(self): return _ops.tanh(self)
    def clip(self, min=None, max=None): return _ops.clip(self, min, max)
    clamp = clip
    def softmax(self, dim=-1): return _ops.softmax(self, dim)
    def log_softmax(self, dim=-1): return _ops.log_softmax(self, dim)
    def sum(self, dim=None, keepdim=False, *, axis=None): return _ops.sum(self, dim, keepdim, axis=axis)
    def mean(self, dim=None, keepdim=False, *, axis=None): return _ops.mean(self, dim, keepdim, axis=axis)
    def max(self, dim=None, keepdim=False, *, axis=None): return _ops.max(self, dim, keepdim, axis=axis)
    def amax(self, dim=None, keepdim=False): return _ops.amax(self, dim, keepdim)
    def var(self, dim=None, unbiased=True, keepdim=False, *, axis=None):
        return _ops.var(self, dim, unbiased, keepdim, axis=axis)
    def std(self, dim=None, unbiased=True, keepdim=False, *, axis=None):
        return _ops.std(self, dim, unbiased, keepdim, axis=axis)
    def reshape(self, *shape): return _ops.reshape(self, *shape)
    view = reshape
    def flatten(self, start_dim=0, end_dim=-1): return _ops.flatten(self, start_dim, end_dim)
    def permute(self, *dims): return _ops.permute(self, *dims)
    def transpose(self, dim0, dim1): return _ops.transpose(self, dim0, dim1)
    def unsqueeze(self, dim): return _ops.unsqueeze(self, dim)
    def squeeze(self, dim=None): return _ops.squeeze(self, dim)
    T = property(lambda self: _ops.transpose(self))

    def argmax(self, dim=None, keepdim=False):
        idx = self.data.argmax(axis=dim)
        if keepdim and dim is not None:
            idx = backend.get_array_module(idx).expand_dims(idx, dim)
        return Tensor._wrap(idx)


class Tensor(_TensorOps):
    """An ndarray plus what autograd needs. See shared/API.md for the public surface."""

    __slots__ = ("__weakref__", "_ctx", "_post_hooks", "_retains_grad", "data", "grad", "requires_grad")
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__ instead of numpy's loop

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if not backend.is_array(data):
            arr = numpy.asarray(data)
            # Python floats become the default float dtype, as torch.tensor([1.0]) is float32.
            if dtype is None and arr.dtype == numpy.float64 and not isinstance(data, numpy.generic):
                arr = arr.astype(backend.get_default_dtype())
            data = arr
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._post_hooks = None
        self._retains_grad = False

    @staticmethod
    def _wrap(data, ctx=None):
        # Fast path for op outputs: skips __init__'s conversions.
        t = _new_object(Tensor)
        t.data = data
        t.grad = None
        t.requires_grad = ctx is not None
        t._ctx = ctx
        t._post_hooks = None
        t._retains_grad = False
        return t

    # ----- properties -----
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self):
        return len(self.data)

    def numpy(self) -> numpy.ndarray:
        """The data as a host numpy array (a copy only when it lives on the GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.numpy().item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self) -> Tensor:
        return Tensor._wrap(self.data)

    def to(self, device=None, dtype=None) -> Tensor:
        data = self.data if device is None else backend.to_device(self.data, device)
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        if data is self.data:
            return self
        from .ops.elementwise import Cast  # cast/move keeps the graph
        return Cast.apply(self, data=data)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=numpy.float32)

    def double(self):
        return self.to(dtype=numpy.float64)

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad_ can only change leaf tensors; use detach() first")
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating point tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = flag
        return self

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = numpy.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}{dev}{grad})"

    __hash__ = object.__hash__  # identity hash (== is elementwise); C slot, cheap in dict lookups

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError("the truth value of a tensor with more than one element is ambiguous")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    # ----- hooks -----
    def register_post_accumulate_grad_hook(self, hook):
        """Call hook(tensor) right after this leaf's .grad is final in a backward pass
        (PyTorch's name). Returns a handle with .remove()."""
        if not self.is_leaf:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        return _HookHandle(self._post_hooks, hook)

    def retain_grad(self) -> None:
        """Keep .grad of this non-leaf tensor after backward (leaves always keep theirs)."""
        self._retains_grad = True

    # ----- backward -----
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        data = self.data
        if gradient is None:
            if data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs; "
                                   f"pass gradient= for a tensor of shape {self.shape}")
            gradient = _seed(data)
        else:
            gradient = _as_array(gradient, data)
            if numpy.shape(gradient) != data.shape:
                raise RuntimeError(f"gradient has shape {numpy.shape(gradient)}, but the tensor has shape "
                                   f"{data.shape}; pass one gradient element per tensor element")
            if not backend.is_array(gradient):  # a Python number for a 0-d tensor
                gradient = backend.get_array_module(data).asarray(gradient, dtype=data.dtype)
        try:
            _backward_pass(self, gradient, retain_graph)
        finally:
            while _end_callbacks:
                _end_callbacks.pop(0)()


class _HookHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


_end_callbacks = []


def queue_callback(fn) -> None:
    """Run fn() once when the next (or current) backward pass finishes. The data-parallel wrapper
    queues one in forward to wait for its last allreduces (torch's engine.queue_callback)."""
    _end_callbacks.append(fn)


_SEEDS = {}  # (dtype, shape) -> read-only numpy array of ones: the implicit gradient of a scalar


def _seed(data):
    """The gradient 1 for a one-element tensor. On the CPU one cached read-only array per dtype and
    shape (an op writing into its gy would be a bug, and a leaf handed the seed copies it, as
    `given` below says); on a GPU a fresh one on the tensor's device."""
    if data.__class__ is not numpy.ndarray:
        return backend.get_array_module(data).ones(data.shape, dtype=data.dtype)
    key = (data.dtype, data.shape)
    seed = _SEEDS.get(key)
    if seed is None:
        seed = _SEEDS[key] = numpy.ones(data.shape, dtype=data.dtype)
        seed.flags.writeable = False
    return seed


def _count_uses(root):
    """For every tensor below root that wants a gradient: how many graph edges lead into it.
    A tensor is done (its gradient complete) when that many gradients have arrived."""
    uses = {}
    stack = [root]
    while stack:
        for p in stack.pop()._ctx.parents:
            if p is None:
                continue
            if p in uses:
                uses[p] += 1
            else:
                uses[p] = 1
                if p._ctx is not None:
                    stack.append(p)  # first visit of a non-leaf: walk its inputs once
    return uses


def _backward_pass(root, gradient, retain_graph):
    # `given`: id of each array handed out as a .grad in this pass -> the tensor it went to, so no
    # two leaves share one array (an in-place allreduce or zero_ on one would change the other).
    # An id counts only while that tensor's .grad still is the array: a hook may drop a .grad at once
    # (DDP moves it into its bucket), and a later array at the same address is then a different one
    # (mistaking it cost DDP three needless copies a step). The caller's own gradient array counts
    # as handed out: a leaf must not alias it either.
    given = {id(gradient): _Holder(gradient)}
    if root._ctx is None:  # backward() on a leaf: its gradient is the seed itself
        _accumulate_leaf(root, gradient, given)
        return
    # Kahn's algorithm on the reversed graph: a tensor is processed once all its consumers have sent
    # their gradient, so each node runs once, with its summed gradient, and a leaf's hook fires the
    # moment its last gradient arrives (the data-parallel layer starts that allreduce right then).
    uses = _count_uses(root)
    partial = {}  # tensor -> gradient summed so far, only for tensors with gradients still to come
    ready = [(root, gradient)]
    while ready:
        t, g = ready.pop()
        ctx = t._ctx
        parents = ctx.parents
        if g is None:  # no gradient reached t (every path returned None): still release its inputs
            gins = (None,) * len(parents)
        else:
            if t._retains_grad:
                t.grad = g.copy() if t.grad is None else t.grad + g
            gins = ctx.backward(g)
            if gins.__class__ is not tuple:  # a bare array for a one-input op is fine, as in torch
                gins = tuple(gins) if isinstance(gins, list) else (gins,)
            if len(gins) != len(parents):  # zip would silently drop the missing ones
                raise RuntimeError(f"{type(ctx).__name__}.backward returned {len(gins)} gradients for "
                                   f"{len(parents)} inputs; return one per input (None where unused)")
        if not retain_graph:
            t._ctx = _FREED  # drops ctx and the arrays it saved once this loop moves on
        for p, gp in zip(parents, gins):
            if p is None:
                continue
            n = uses[p]
            if n != 1:  # more gradients will arrive for p: keep the running sum
                uses[p] = n - 1
                if gp is not None:
                    prev = partial.get(p)
                    partial[p] = gp if prev is None else prev + gp
                continue
            if partial:  # p's last gradient: add what arrived earlier, if p was used more than once
                prev = partial.pop(p, None)
                if prev is not None:
                    gp = prev if gp is None else prev + gp
            if p._ctx is not None:
                ready.append((p, gp))
            elif gp is not None:
                _accumulate_leaf(p, gp, given)


class _Holder:
    """Stands for the caller in `given`: its .grad is the gradient passed to backward()."""

    __slots__ = ("grad",)

    def __init__(self, grad):
        self.grad = grad


def _accumulate_leaf(p, g, given):
    data = p.data
    if g.__class__ is not data.__class__ or g.dtype is not data.dtype or g.shape != data.shape:
        g = _conform(g, data)
    if p.grad is None:
        # An op may hand the same array to two inputs (Add returns gy for both), or a view (a
        # read-only broadcast, a slice of gy): own a copy then. A fresh owned array is kept as is.
        owner = given.get(id(g))
        if g.base is not None or (owner is not None and owner.grad is g):
            g = g.copy()
        p.grad = g
        given[id(g)] = p
    else:
        p.grad = p.grad + g
    if p._post_hooks:
        for hook in tuple(p._post_hooks):
            hook(p)


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


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Wrap an array (numpy/cupy), list or number; lists of floats get the default dtype."""
    t = Tensor(data, requires_grad=False, dtype=dtype)
    if device is not None:
        t.data = backend.to_device(t.data, device)
    if requires_grad:
        t.requires_grad_(True)
    return t


from . import ops as _ops
