"""Reductions (sum, mean, max, var) and the softmax family, over any axes."""
from __future__ import annotations

import builtins
from collections import namedtuple

from ..autograd import Function
from ..backend import get_array_module


def _axes(dim, ndim):
    """Normalise dim (None, int or tuple, negatives allowed) to a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted(d % ndim if ndim else 0 for d in dims))


def _expand(g, shape, axes, keepdim):
    """Broadcast a reduced gradient back over the reduced axes."""
    xp = get_array_module(g)
    if not keepdim:
        g = xp.expand_dims(g, axes) if axes else g
    return xp.broadcast_to(g, shape)


class Sum(Function):
    def forward(self, x, axes=(), keepdim=False):
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim)

    def backward(self, gy):
        return (_expand(gy, self.shape, self.axes, self.keepdim),)


class Mean(Function):
    def forward(self, x, axes=(), keepdim=False):
        self.shape, self.axes, self.keepdim = x.shape, axes, keepdim
        self.n = 1
        for a in axes:
            self.n *= x.shape[a]
        return x.mean(axis=axes, keepdims=keepdim)

    def backward(self, gy):
        return (_expand(gy / self.n, self.shape, self.axes, self.keepdim),)


class Amax(Function):
    """Max over axes; ties share the gradient evenly (torch.amax's rule)."""

    def forward(self, x, axes=(), keepdim=False):
        self.axes, self.keepdim = axes, keepdim
        y = x.max(axis=axes, keepdims=True)
        mask = x == y
        self.mask = mask / mask.sum(axis=axes, keepdims=True)
        return y if keepdim else y.reshape([n for i, n in enumerate(x.shape) if i not in axes])

    def backward(self, gy):
        if not self.keepdim:
            gy = get_array_module(gy).expand_dims(gy, self.axes)
        return ((gy * self.mask).astype(gy.dtype, copy=False),)


class Var(Function):
    def forward(self, x, axes=(), correction=1, keepdim=False):
        self.axes, self.keepdim = axes, keepdim
        n = 1
        for a in axes:
            n *= x.shape[a]
        self.centered = x - x.mean(axis=axes, keepdims=True)
        self.denom = builtins.max(n - correction, 0)  # this module's max() is the op
        return (self.centered * self.centered).sum(axis=axes, keepdims=keepdim) / self.denom

    def backward(self, gy):
        if not self.keepdim:
            gy = get_array_module(gy).expand_dims(gy, self.axes)
        return (gy * (2 / self.denom) * self.centered,)


class Softmax(Function):
    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        e = xp.exp(x - x.max(axis=axis, keepdims=True))
        self.y = e / e.sum(axis=axis, keepdims=True)
        return self.y

    def backward(self, gy):
        y = self.y
        return (y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    def forward(self, x, axis=-1):
        xp = get_array_module(x)
        self.axis = axis
        shifted = x - x.max(axis=axis, keepdims=True)
        self.y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        return (gy - xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True),)


def sum(x, dim=None, keepdim=False, *, axis=None):
    dim = axis if axis is not None else dim
    return Sum.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


def mean(x, dim=None, keepdim=False, *, axis=None):
    dim = axis if axis is not None else dim
    return Mean.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


def amax(x, dim=None, keepdim=False, *, axis=None):
    dim = axis if axis is not None else dim
    return Amax.apply(x, axes=_axes(dim, x.ndim), keepdim=keepdim)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def max(x, dim=None, keepdim=False, *, axis=None):
    """torch.max: the overall maximum with no dim; (values, indices) along one dim."""
    dim = axis if axis is not None else dim
    if dim is None:
        return amax(x)
    from ..autograd import Tensor
    idx = x.data.argmax(axis=dim)
    if keepdim:
        idx = get_array_module(idx).expand_dims(idx, dim)
    return MaxResult(amax(x, dim, keepdim), Tensor(idx))


def var(x, dim=None, unbiased=True, keepdim=False, *, axis=None, correction=None):
    dim = axis if axis is not None else dim
    corr = (1 if unbiased else 0) if correction is None else correction
    return Var.apply(x, axes=_axes(dim, x.ndim), correction=corr, keepdim=keepdim)


def std(x, dim=None, unbiased=True, keepdim=False, *, axis=None):
    return var(x, dim, unbiased, keepdim, axis=axis) ** 0.5


def softmax(x, dim=-1):
    return Softmax.apply(x, axis=dim)


def log_softmax(x, dim=-1):
    return LogSoftmax.apply(x, axis=dim)
