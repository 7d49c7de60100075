"""Sliding windows over the last two axes: the geometry convolution and pooling share.

A 1-D input (N, C, L) is run as a 2-D one of height 1, so each op has one implementation; a 1-d
op's arguments become pairs with 1 (kernel, stride, dilation) or 0 (padding) for the height.
Every op loops over the kh*kw window offsets, each a strided view of the padded input (`Window2d.at`):
no window array is materialised.
"""
from __future__ import annotations

from typing import NamedTuple

from ..backend import get_array_module
from .shape import reshape  # adds / removes the batch axis of unbatched inputs, differentiably


class Window2d(NamedTuple):
    """Where the windows of an op over an (N, C, H, W) input lie: each padding is counted on its own
    side (conv's padding='same' and pooling's ceil_mode pad more after than before)."""

    n: int
    c: int
    h: int
    w: int
    kh: int         # kernel
    kw: int
    sh: int         # stride
    sw: int
    dh: int         # dilation
    dw: int
    top: int        # zero (or -inf) padding on each side
    bottom: int
    left: int
    right: int
    ho: int         # output size
    wo: int

    def at(self, a, k):
        """The view of the padded array `a` that window offset k (row-major over the kernel) sees at
        every output position: shape (N, C, Ho, Wo)."""
        i, j = k // self.kw * self.dh, k % self.kw * self.dw
        return a[:, :, i:i + self.sh * (self.ho - 1) + 1:self.sh, j:j + self.sw * (self.wo - 1) + 1:self.sw]

    def pad(self, x, value=0.0):
        """x (N, C, H, W) padded on every side by this geometry's padding."""
        if self.top == self.bottom == self.left == self.right == 0:
            return x
        widths = ((0, 0), (0, 0), (self.top, self.bottom), (self.left, self.right))
        return get_array_module(x).pad(x, widths, constant_values=value)

    def zeros_padded(self, xp, dtype):
        """A zero array of the padded input's shape, for a gradient to be summed into."""
        return xp.zeros((self.n, self.c, self.h + self.top + self.bottom, self.w + self.left + self.right),
                        dtype=dtype)

    def unpad(self, a):
        return a[:, :, self.top:self.top + self.h, self.left:self.left + self.w]


def pair(v, name: str) -> tuple:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2 or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t


def _one(v, name):
    v = v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v
    if not isinstance(v, int):
        raise TypeError(f"{name} must be an int for a 1-d op, got {v!r}")
    return v


def nd_arg(v, name, nd, fill):
    """A 2-d op's int or pair as a pair; a 1-d op's int as (fill, v), for its height-1 2-d form."""
    return (fill, _one(v, name)) if nd == 1 else pair(v, name)


def sides(p) -> tuple:
    """A padding as its (before, after) pair: an int pads both sides alike."""
    return p if isinstance(p, tuple) else (p, p)


def check_geometry(stride, padding, what):
    if min(stride) < 1:
        raise ValueError(f"{what}: stride must be positive, got {stride}")
    if min(min(sides(p)) for p in padding) < 0:  # ints, or conv's (before, after) pairs
        raise ValueError(f"{what}: padding must be non-negative, got {padding}")


def check_dilation(dilation, what):
    if min(dilation) < 1:
        raise ValueError(f"{what}: dilation must be positive, got {dilation}")


def to_2d(x, name: str):
    """(N, C, L) -> (N, C, 1, L); (N, C, H, W) unchanged. Returns the array and whether it was 1-D."""
    if x.ndim == 3:
        return x[:, :, None, :], True
    if x.ndim != 4:
        raise ValueError(f"{name} expects a (N, C, L) or (N, C, H, W) input, got shape {x.shape}")
    return x, False


def from_2d(y, was_1d):
    """Undo to_2d on a result or gradient: drop the height axis of a 1-D op."""
    return y[:, :, 0, :] if was_1d else y


def batched(x, nd, what):
    """PyTorch's unbatched inputs, (C, L) for a 1-d op or (C, H, W) for a 2-d one, get a batch axis of
    one (a differentiable reshape; `unbatched` removes it from the result). Returns (x, unbatched)."""
    if x.ndim == nd + 1:
        return reshape(x, (1, *x.shape)), True
    if x.ndim != nd + 2:
        raise ValueError(f"{what}: expected a {nd + 1}-D (unbatched) or {nd + 2}-D (batched) input, "
                         f"got shape {tuple(x.shape)}")
    return x, False


def unbatched(y):
    return reshape(y, y.shape[1:])
