"""Parameter initialisers with PyTorch's formulas, drawn from distbp's seeded host RNG."""
from __future__ import annotations

import math

import numpy

from .. import backend
from ..autograd import Tensor


def _fill(t: Tensor, values: numpy.ndarray) -> Tensor:
    xp = backend.get_array_module(t.data)
    t.data[...] = xp.asarray(values, dtype=t.data.dtype)
    return t


def _fans(shape):
    fan_in = shape[1] if len(shape) > 1 else shape[0]
    fan_out = shape[0]
    receptive = int(numpy.prod(shape[2:])) if len(shape) > 2 else 1
    return fan_in * receptive, fan_out * receptive


def uniform_(t, a=0.0, b=1.0):
    return _fill(t, backend.rng().uniform(a, b, size=t.shape))


def normal_(t, mean=0.0, std=1.0):
    return _fill(t, backend.rng().normal(mean, std, size=t.shape))


def zeros_(t):
    return _fill(t, numpy.zeros(t.shape))


def ones_(t):
    return _fill(t, numpy.ones(t.shape))


def constant_(t, value):
    return _fill(t, numpy.full(t.shape, value))


def kaiming_uniform_(t, a=0.0, nonlinearity="leaky_relu"):
    fan_in, _ = _fans(t.shape)
    gain = math.sqrt(2.0 / (1 + a * a)) if nonlinearity == "leaky_relu" else math.sqrt(2.0)
    bound = gain * math.sqrt(3.0 / fan_in)
    return uniform_(t, -bound, bound)


def xavier_uniform_(t, gain=1.0):
    fan_in, fan_out = _fans(t.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound)


def default_linear_init_(weight, bias=None):
    """torch.nn.Linear/ConvNd.reset_parameters: kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in))."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _fans(weight.shape)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        uniform_(bias, -bound, bound)
