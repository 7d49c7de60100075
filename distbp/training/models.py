"""The model zoo, registered by name: sizes follow the dataset.

`registry.build_model(name, input_shape, num_outputs, **options)`; inputs arrive flat, shape
(N, *input_shape), and conv/recurrent models view them as images (C, H, W) -- give `image_shape`,
or a flat input whose length is a square is read as one channel.

    mlp:      Flatten, [Linear, activation, Dropout if dropout > 0] per hidden size (default [128]), Linear.
    linear:   Flatten, Linear (linear/logistic regression).
    cnn:      2x (Conv2d 3x3 pad 1 [, BatchNorm2d if batch_norm], ReLU, MaxPool2d 2), Flatten,
              Linear to hidden[0] (default 64), activation, Linear; `channels` (16) in the first conv.
    gru/lstm: ImageRows (the image read row by row), LastOutput(GRU/LSTM of hidden size hidden[0],
              default 64), Linear."""
from __future__ import annotations

import math

from .. import nn
from .registry import activation as _activation
from .registry import register_model


class Reshape(nn.Module):
    """View each sample as `shape` (the batch dimension is kept)."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return ", ".join(map(str, self.shape))


class ImageRows(nn.Module):
    """View flat images (N, C*H*W) as sequences (N, H, C*W): one time step per image row, all
    channels of that row, so a recurrent layer reads the image top to bottom."""

    def __init__(self, *image_shape: int):
        super().__init__()
        self.image_shape = tuple(image_shape)

    def forward(self, x):
        n, (c, h, w) = x.shape[0], self.image_shape
        return x.reshape(n, c, h, w).permute(0, 2, 1, 3).reshape(n, h, c * w)

    def extra_repr(self):
        return ", ".join(map(str, self.image_shape))


class LastOutput(nn.Module):
    """A batch-first recurrent layer that returns only its last time step's output (N, hidden): one
    tensor out, so it can sit in an nn.Sequential and at a pipeline stage's edge."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        output, _ = self.rnn(x)
        return output[:, -1]


def _recurrent(cell: str, image_shape: tuple, hidden_size: int, num_outputs: int):
    c, _, w = image_shape
    return nn.Sequential(ImageRows(*image_shape),
                         LastOutput(getattr(nn, cell.upper())(c * w, hidden_size, batch_first=True)),
                         nn.Linear(hidden_size, num_outputs))


def image_shape_of(input_shape: tuple, image_shape=None) -> tuple:
    """(C, H, W): the given image_shape, a 3-d input shape, or a square flat input as one channel."""
    if image_shape is not None:
        return tuple(int(v) for v in image_shape)
    if len(input_shape) == 3:
        return tuple(input_shape)
    size = math.prod(input_shape)
    side = math.isqrt(size)
    if side * side != size:
        raise ValueError(f"cannot view inputs of shape {tuple(input_shape)} as an image; give image_shape=(C, H, W)")
    return (1, side, side)


def hidden_sizes(hidden, default) -> list:
    """A model's hidden sizes: an int, a list of positive ints, or None for the default."""
    hidden = list(default if hidden is None else ([hidden] if isinstance(hidden, int) else hidden))
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
        raise ValueError(f"Invalid hidden sizes: {hidden} (expected positive integers)")
    return hidden


@register_model("mlp")
def mlp(input_shape, num_outputs, *, hidden=None, activation="relu", dropout=0.0):
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for h in hidden_sizes(hidden, [128]):
        layers += [nn.Linear(width, h), _activation(activation)] + ([nn.Dropout(dropout)] if dropout else [])
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_outputs))


@register_model("linear")
def linear(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))


@register_model("cnn")
def cnn(input_shape, num_outputs, *, hidden=None, activation="relu", image_shape=None, channels=16,
        batch_norm=False):
    c, h, w = image_shape_of(input_shape, image_shape)
    if h < 4 or w < 4:
        raise ValueError(f"model 'cnn' needs images of at least 4x4, got {h}x{w}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"Invalid channels: {channels} (expected a positive integer)")
    hid = hidden_sizes(hidden, [64])[0]

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if batch_norm else []) + [
            nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(
        Reshape(c, h, w), *block(c, channels), *block(channels, 2 * channels),
        nn.Flatten(), nn.Linear(2 * channels * (h // 4) * (w // 4), hid), _activation(activation),
        nn.Linear(hid, num_outputs))


@register_model("gru")
def gru(input_shape, num_outputs, *, hidden=None, image_shape=None):
    return _recurrent("gru", image_shape_of(input_shape, image_shape), hidden_sizes(hidden, [64])[0], num_outputs)


@register_model("lstm")
def lstm(input_shape, num_outputs, *, hidden=None, image_shape=None):
    return _recurrent("lstm", image_shape_of(input_shape, image_shape), hidden_sizes(hidden, [64])[0], num_outputs)
