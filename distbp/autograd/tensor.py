"""Tensor: an ndarray (`.data`) plus what autograd needs (`.grad`, `requires_grad`, the node `_ctx`
that made it, hooks).

This module imports no op. The arithmetic operators and the op methods (`+`, `@`, `x[i]`, `.sum()`,
`.reshape()`, `.to()`, ...) are attached by distbp.ops from one table (distbp/ops/tensor_methods.py),
so an op lives in one place and autograd sits below the ops. What stays here needs no op:
conversions, properties, comparisons (no gradient), hooks and `backward`.
"""
from __future__ import annotations

import numbers

import numpy

from .. import backend
from . import engine

_new_object = object.__new__


class Tensor:
    """An ndarray plus what autograd needs. `distbp.tensor(...)` is the usual way to make one."""

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

    # .to(device, dtype) is an op (it keeps the graph): attached by distbp.ops
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

    # comparisons give plain boolean tensors (no gradient), as in PyTorch
    def __lt__(self, o): return Tensor._wrap(self.data < _as_array(o, self.data))
    def __le__(self, o): return Tensor._wrap(self.data <= _as_array(o, self.data))
    def __gt__(self, o): return Tensor._wrap(self.data > _as_array(o, self.data))
    def __ge__(self, o): return Tensor._wrap(self.data >= _as_array(o, self.data))
    def __eq__(self, o): return Tensor._wrap(self.data == _as_array(o, self.data))
    def __ne__(self, o): return Tensor._wrap(self.data != _as_array(o, self.data))

    def argmax(self, dim=None, keepdim=False):
        idx = self.data.argmax(axis=dim)
        if keepdim and dim is not None:
            idx = backend.get_array_module(idx).expand_dims(idx, dim)
        return Tensor._wrap(idx)

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
    def backward(self, gradient=None, retain_graph=None, inputs=None) -> None:
        """Gradients of this tensor with respect to the leaves below it, added into their .grad:
        distbp.autograd.backward(self, gradient, retain_graph, inputs=inputs)."""
        engine.run_backward((self,), (root_gradient(self, gradient),), retain_graph,
                            None if inputs is None else input_set(inputs))


class _HookHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


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


def root_gradient(t, gradient, i=0, name="gradient"):
    """The gradient a backward starts from at root `t` (the i-th root): `gradient` as an array of
    t's shape and dtype, or the implicit 1 of a one-element tensor when it is None."""
    if not t.requires_grad:
        raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
    data = t.data
    if gradient is None:
        if data.size != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs; "
                               f"pass {name}= for a tensor of shape {t.shape}")
        return engine.seed(data)
    gradient = _as_array(gradient, data)
    if numpy.shape(gradient) != data.shape:
        raise RuntimeError(f"gradient has shape {numpy.shape(gradient)}, but the tensor has shape "
                           f"{data.shape}; pass one gradient element per tensor element")
    if not backend.is_array(gradient):  # a Python number for a 0-d tensor
        gradient = backend.get_array_module(data).asarray(gradient, dtype=data.dtype)
    return gradient


def input_set(inputs) -> set:
    """`inputs` of backward/grad (a tensor or a sequence of them) as a set; each must require grad."""
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if not inputs:
        raise RuntimeError("inputs must not be empty; pass None to mean every leaf")
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"element {i} of inputs is a {type(t).__name__}, not a Tensor")
        if not t.requires_grad:
            raise RuntimeError(f"element {i} of inputs does not require grad")
    return set(inputs)


def tensor(data, requires_grad: bool = False, dtype=None, device=None) -> Tensor:
    """Wrap an array (numpy/cupy), list or number; lists of floats get the default dtype."""
    t = Tensor(data, requires_grad=False, dtype=dtype)
    if device is not None:
        t.data = backend.to_device(t.data, device)
    if requires_grad:
        t.requires_grad_(True)
    return t
