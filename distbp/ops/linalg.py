"""Matrix products: batched matmul, and `linear` (x @ W.T + b) fused into one node."""
from __future__ import annotations

from ..autograd import Function, deferred
from .elementwise import _tensorish


def _sum_to(g, shape):
    """Sum leading batch dims that broadcasting added (matmul broadcasts batch dims)."""
    if g.shape == tuple(shape):
        return g
    from ..autograd import unbroadcast
    return unbroadcast(g, shape)


class MatMul(Function):
    """numpy.matmul semantics: 1-D operands are promoted and the added dim removed again."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        a, b = self.a, self.b
        na, nb = self.needs_input_grad
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # put back the dims matmul removed: b's column dim first, so vector . vector (gy of
        # shape ()) becomes (1, 1)
        g2 = gy
        if b.ndim == 1:
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        if na:
            ga = g2 @ b2.swapaxes(-1, -2)
            ga = _sum_to(ga, a2.shape).reshape(a.shape)
        if nb:
            gb = a2.swapaxes(-1, -2) @ g2
            gb = _sum_to(gb, b2.shape).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x @ W.T + b with W of shape (out, in), PyTorch's layout; b may be None. One node, so an
    MLP step costs the same few BLAS calls as hand-written NumPy."""

    def forward(self, x, w, b):  # b: the bias array, or None
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        nx, nw, nb = self.needs_input_grad  # nb is False when there is no bias
        x = self.x
        gx = gy @ self.w if nx else None
        gw = gb = None
        if x.ndim > 2:  # (..., in): fold batch dims for the weight gradient
            x = x.reshape(-1, x.shape[-1])
            gy = gy.reshape(-1, gy.shape[-1])
        stash = deferred.current()
        if stash is not None and x.ndim == 2:  # parameters (leaves) get their gradients at the flush
            _, w, b = self.parents
            if nw and w._ctx is None:
                stash.stash(w, _weight_grad, gy, x)
                nw = False
            if nb and b._ctx is None:
                stash.stash(b, _bias_grad, gy)
                nb = False
        if nw:
            gw = gy.T @ x
        if nb:
            gb = gy.sum(axis=0)
        return gx, gw, gb


def _weight_grad(gy, x):  # of all stashed rows at once (see autograd.deferred)
    return gy.T @ x


def _bias_grad(gy):
    return gy.sum(axis=0)


def matmul(a, b):
    return MatMul.apply(a, _tensorish(b, a))


def linear(x, weight, bias=None):
    return Linear.apply(x, weight, bias)
