"""Conv1d and Conv2d with PyTorch's parameter shapes, names and default init."""
from __future__ import annotations

from ..ops.conv import conv1d, conv2d
from . import init
from .linear import empty_parameter
from .module import Module


def _tuple(v, n: int, name: str) -> tuple:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
    if len(t) != n or not all(isinstance(i, int) and i >= 0 for i in t):
        raise ValueError(f"{name} must be a non-negative int or {n} of them, got {v!r}")
    return t


class _ConvNd(Module):
    _nd = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, dtype=None):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _tuple(kernel_size, self._nd, "kernel_size")
        self.stride = _tuple(stride, self._nd, "stride")
        self.padding = _tuple(padding, self._nd, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be positive, got {kernel_size} and {stride}")
        self.weight = empty_parameter(out_channels, in_channels, *self.kernel_size, dtype=dtype)
        self.register_parameter("bias", empty_parameter(out_channels, dtype=dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_linear_init_(self.weight, self.bias)  # torch's _ConvNd uses Linear's formula

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class Conv1d(_ConvNd):
    """x (N, C_in, L) -> (N, C_out, L_out); weight (C_out, C_in, k)."""

    _nd = 1

    def forward(self, x):
        return conv1d(x, self.weight, self.bias, self.stride[0], self.padding[0])


class Conv2d(_ConvNd):
    """x (N, C_in, H, W) -> (N, C_out, H_out, W_out); weight (C_out, C_in, kh, kw)."""

    def forward(self, x):
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)
