"""Max and average pooling, 1-D and 2-D, with PyTorch's arguments: ceil_mode, max pooling's
dilation and return_indices, avg pooling's count_include_pad and divisor_override, and unbatched
inputs ((C, L), (C, H, W)). Each op loops over the window offsets (strided views, window.py);
the max keeps the FIRST maximum of a window, as PyTorch does."""
from __future__ import annotations

from ..autograd import Function
from ..backend import get_array_module
from .window import Window2d, batched, check_dilation, check_geometry, from_2d, nd_arg, to_2d, unbatched


def _pool_axis(size, k, s, p, d, ceil_mode, name):
    """PyTorch's pooling output size along one axis, and how far the last window reaches past the
    padded input (only with ceil_mode; that part is padded too, and never counts in a mean)."""
    if p > k // 2:
        raise ValueError(f"{name}: padding {p} must be at most half the kernel {k}")
    span = d * (k - 1) + 1
    out = (size + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window must start in the input or left padding
        out -= 1
    if out < 1:
        kernel = f"kernel {k}" if d == 1 else f"kernel {k} with dilation {d}"
        raise ValueError(f"{name}: {kernel} with padding {p} does not fit an input of size {size}")
    return out, max(0, (out - 1) * s + span - size - 2 * p)


def _pool_geometry(x4, kernel, stride, padding, dilation, ceil_mode, name) -> Window2d:
    """The windows of pooling over x4 (N, C, H, W): ceil_mode's extra reach pads bottom / right."""
    n, c, h, w = x4.shape
    (ho, eh), (wo, ew) = (_pool_axis(size, k, s, p, d, ceil_mode, name)
                          for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation))
    (ph, pw) = padding
    return Window2d(n, c, h, w, *kernel, *stride, *dilation, ph, ph + eh, pw, pw + ew, ho, wo)


class MaxPool2d(Function):
    """Max over each (dilated) window; padding is -inf. With return_indices, a second output (not
    differentiable): PyTorch's indices, the flat h*W + w position of each maximum in its channel
    plane of the unpadded input."""

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), ceil_mode=False,
                return_indices=False):
        xp = get_array_module(x)
        x4, self.was_1d = to_2d(x, "max_pool")
        geom = _pool_geometry(x4, kernel, stride, padding, dilation, ceil_mode, "max_pool")
        xpad = geom.pad(x4, value=-xp.inf)
        y = geom.at(xpad, 0).copy()
        kk = geom.kh * geom.kw
        # NOTE: masked copies (copyto(where=), where()) with a random mask were ~5x slower than
        # branch-free arithmetic here, so the argmax offset is updated as idx += better * (k - idx).
        itype = xp.int8 if kk < 128 else xp.int32
        idx = xp.zeros(y.shape, dtype=itype)
        step = xp.empty_like(idx)
        for k in range(1, kk):
            v = geom.at(xpad, k)
            better = (v > y).view(xp.int8).astype(itype, copy=False)  # strict: ties keep the first
            xp.maximum(y, v, out=y)
            xp.subtract(itype(k), idx, out=step)
            step *= better
            idx += step
        self.idx, self.geom = idx, geom
        y = from_2d(y, self.was_1d)
        if not return_indices:
            return y
        # window offset -> (row, column) of the unpadded input -> row * W + column
        off = idx.astype(xp.int64)  # int8 offsets times a large dilation would overflow
        row = (xp.arange(geom.ho) * geom.sh - geom.top)[:, None] + off // geom.kw * geom.dh
        col = xp.arange(geom.wo) * geom.sw - geom.left + off % geom.kw * geom.dw
        indices = from_2d(row * geom.w + col, self.was_1d)
        self.mark_non_differentiable(indices)
        return y, indices

    def backward(self, gy, g_indices=None):  # g_indices: None, the indices carry no gradient
        xp = get_array_module(gy)
        geom = self.geom
        g = gy.reshape(geom.n, geom.c, geom.ho, geom.wo)
        gxpad = geom.zeros_padded(xp, gy.dtype)
        # each input element in at most one window: write, don't add
        disjoint = geom.sh >= geom.dh * (geom.kh - 1) + 1 and geom.sw >= geom.dw * (geom.kw - 1) + 1
        for k in range(geom.kh * geom.kw):
            win = geom.at(gxpad, k)
            if disjoint:
                xp.multiply(self.idx == k, g, out=win)
            else:
                win += (self.idx == k) * g
        return (from_2d(geom.unpad(gxpad), self.was_1d),)


def _window_sizes(xp, size, k, s, p, out, include_pad):
    """PyTorch's avg-pool divisor along one axis, per output position: the window clipped to the
    padded input (count_include_pad) or to the input itself."""
    start = xp.arange(out) * s - p
    end = xp.minimum(start + k, size + p)
    return end - start if include_pad else xp.minimum(end, size) - xp.maximum(start, 0)


class AvgPool2d(Function):
    """Mean over each window, padding counted as zeros (count_include_pad=True) or left out of the
    divisor; divisor_override replaces the divisor."""

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), ceil_mode=False,
                count_include_pad=True, divisor_override=None):
        xp = get_array_module(x)
        x4, self.was_1d = to_2d(x, "avg_pool")
        geom = _pool_geometry(x4, kernel, stride, padding, (1, 1), ceil_mode, "avg_pool")
        (kh, kw), (ph, pw) = kernel, padding
        whole = geom.bottom == ph and geom.right == pw  # no window reaches past the padding (ceil_mode)
        xpad = geom.pad(x4)
        y = geom.at(xpad, 0).copy()
        for k in range(1, kh * kw):
            y += geom.at(xpad, k)
        if divisor_override is not None:
            scale = 1.0 / divisor_override
        elif whole and (count_include_pad or ph == pw == 0):  # every window is whole
            scale = 1.0 / (kh * kw)
        else:  # a (Ho, Wo) array; the window sizes factor into rows times columns
            rows = _window_sizes(xp, geom.h, kh, geom.sh, ph, geom.ho, count_include_pad)
            cols = _window_sizes(xp, geom.w, kw, geom.sw, pw, geom.wo, count_include_pad)
            scale = (1.0 / (rows[:, None] * cols[None, :])).astype(x.dtype)
        y *= scale
        self.scale, self.geom = scale, geom
        return from_2d(y, self.was_1d)

    def backward(self, gy):
        xp = get_array_module(gy)
        geom = self.geom
        g = gy.reshape(geom.n, geom.c, geom.ho, geom.wo) * self.scale
        gxpad = geom.zeros_padded(xp, gy.dtype)
        for k in range(geom.kh * geom.kw):
            geom.at(gxpad, k)[...] += g
        return (from_2d(geom.unpad(gxpad), self.was_1d),)


def _pool_args(kernel_size, stride, padding, nd, what):
    kernel = nd_arg(kernel_size, "kernel_size", nd, 1)
    stride = kernel if stride is None else nd_arg(stride, "stride", nd, 1)
    padding = nd_arg(padding, "padding", nd, 0)
    if min(kernel) < 1:
        raise ValueError(f"{what}: kernel_size must be positive, got {kernel_size}")
    check_geometry(stride, padding, what)
    return kernel, stride, padding


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d: input (N, C, H, W) or (C, H, W); return_indices=True also
    returns the argmax of each window as a flat index h*W + w per channel plane (no gradient)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2, "max_pool2d")


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool1d: input (N, C, L) or (C, L)."""
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1, "max_pool1d")


def _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, nd, what):
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, nd, what)
    dilation = nd_arg(dilation, "dilation", nd, 1)
    check_dilation(dilation, what)
    x, was_unbatched = batched(x, nd, what)
    out = MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                          ceil_mode=bool(ceil_mode), return_indices=bool(return_indices))
    if not return_indices:
        return unbatched(out) if was_unbatched else out
    return tuple(unbatched(t) for t in out) if was_unbatched else out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool2d: input (N, C, H, W) or (C, H, W)."""
    if divisor_override is not None and not isinstance(divisor_override, int):
        raise TypeError(f"avg_pool2d: divisor_override must be an int, got {divisor_override!r}")
    if divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must not be zero")
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, 2,
                     "avg_pool2d")


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """torch.nn.functional.avg_pool1d: input (N, C, L) or (C, L)."""
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad, None, 1, "avg_pool1d")


def _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, nd, what):
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, nd, what)
    x, was_unbatched = batched(x, nd, what)
    y = AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad), divisor_override=divisor_override)
    return unbatched(y) if was_unbatched else y
