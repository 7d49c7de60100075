"""Ops that move elements without arithmetic: reshape, transpose, indexing, concat, stack, pad."""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import get_array_module, scatter_add


class Reshape(Function):
    def forward(self, x, shape=()):
        self.shape = x.shape
        return x.reshape(shape)

    def backward(self, gy):
        return (gy.reshape(self.shape),)


class Permute(Function):
    def forward(self, x, axes=None):
        self.axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % x.ndim for a in axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return (gy.transpose(inverse),)


def _is_basic(index):
    """True for ints, slices, None and Ellipsis only: then x[index] is a view with no repeats."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


class GetItem(Function):
    def forward(self, x, index=None):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        if _is_basic(self.index):
            gx[self.index] = gy
        else:  # advanced indexing may pick an element twice: sum, don't overwrite
            scatter_add(gx, self.index, gy)
        return (gx,)


class Concat(Function):
    def forward(self, *xs, axis=0):
        xp = get_array_module(*xs)
        self.axis = axis
        self.bounds = []
        start = 0
        for x in xs:
            self.bounds.append((start, start + x.shape[axis]))
            start += x.shape[axis]
        return xp.concatenate(xs, axis=axis)

    def backward(self, gy):
        grads = []
        for need, (lo, hi) in zip(self.needs_input_grad, self.bounds):
            if not need:
                grads.append(None)
                continue
            index = [slice(None)] * gy.ndim
            index[self.axis] = slice(lo, hi)
            grads.append(gy[tuple(index)])
        return tuple(grads)


class Stack(Function):
    def forward(self, *xs, axis=0):
        self.axis = axis
        return get_array_module(*xs).stack(xs, axis=axis)

    def backward(self, gy):
        xp = get_array_module(gy)
        parts = xp.moveaxis(gy, self.axis, 0)
        return tuple(p if need else None for p, need in zip(parts, self.needs_input_grad))


class Pad(Function):
    """Constant padding; `pad_width` is numpy's ((before, after), ...) for every axis."""

    def forward(self, x, pad_width=(), value=0.0):
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(pad_width, x.shape))
        return get_array_module(x).pad(x, pad_width, constant_values=value)

    def backward(self, gy):
        return (gy[self.slices],)


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(x, shape=shape)


def permute(x, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Permute.apply(x, axes=axes)


def transpose(x, dim0=None, dim1=None):
    """torch.transpose: swap two dims; with no dims, reverse them all (numpy's x.T)."""
    if dim0 is None:
        return Permute.apply(x, axes=None)
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Permute.apply(x, axes=tuple(axes))


def flatten(x, start_dim=0, end_dim=-1):
    """torch.flatten: dims start_dim..end_dim become one. As in torch, a 0-d input becomes shape (1,)
    and an input with nothing to flatten (one dim in the range) is returned itself, with no node."""
    shape = x.shape
    if not shape:
        return reshape(x, (1,))
    start, end = start_dim % len(shape), end_dim % len(shape)
    if start == end:
        return x
    n = 1
    for s in shape[start:end + 1]:
        n *= s
    return reshape(x, shape[:start] + (n,) + shape[end + 1:])


def unsqueeze(x, dim):
    shape = list(x.shape)
    shape.insert(dim % (len(shape) + 1), 1)
    return reshape(x, tuple(shape))


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    if x.shape[dim] != 1:
        return x
    shape = list(x.shape)
    del shape[dim]
    return reshape(x, tuple(shape))


def _index_arrays(index):
    """Unwrap tensors inside an index so numpy sees arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


def getitem(x, index):
    return GetItem.apply(x, index=_index_arrays(index))


def cat(tensors, dim=0):
    return Concat.apply(*tensors, axis=dim)


concatenate = cat


def stack(tensors, dim=0):
    return Stack.apply(*tensors, axis=dim)


def pad(x, pad, value=0.0):
    """torch.nn.functional.pad: `pad` lists (left, right) pairs starting from the LAST dim."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad must hold (before, after) pairs for at most {x.ndim} dims, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad.apply(x, pad_width=tuple(widths), value=value)
