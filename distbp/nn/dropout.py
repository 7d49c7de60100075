"""Inverted dropout: zero each element with probability p in training, scale survivors by 1/(1-p)."""
from __future__ import annotations

import numpy

from .. import backend
from ..ops import mul
from .module import Module


def dropout_mask(shape, p: float, dtype, like):
    """The ONE place dropout draws randomness: keep-mask / (1 - p), from distbp's seeded RNG.

    Drawn on the host so a seed gives the same mask on every device; a GPU run would draw with
    cupy's generator here instead."""
    keep = backend.rng().random(shape) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    mask = keep.astype(dtype) * numpy.asarray(scale, dtype=dtype)
    xp = backend.get_array_module(like)
    return mask if xp is numpy else xp.asarray(mask)


def dropout(x, p: float = 0.5, training: bool = True):
    """torch.nn.functional.dropout; the identity when not training or p == 0."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    return mul(x, dropout_mask(x.shape, p, x.dtype, x.data))


class Dropout(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
