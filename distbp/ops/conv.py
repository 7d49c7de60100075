"""Convolution (im2col + one batched matmul) and max/avg pooling, for 1-D and 2-D inputs.

A 1-D input (N, C, L) is run as a 2-D one of height 1, so there is one implementation of each op.
Convolution takes PyTorch's stride, padding (ints or 'same'/'valid'), dilation and groups.
Pooling loops over the kh*kw window offsets, each a strided view of the input: no window array is
materialised, and the max keeps the FIRST maximum of a window, as PyTorch does.
"""
from __future__ import annotations

from ..autograd import Function
from ..backend import get_array_module


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


def _pool_out_size(x4, kernel, stride, padding, name):
    """Output (height, width) of a pooling window over x4 (N, C, H, W); PyTorch's padding rule."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel {kernel}")
    h, wd = x4.shape[2:]
    return _out_size(h, kh, sh, ph, name), _out_size(wd, kw, sw, pw, name)


class MaxPool2d(Function):
    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
        xp = get_array_module(x)
        x4, self.was_1d = _to_2d(x, "max_pool")
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        ho, wo = _pool_out_size(x4, kernel, stride, padding, "max_pool")
        xpad = _pad(x4, ph, pw, value=-xp.inf)
        y = _window(xpad, 0, 0, sh, sw, ho, wo).copy()
        # NOTE: masked copies (copyto(where=), where()) with a random mask were ~5x slower than
        # branch-free arithmetic here, so the argmax offset is updated as idx += better * (k - idx).
        itype = xp.int8 if kh * kw < 128 else xp.int32
        idx = xp.zeros(y.shape, dtype=itype)
        step = xp.empty_like(idx)
        for k in range(1, kh * kw):
            v = _window(xpad, k // kw, k % kw, sh, sw, ho, wo)
            better = (v > y).view(xp.int8).astype(itype, copy=False)  # strict: ties keep the first
            xp.maximum(y, v, out=y)
            xp.subtract(itype(k), idx, out=step)
            step *= better
            idx += step
        self.idx = idx
        self.geom = (x4.shape, kh, kw, sh, sw, ph, pw, ho, wo)
        return y[:, :, 0, :] if self.was_1d else y

    def backward(self, gy):
        xp = get_array_module(gy)
        (n, c, h, wd), kh, kw, sh, sw, ph, pw, ho, wo = self.geom
        g = gy.reshape(n, c, ho, wo)
        gxpad = xp.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=gy.dtype)
        disjoint = sh >= kh and sw >= kw  # each input element in at most one window: write, don't add
        for k in range(kh * kw):
            win = _window(gxpad, k // kw, k % kw, sh, sw, ho, wo)
            if disjoint:
                xp.multiply(self.idx == k, g, out=win)
            else:
                win += (self.idx == k) * g
        gx = gxpad[:, :, ph:ph + h, pw:pw + wd]
        return (gx[:, :, 0, :] if self.was_1d else gx,)


class AvgPool2d(Function):
    """Mean over each window; padding counts as zeros in the mean (PyTorch's count_include_pad=True)."""

    def forward(self, x, kernel=(2, 2), stride=(2, 2), padding=(0, 0)):
        x4, self.was_1d = _to_2d(x, "avg_pool")
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        ho, wo = _pool_out_size(x4, kernel, stride, padding, "avg_pool")
        xpad = _pad(x4, ph, pw)
        y = _window(xpad, 0, 0, sh, sw, ho, wo).copy()
        for k in range(1, kh * kw):
            y += _window(xpad, k // kw, k % kw, sh, sw, ho, wo)
        y *= 1.0 / (kh * kw)
        self.geom = (x4.shape, kh, kw, sh, sw, ph, pw, ho, wo)
        return y[:, :, 0, :] if self.was_1d else y

    def backward(self, gy):
        xp = get_array_module(gy)
        (n, c, h, wd), kh, kw, sh, sw, ph, pw, ho, wo = self.geom
        g = gy.reshape(n, c, ho, wo) * (1.0 / (kh * kw))
        gxpad = xp.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=gy.dtype)
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
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: input (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,);
    padding: int, pair, 'same' or 'valid'."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d: input (N, C, L), weight (O, C/groups, k), bias (O,);
    padding: int, 'same' or 'valid'."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


def _pool(cls, x, kernel_size, stride, padding, nd, what):
    kernel = _nd_arg(kernel_size, "kernel_size", nd, 1)
    stride = kernel if stride is None else _nd_arg(stride, "stride", nd, 1)
    padding = _nd_arg(padding, "padding", nd, 0)
    if min(kernel) < 1:
        raise ValueError(f"{what}: kernel_size must be positive, got {kernel_size}")
    _check_geometry(stride, padding, what)
    return cls.apply(x, kernel=kernel, stride=stride, padding=padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    return _pool(MaxPool2d, x, kernel_size, stride, padding, 2, "max_pool2d")


def max_pool1d(x, kernel_size, stride=None, padding=0):
    return _pool(MaxPool2d, x, kernel_size, stride, padding, 1, "max_pool1d")


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    return _pool(AvgPool2d, x, kernel_size, stride, padding, 2, "avg_pool2d")


def avg_pool1d(x, kernel_size, stride=None, padding=0):
    return _pool(AvgPool2d, x, kernel_size, stride, padding, 1, "avg_pool1d")
