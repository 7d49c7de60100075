"""Inverted dropout: zero each element with probability p in training, scale survivors by 1/(1-p)."""
from __future__ import annotations

from .. import backend, random
from ..ops import mul
from .module import Module


def dropout_mask(shape, p: float, dtype, like, batch_axis: int = 0):
    """The ONE place dropout draws randomness: keep-mask / (1 - p).

    Drawn by distbp.random.per_sample_uniform, so global sample i gets the same mask however the
    batch is split across ranks (inside `distbp.random.batch(step, first_sample)`), `manual_seed`
    repeats it, and it is drawn on `like`'s device with the same values as on the host.
    `batch_axis` is the axis of `shape` that indexes samples."""
    xp = backend.get_array_module(like)
    keep = random.per_sample_uniform(shape, dtype, xp, batch_axis) >= p
    mask = keep.astype(dtype)
    mask *= 0.0 if p == 1 else 1.0 / (1.0 - p)
    return mask


def dropout(x, p: float = 0.5, training: bool = True, *, batch_axis: int = 0):
    """torch.nn.functional.dropout; the identity when not training or p == 0. `batch_axis` (not in
    torch) names the sample axis, so that each sample's mask is keyed by its global index."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    return mul(x, dropout_mask(x.shape, p, x.dtype, x.data, batch_axis))


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
