"""Convolution (im2col + one batched matmul) and max/avg pooling, for 1-D and 2-D inputs.

A 1-D input (N, C, L) is run as a 2-D one of height 1, so there is one implementation of each op.
Convolution takes PyTorch's stride, padding (ints or 'same'/'valid'), dilation and groups.
Pooling loops over the kh*kw window offsets, each a strided view of the input: no window array is
materialised, and the max keeps the FIRST maximum of a window, as PyTorch does. Pooling takes
PyTorch's ceil_mode, max pooling dilation and return_indices, avg pooling count_include_pad and
divisor_override. The functions also take PyTorch's unbatched inputs ((C, L), (C, H, W)).
"""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import get_array_module
from .shape import reshape  # adds / removes the batch axis of unbatched inputs, differentiably


def _pair(v, name: str) -> tuple:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if len(t) != 2 or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return t


def _to_2d(x, name: str):
    """(N, C, L) -> (N, C, 1, L); (N, C, H, W) unchanged. Returns the array and whether it was 1-D."""
    if x.ndim == 3:
        return x[:, :, None, :], True
    if x.ndim != 4:
        raise ValueError(f"{name} expects a (N, C, L) or (N, C, H, W) input, got shape {x.shape}")
    return x, False


def _batched(x, nd, what):
    """PyTorch's unbatched inputs, (C, L) for a 1-d op or (C, H, W) for a 2-d one, get a batch axis of
    one (a differentiable reshape; `_unbatched` removes it from the result). Returns (x, unbatched)."""
    if x.ndim == nd + 1:
        return reshape(x, (1, *x.shape)), True
    if x.ndim != nd + 2:
        raise ValueError(f"{what}: expected a {nd + 1}-D (unbatched) or {nd + 2}-D (batched) input, "
                         f"got shape {tuple(x.shape)}")
    return x, False


def _unbatched(y):
    return reshape(y, y.shape[1:])


def _sides(p) -> tuple:
    """A padding as its (before, after) pair: an int pads both sides alike."""
    return p if isinstance(p, tuple) else (p, p)


def _out_size(size, k, s, p, what, d=1):
    """PyTorch's floor((size + pad_before + pad_after - d*(k-1) - 1) / s) + 1; p: int or pair."""
    out = (size + sum(_sides(p)) - d * (k - 1) - 1) // s + 1
    if out < 1:
        kernel = f"kernel {k}" if d == 1 else f"kernel {k} with dilation {d}"
        raise ValueError(f"{what}: {kernel} with padding {p} does not fit an input of size {size}")
    return out


def _pad(x, ph, pw, value=0.0):
    """Pad the last two axes by ph and pw, each an int or a (before, after) pair."""
    ph, pw = _sides(ph), _sides(pw)
    if ph == pw == (0, 0):
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), ph, pw), constant_values=value)


def _window(a, i, j, sh, sw, ho, wo):
    """The view of `a` that window offset (i, j) sees at every output position."""
    return a[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]


class Conv2d(Function):
    """y[n, o] = sum over c in o's group, i, j of w[o, c, i, j] * xpad[n, c, s*h + d*i, s*w + d*j] + b[o].

    im2col: the windows become a (N, G, C/G*kh*kw, Ho*Wo) array, so forward is one batched matmul
    with the (G, O/G, C/G*kh*kw) weight (G = groups: group g's outputs see only its C/G input
    channels) and the output comes out contiguous in NCHW order. Each padding is an int or a
    (before, after) pair, as padding='same' may pad one more after than before."""

    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        xp = get_array_module(x)
        x4, self.was_1d = _to_2d(x, "conv")
        w4 = w[:, :, None, :] if w.ndim == 3 else w
        n, c, h, wd = x4.shape
        o, cw, kh, kw = w4.shape
        if c != cw * groups:
            raise ValueError(f"conv: input has {c} channels but the weight expects {cw * groups} "
                             f"(weight shape {w.shape}, groups={groups})")
        if o % groups:
            raise ValueError(f"conv: the weight's {o} output channels are not divisible by groups={groups}")
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        ho, wo = _out_size(h, kh, sh, ph, "conv", dh), _out_size(wd, kw, sw, pw, "conv", dw)
        xpad = _pad(x4, ph, pw)
        # im2col: copy the kh*kw strided views (offsets scaled by the dilation) into one
        # (N, C, kh, kw, Ho, Wo) array
        cols = xp.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = _window(xpad, i * dh, j * dw, sh, sw, ho, wo)
        # channels are group-major, so splitting them into (G, C/G) is a free reshape
        cols = cols.reshape(n, groups, cw * kh * kw, ho * wo)
        wg = w4.reshape(groups, o // groups, -1)
        y = xp.matmul(wg, cols)  # (N, G, O/G, Ho*Wo)
        y = y.reshape(n, o, ho, wo)
        if b is not None:
            y += b[:, None, None]
        self.cols, self.wg, self.has_b = cols, wg, b is not None
        self.geom = (x4.shape, w.shape, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
        return y[:, :, 0, :] if self.was_1d else y

    def backward(self, gy):
        xp = get_array_module(gy)
        (n, c, h, wd), wshape, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = self.geom
        (pt, pb), (pl, pr) = _sides(ph), _sides(pw)
        groups, og = self.wg.shape[:2]
        g = gy.reshape(n, groups, og, ho * wo)
        nx, nw = self.needs_input_grad[:2]
        gx = gw = gb = None
        if nw:
            # sum over n of g[n] @ cols[n].T: a batched matmul, no transposed copy of either operand
            gw = xp.matmul(g, self.cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(wshape)
        if self.has_b and self.needs_input_grad[2]:
            gb = g.sum(axis=(0, 3)).reshape(-1)
        if nx:
            gcols = xp.matmul(self.wg.transpose(0, 2, 1), g).reshape(n, c, kh, kw, ho, wo)
            gxpad = xp.zeros((n, c, h + pt + pb, wd + pl + pr), dtype=gy.dtype)
            for i in range(kh):  # col2im: windows overlap when stride < kernel, so accumulate
                for j in range(kw):
                    _window(gxpad, i * dh, j * dw, sh, sw, ho, wo)[...] += gcols[:, :, i, j]
            gx = gxpad[:, :, pt:pt + h, pl:pl + wd]
            if self.was_1d:
                gx = gx[:, :, 0, :]
        return (gx, gw, gb) if self.has_b else (gx, gw)


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


def _pool_geometry(x4, kernel, stride, padding, dilation, ceil_mode, name):
    """(Ho, Wo) and the extra bottom/right padding (eh, ew) of pooling over x4 (N, C, H, W)."""
    (ho, eh), (wo, ew) = (_pool_axis(size, k, s, p, d, ceil_mode, name)
                          for size, k, s, p, d in zip(x4.shape[2:], kernel, stride, padding, dilation))
    return ho, wo, eh, ew


class MaxPool2d(Function):
    """Max over each (dilated) window; padding is -inf. `indices`: a list that receives PyTorch's
    return_indices array (flat h*W + w position in each channel plane of the unpadded input)."""

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), dilation=(1, 1), ceil_mode=False,
                indices=None):
        xp = get_array_module(x)
        x4, self.was_1d = _to_2d(x, "max_pool")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        ho, wo, eh, ew = _pool_geometry(x4, kernel, stride, padding, dilation, ceil_mode, "max_pool")
        xpad = _pad(x4, (ph, ph + eh), (pw, pw + ew), value=-xp.inf)
        y = _window(xpad, 0, 0, sh, sw, ho, wo).copy()
        # NOTE: masked copies (copyto(where=), where()) with a random mask were ~5x slower than
        # branch-free arithmetic here, so the argmax offset is updated as idx += better * (k - idx).
        itype = xp.int8 if kh * kw < 128 else xp.int32
        idx = xp.zeros(y.shape, dtype=itype)
        step = xp.empty_like(idx)
        for k in range(1, kh * kw):
            v = _window(xpad, k // kw * dh, k % kw * dw, sh, sw, ho, wo)
            better = (v > y).view(xp.int8).astype(itype, copy=False)  # strict: ties keep the first
            xp.maximum(y, v, out=y)
            xp.subtract(itype(k), idx, out=step)
            step *= better
            idx += step
        if indices is not None:  # window offset -> (row, column) of the unpadded input -> row * W + column
            off = idx.astype(xp.int64)  # int8 offsets times a large dilation would overflow
            row = (xp.arange(ho) * sh - ph)[:, None] + off // kw * dh
            col = xp.arange(wo) * sw - pw + off % kw * dw
            flat = row * x4.shape[3] + col
            indices.append(flat[:, :, 0, :] if self.was_1d else flat)
        self.idx = idx
        self.geom = (x4.shape, kh, kw, sh, sw, ph, pw, dh, dw, eh, ew, ho, wo)
        return y[:, :, 0, :] if self.was_1d else y

    def backward(self, gy):
        xp = get_array_module(gy)
        (n, c, h, wd), kh, kw, sh, sw, ph, pw, dh, dw, eh, ew, ho, wo = self.geom
        g = gy.reshape(n, c, ho, wo)
        gxpad = xp.zeros((n, c, h + 2 * ph + eh, wd + 2 * pw + ew), dtype=gy.dtype)
        # each input element in at most one window: write, don't add
        disjoint = sh >= dh * (kh - 1) + 1 and sw >= dw * (kw - 1) + 1
        for k in range(kh * kw):
            win = _window(gxpad, k // kw * dh, k % kw * dw, sh, sw, ho, wo)
            if disjoint:
                xp.multiply(self.idx == k, g, out=win)
            else:
                win += (self.idx == k) * g
        gx = gxpad[:, :, ph:ph + h, pw:pw + wd]
        return (gx[:, :, 0, :] if self.was_1d else gx,)


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
        x4, self.was_1d = _to_2d(x, "avg_pool")
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        ho, wo, eh, ew = _pool_geometry(x4, kernel, stride, padding, (1, 1), ceil_mode, "avg_pool")
        xpad = _pad(x4, (ph, ph + eh), (pw, pw + ew))
        y = _window(xpad, 0, 0, sh, sw, ho, wo).copy()
        for k in range(1, kh * kw):
            y += _window(xpad, k // kw, k % kw, sh, sw, ho, wo)
        if divisor_override is not None:
            scale = 1.0 / divisor_override
        elif eh == ew == 0 and (count_include_pad or ph == pw == 0):  # every window is whole
            scale = 1.0 / (kh * kw)
        else:  # a (Ho, Wo) array; the window sizes factor into rows times columns
            h, wd = x4.shape[2:]
            rows = _window_sizes(xp, h, kh, sh, ph, ho, count_include_pad)
            cols = _window_sizes(xp, wd, kw, sw, pw, wo, count_include_pad)
            scale = (1.0 / (rows[:, None] * cols[None, :])).astype(x.dtype)
        y *= scale
        self.scale = scale
        self.geom = (x4.shape, kh, kw, sh, sw, ph, pw, eh, ew, ho, wo)
        return y[:, :, 0, :] if self.was_1d else y

    def backward(self, gy):
        xp = get_array_module(gy)
        (n, c, h, wd), kh, kw, sh, sw, ph, pw, eh, ew, ho, wo = self.geom
        g = gy.reshape(n, c, ho, wo) * self.scale
        gxpad = xp.zeros((n, c, h + 2 * ph + eh, wd + 2 * pw + ew), dtype=gy.dtype)
        for k in range(kh * kw):
            _window(gxpad, k // kw, k % kw, sh, sw, ho, wo)[...] += g
        gx = gxpad[:, :, ph:ph + h, pw:pw + wd]
        return (gx[:, :, 0, :] if self.was_1d else gx,)


def _one(v, name):
    v = v[0] if isinstance(v, (tuple, list)) and len(v) == 1 else v
    if not isinstance(v, int):
        raise TypeError(f"{name} must be an int for a 1-d op, got {v!r}")
    return v


def _nd_arg(v, name, nd, fill):
    """A 2-d op's int or pair as a pair; a 1-d op's int as (fill, v), for its height-1 2-d form."""
    return (fill, _one(v, name)) if nd == 1 else _pair(v, name)


def _check_geometry(stride, padding, what):
    if min(stride) < 1:
        raise ValueError(f"{what}: stride must be positive, got {stride}")
    if min(min(_sides(p)) for p in padding) < 0:  # ints, or conv's (before, after) pairs
        raise ValueError(f"{what}: padding must be non-negative, got {padding}")


def check_padding_string(padding, stride):
    """PyTorch's checks of padding='same'/'valid' (shared with the nn layers, which check it early)."""
    if padding not in ("same", "valid"):
        raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError("padding='same' is not supported for strided convolutions")


def _conv(x, weight, bias, stride, padding, dilation, groups, nd, what):
    stride, dilation = _nd_arg(stride, "stride", nd, 1), _nd_arg(dilation, "dilation", nd, 1)
    if min(dilation) < 1:
        raise ValueError(f"{what}: dilation must be positive, got {dilation}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{what}: groups must be a positive integer, got {groups!r}")
    if isinstance(padding, str):
        check_padding_string(padding, stride)
        kernel = weight.shape[2:] if nd == 2 else (1, *weight.shape[2:])
        # 'same' pads d*(k-1) in all; PyTorch puts the odd one out after (bottom / right)
        total = [d * (k - 1) if padding == "same" else 0 for k, d in zip(kernel, dilation)]
        padding = tuple((t // 2, t - t // 2) for t in total)
    else:
        padding = _nd_arg(padding, "padding", nd, 0)
    _check_geometry(stride, padding, what)
    x, unbatched = _batched(x, nd, what)
    args = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return _unbatched(y) if unbatched else y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: input (N, C, H, W) or unbatched (C, H, W), weight (O, C/groups, kh, kw), bias (O,);
    padding: int, pair, 'same' or 'valid'."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d: input (N, C, L) or unbatched (C, L), weight (O, C/groups, k), bias (O,);
    padding: int, 'same' or 'valid'."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def _pool_args(kernel_size, stride, padding, nd, what):
    kernel = _nd_arg(kernel_size, "kernel_size", nd, 1)
    stride = kernel if stride is None else _nd_arg(stride, "stride", nd, 1)
    padding = _nd_arg(padding, "padding", nd, 0)
    if min(kernel) < 1:
        raise ValueError(f"{what}: kernel_size must be positive, got {kernel_size}")
    _check_geometry(stride, padding, what)
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
    dilation = _nd_arg(dilation, "dilation", nd, 1)
    if min(dilation) < 1:
        raise ValueError(f"{what}: dilation must be positive, got {dilation}")
    x, unbatched = _batched(x, nd, what)
    indices = [] if return_indices else None
    y = MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=bool(ceil_mode), indices=indices)
    y = _unbatched(y) if unbatched else y
    if not return_indices:
        return y
    return y, Tensor._wrap(indices[0][0] if unbatched else indices[0])


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
    x, unbatched = _batched(x, nd, what)
    y = AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad), divisor_override=divisor_override)
    return _unbatched(y) if unbatched else y
