"""Conv1d and Conv2d with PyTorch's arguments, parameter shapes, names and default init."""
from __future__ import annotations

from ..ops.conv import check_groups, check_padding_string, conv1d, conv2d
from . import init
from .module import Module, empty_parameter


def _tuple(v, n: int, name: str) -> tuple:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
    if len(t) != n or not all(isinstance(i, int) and i >= 0 for i in t):
        raise ValueError(f"{name} must be a non-negative int or {n} of them, got {v!r}")
    return t


class _ConvNd(Module):
    _nd = 2
    _conv = staticmethod(conv2d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", dtype=None):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be positive, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        check_groups(groups, in_channels, out_channels)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode={padding_mode!r} is not supported, only 'zeros'")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        self.kernel_size = _tuple(kernel_size, self._nd, "kernel_size")
        self.stride = _tuple(stride, self._nd, "stride")
        self.dilation = _tuple(dilation, self._nd, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"kernel_size, stride and dilation must be positive, got {kernel_size}, "
                             f"{stride} and {dilation}")
        if isinstance(padding, str):  # kept as the string, as PyTorch does
            check_padding_string(padding, self.stride)
            self.padding = padding
        else:
            self.padding = _tuple(padding, self._nd, "padding")
        self.weight = empty_parameter(out_channels, in_channels // groups, *self.kernel_size, dtype=dtype)
        self.register_parameter("bias", empty_parameter(out_channels, dtype=dtype) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        # torch's _ConvNd uses Linear's formula; fan_in = in_channels/groups * prod(kernel_size)
        init.default_linear_init_(self.weight, self.bias)

    def extra_repr(self):
        """PyTorch's: stride always, padding/dilation/groups/bias only where not the default."""
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s if self.bias is not None else s + ", bias=False"

    def forward(self, x):
        return self._conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_ConvNd):
    """x (N, C_in, L) -> (N, C_out, L_out), or unbatched (C_in, L) -> (C_out, L_out);
    weight (C_out, C_in / groups, k)."""

    _nd = 1
    _conv = staticmethod(conv1d)


class Conv2d(_ConvNd):
    """x (N, C_in, H, W) -> (N, C_out, H_out, W_out), or unbatched (C_in, H, W) -> (C_out, H_out, W_out);
    weight (C_out, C_in / groups, kh, kw)."""
