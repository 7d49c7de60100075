"""Convolution, 1-D and 2-D, as im2col + one batched matmul, with PyTorch's stride, padding (ints,
pairs or 'same'/'valid'), dilation and groups, and its unbatched inputs ((C, L), (C, H, W))."""
from __future__ import annotations

from ..autograd import Function
from ..backend import get_array_module
from .window import (
    Window2d,
    batched,
    check_dilation,
    check_geometry,
    from_2d,
    nd_arg,
    sides,
    to_2d,
    unbatched,
)


def _out_size(size, k, s, p, what, d=1):
    """PyTorch's floor((size + pad_before + pad_after - d*(k-1) - 1) / s) + 1; p: int or pair."""
    out = (size + sum(sides(p)) - d * (k - 1) - 1) // s + 1
    if out < 1:
        kernel = f"kernel {k}" if d == 1 else f"kernel {k} with dilation {d}"
        raise ValueError(f"{what}: {kernel} with padding {p} does not fit an input of size {size}")
    return out


class Conv2d(Function):
    """y[n, o] = sum over c in o's group, i, j of w[o, c, i, j] * xpad[n, c, s*h + d*i, s*w + d*j] + b[o].

    im2col: the windows become a (N, G, C/G*kh*kw, Ho*Wo) array, so forward is one batched matmul
    with the (G, O/G, C/G*kh*kw) weight (G = groups: group g's outputs see only its C/G input
    channels) and the output comes out contiguous in NCHW order. Each padding is an int or a
    (before, after) pair. The arguments are checked by conv1d/conv2d (check_groups among them)."""

    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
        xp = get_array_module(x)
        x4, self.was_1d = to_2d(x, "conv")
        w4 = w[:, :, None, :] if w.ndim == 3 else w
        n, c, h, wd = x4.shape
        o, cw, kh, kw = w4.shape
        (pt, pb), (pl, pr) = sides(padding[0]), sides(padding[1])
        ho = _out_size(h, kh, stride[0], padding[0], "conv", dilation[0])
        wo = _out_size(wd, kw, stride[1], padding[1], "conv", dilation[1])
        geom = Window2d(n, c, h, wd, kh, kw, *stride, *dilation, pt, pb, pl, pr, ho, wo)
        xpad = geom.pad(x4)
        # im2col: copy the kh*kw strided views (offsets scaled by the dilation) into one
        # (N, C, kh*kw, Ho, Wo) array
        cols = xp.empty((n, c, kh * kw, ho, wo), dtype=x.dtype)
        for k in range(kh * kw):
            cols[:, :, k] = geom.at(xpad, k)
        # channels are group-major, so splitting them into (G, C/G) is a free reshape
        cols = cols.reshape(n, groups, cw * kh * kw, ho * wo)
        wg = w4.reshape(groups, o // groups, -1)
        y = xp.matmul(wg, cols)  # (N, G, O/G, Ho*Wo)
        y = y.reshape(n, o, ho, wo)
        if b is not None:
            y += b[:, None, None]
        self.cols, self.wg, self.has_b, self.wshape, self.geom = cols, wg, b is not None, w.shape, geom
        return from_2d(y, self.was_1d)

    def backward(self, gy):
        xp = get_array_module(gy)
        geom = self.geom
        groups, og = self.wg.shape[:2]
        g = gy.reshape(geom.n, groups, og, geom.ho * geom.wo)
        nx, nw = self.needs_input_grad[:2]
        gx = gw = gb = None
        if nw:
            # sum over n of g[n] @ cols[n].T: a batched matmul, no transposed copy of either operand
            gw = xp.matmul(g, self.cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(self.wshape)
        if self.has_b and self.needs_input_grad[2]:
            gb = g.sum(axis=(0, 3)).reshape(-1)
        if nx:
            kk = geom.kh * geom.kw
            gcols = xp.matmul(self.wg.transpose(0, 2, 1), g).reshape(geom.n, geom.c, kk, geom.ho, geom.wo)
            gxpad = geom.zeros_padded(xp, gy.dtype)
            for k in range(kk):  # col2im: windows overlap when stride < kernel, so accumulate
                geom.at(gxpad, k)[...] += gcols[:, :, k]
            gx = from_2d(geom.unpad(gxpad), self.was_1d)
        return (gx, gw, gb) if self.has_b else (gx, gw)


def check_groups(groups, in_channels, out_channels) -> None:
    """PyTorch's checks of a convolution's `groups` against its channels (nn.Conv1d/2d's and
    conv1d/conv2d's: the one place they are made)."""
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if in_channels % groups:
        raise ValueError(f"in_channels must be divisible by groups: {in_channels} input channels are not "
                         f"divisible by groups={groups}")
    if out_channels % groups:
        raise ValueError(f"out_channels must be divisible by groups: {out_channels} output channels are not "
                         f"divisible by groups={groups}")


def check_padding_string(padding, stride):
    """PyTorch's checks of padding='same'/'valid' (shared with the nn layers, which check it early)."""
    if padding not in ("same", "valid"):
        raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError("padding='same' is not supported for strided convolutions")


def _conv(x, weight, bias, stride, padding, dilation, groups, nd, what):
    stride, dilation = nd_arg(stride, "stride", nd, 1), nd_arg(dilation, "dilation", nd, 1)
    check_dilation(dilation, what)
    if isinstance(padding, str):
        check_padding_string(padding, stride)
        kernel = weight.shape[2:] if nd == 2 else (1, *weight.shape[2:])
        # 'same' pads d*(k-1) in all; PyTorch puts the odd one out after (bottom / right)
        total = [d * (k - 1) if padding == "same" else 0 for k, d in zip(kernel, dilation)]
        padding = tuple((t // 2, t - t // 2) for t in total)
    else:
        padding = nd_arg(padding, "padding", nd, 0)
    check_geometry(stride, padding, what)
    x, was_unbatched = batched(x, nd, what)
    check_groups(groups, x.shape[1], weight.shape[0])
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"{what}: input has {x.shape[1]} channels but the weight expects "
                         f"{weight.shape[1] * groups} (weight shape {tuple(weight.shape)}, groups={groups})")
    args = (x, weight) if bias is None else (x, weight, bias)
    y = Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return unbatched(y) if was_unbatched else y


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv2d: input (N, C, H, W) or unbatched (C, H, W), weight (O, C/groups, kh, kw), bias (O,);
    padding: int, pair, 'same' or 'valid'."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch.nn.functional.conv1d: input (N, C, L) or unbatched (C, L), weight (O, C/groups, k), bias (O,);
    padding: int, 'same' or 'valid'."""
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")
