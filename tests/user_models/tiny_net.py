"""A user's model file, as `python -m distbp.train --model tests/user_models/tiny_net.py:make` loads it.
Factories that work, and some that are wrong on purpose (the tests check the one-line errors)."""
import math

from distbp import nn


class TinyNet(nn.Module):
    """Not a Sequential: a hidden layer plus a linear skip path, so a plain forward() is exercised."""

    def __init__(self, features, hidden, outputs, dropout):
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(features, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, outputs)
        self.skip = nn.Linear(features, outputs, bias=False)

    def forward(self, x):
        x = self.flatten(x)
        return self.out(self.drop(self.hidden(x).tanh())) + self.skip(x)


def make(input_shape, num_outputs, hidden=16, dropout=0.0):
    return TinyNet(math.prod(input_shape), hidden, num_outputs, dropout)


def make_sequential(input_shape, num_outputs, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.Tanh(),
                         nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, num_outputs))


def summed_l1(reduction="sum", scale=1.0):
    l1 = nn.L1Loss(reduction=reduction)
    return lambda out, y: l1(out, y) * scale


def mean_loss():
    return nn.CrossEntropyLoss()   # reduction="mean": wrong for the trainer, which divides by the batch


def not_a_module(input_shape, num_outputs):
    return lambda x: x


def wrong_outputs(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs + 1))


CONSTANT = 3
