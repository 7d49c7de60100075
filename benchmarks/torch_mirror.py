"""The PyTorch model of the same architecture as a distbp model, layer by layer, with the same
state_dict keys, so that a strict `load_state_dict` of distbp's weights proves the match. Imports
torch: only the torch side of a benchmark loads this."""
from __future__ import annotations

from torch import nn


class Reshape(nn.Module):
    """distbp.training.models.Reshape: view each sample as `shape`."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class ImageRows(nn.Module):
    """distbp.training.models.ImageRows: flat images as sequences, one time step per image row."""

    def __init__(self, image_shape):
        super().__init__()
        self.image_shape = tuple(image_shape)

    def forward(self, x):
        n, (c, h, w) = x.shape[0], self.image_shape
        return x.reshape(n, c, h, w).permute(0, 2, 1, 3).reshape(n, h, c * w)


class LastOutput(nn.Module):
    """distbp.training.models.LastOutput: a recurrent layer's last time step's output."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        output, _ = self.rnn(x)
        return output[:, -1]


def mirror(module) -> nn.Module:
    """The torch module for distbp `module`; TypeError for a layer it does not know."""
    kind = type(module).__name__
    if kind == "Sequential":
        return nn.Sequential(*(mirror(m) for m in module.children()))
    if kind == "Linear":
        return nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    if kind == "Conv2d":
        return nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                         module.padding, module.dilation, module.groups, module.bias is not None,
                         module.padding_mode)
    if kind == "MaxPool2d":
        return nn.MaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation,
                            ceil_mode=module.ceil_mode)
    if kind in ("GRU", "LSTM"):
        return getattr(nn, kind)(module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
                                 batch_first=module.batch_first, bidirectional=module.bidirectional)
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        return getattr(nn, kind)(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
    if kind == "Flatten":
        return nn.Flatten(module.start_dim, module.end_dim)
    if kind == "Dropout":
        return nn.Dropout(module.p)
    if kind == "LeakyReLU":
        return nn.LeakyReLU(module.negative_slope)
    if kind in ("ReLU", "Tanh", "Sigmoid"):
        return getattr(nn, kind)()
    if kind == "Reshape":
        return Reshape(module.shape)
    if kind == "ImageRows":
        return ImageRows(module.image_shape)
    if kind == "LastOutput":
        return LastOutput(mirror(module.rnn))
    raise TypeError(f"no torch mirror for distbp layer {kind}")
