"""Max and average pooling layers (stride defaults to the kernel size, as in PyTorch)."""
from __future__ import annotations

from ..ops.conv import avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .module import Module


class _Pool(Module):
    _fn = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return type(self)._fn(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_Pool):
    _fn = staticmethod(max_pool1d)


class MaxPool2d(_Pool):
    _fn = staticmethod(max_pool2d)


class AvgPool1d(_Pool):
    _fn = staticmethod(avg_pool1d)


class AvgPool2d(_Pool):
    _fn = staticmethod(avg_pool2d)
