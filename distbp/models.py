"""The model zoo of `python -m distbp.train`: sizes follow the dataset.

`build_model(name, input_shape, num_outputs, **options)`; inputs arrive flat, shape (N, *input_shape),
and conv/recurrent models view them as images (C, H, W) -- give `image_shape`, or a flat input whose
length is a square is read as one channel."""
from __future__ import annotations

import math

from . import nn

MODELS = ("mlp", "linear", "cnn", "gru", "lstm")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky_relu": nn.LeakyReLU}


class Reshape(nn.Module):
    """View each sample as `shape` (the batch dimension is kept)."""

    def __init__(self, *shape: int):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self):
        return ", ".join(map(str, self.shape))


class RecurrentClassifier(nn.Module):
    """Reads an image row by row with a GRU/LSTM and maps the last hidden output to the outputs."""

    def __init__(self, cell: str, image_shape: tuple, hidden_size: int, num_outputs: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels, _, width = self.image_shape
        self.rnn = getattr(nn, cell.upper())(channels * width, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_outputs)

    def forward(self, x):
        n, (c, h, w) = x.shape[0], self.image_shape
        # (N, C, H, W) -> (N, H, C*W): one time step per image row, all channels of that row
        seq = x.reshape(n, c, h, w).permute(0, 2, 1, 3).reshape(n, h, c * w)
        output, _ = self.rnn(seq)
        return self.head(output[:, -1])


def _image_shape(input_shape: tuple, image_shape) -> tuple:
    if image_shape is not None:
        return tuple(int(v) for v in image_shape)
    if len(input_shape) == 3:
        return tuple(input_shape)
    size = math.prod(input_shape)
    side = math.isqrt(size)
    if side * side != size:
        raise ValueError(f"cannot view inputs of shape {tuple(input_shape)} as an image; give image_shape=(C, H, W)")
    return (1, side, side)


def _need(*names: str) -> None:
    missing = [n for n in names if not hasattr(nn, n)]
    if missing:
        raise ValueError(f"this model needs distbp.nn.{', '.join(missing)}, which this distbp build does not have")


def _hidden(hidden, default) -> list:
    hidden = list(default if hidden is None else ([hidden] if isinstance(hidden, int) else hidden))
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in hidden):
        raise ValueError(f"Invalid hidden sizes: {hidden} (expected positive integers)")
    return hidden


def build_model(name: str, input_shape, num_outputs: int, *, hidden=None, activation: str = "relu",
                image_shape=None, channels: int = 16, dropout: float = 0.0) -> nn.Module:
    """A freshly initialised model (parameters drawn from distbp's global RNG).

    mlp:    Flatten, [Linear, activation, Dropout if dropout > 0] per hidden size (default [128]), Linear.
    linear: Flatten, Linear (linear/logistic regression).
    cnn:    2x (Conv2d 3x3 pad 1, ReLU, MaxPool2d 2), Flatten, Linear to hidden[0] (default 64), ReLU, Linear.
    gru/lstm: the image read row by row, hidden size hidden[0] (default 64), Linear on the last output."""
    input_shape = tuple(int(v) for v in input_shape)
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"Invalid number of outputs: {num_outputs}")
    if not 0 <= dropout < 1:
        raise ValueError(f"Invalid dropout probability: {dropout} (expected 0 <= p < 1)")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    features = math.prod(input_shape)
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(features, num_outputs))
    if name == "mlp":
        layers, width = [nn.Flatten()], features
        for h in _hidden(hidden, [128]):
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        return nn.Sequential(*layers, nn.Linear(width, num_outputs))
    if name == "cnn":
        _need("Conv2d", "MaxPool2d")
        c, h, w = _image_shape(input_shape, image_shape)
        if h < 4 or w < 4:
            raise ValueError(f"model 'cnn' needs images of at least 4x4, got {h}x{w}")
        hid = _hidden(hidden, [64])[0]
        return nn.Sequential(
            Reshape(c, h, w),
            nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * channels * (h // 4) * (w // 4), hid), ACTIVATIONS[activation](),
            nn.Linear(hid, num_outputs))
    if name in ("gru", "lstm"):
        _need(name.upper())
        return RecurrentClassifier(name, _image_shape(input_shape, image_shape), _hidden(hidden, [64])[0],
                                   num_outputs)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
