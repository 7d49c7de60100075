"""Embedding lookup: rows of a weight matrix picked by integer indices."""
from __future__ import annotations

from ..autograd import Function, Tensor
from ..backend import get_array_module, scatter_add


class Embedding(Function):
    """y = weight[indices]; the gradient scatters back, summing rows picked more than once."""

    def forward(self, weight, indices=None, padding_idx=None):
        self.indices, self.wshape, self.padding_idx = indices, weight.shape, padding_idx
        return weight[indices]

    def backward(self, gy):
        xp = get_array_module(gy)
        gw = xp.zeros(self.wshape, dtype=gy.dtype)
        scatter_add(gw, self.indices.reshape(-1), gy.reshape(-1, self.wshape[1]))
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0  # the padding row never trains, as in PyTorch
        return (gw,)


def embedding(indices, weight, padding_idx=None):
    """torch.nn.functional.embedding: integer `indices` of any shape -> (*indices.shape, dim)."""
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = get_array_module(weight.data if isinstance(weight, Tensor) else weight)
    idx = xp.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding indices must be integers, got dtype {idx.dtype}")
    n = weight.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"embedding index out of range: indices span [{int(idx.min())}, {int(idx.max())}] "
                         f"but the table has {n} rows")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n
    return Embedding.apply(weight, indices=idx, padding_idx=padding_idx)
