"""A Linear cut between pipeline stages by its output features, so that stages can hold equal work.

A model's layers rarely split into equal halves at a layer boundary: MLP 784-2048-2048-2048-2048-10
does 41% and 59% of its work on either side of its best boundary, and the larger half sets the
pace of the whole pipeline. Cutting inside a Linear evens that out. Features lo:hi of the layer's
output are computed on one stage; the stages before hand on the layer's input together with the
features they computed, so the message between the two stages is [input | features :lo]:

    stage s:     x -> [x | x @ W[:k].T + b[:k]]                  (LinearPiece(linear, 0, k))
    stage s+1:   [x | z_a] -> [z_a | x @ W[k:].T + b[k:]]        (LinearPiece(linear, k, out))

Autograd does the rest: the gradient stage s+1 sends back is that of [x | z_a], and stage s adds
its own part to x's gradient. The piece's parameters are rows lo:hi of the layer's weight and bias,
kept under the layer's own names, with a `shard_spec` (dim 0, lo:hi of out_features) so that a
checkpoint gathers and cuts them like a tensor-parallel shard."""
from __future__ import annotations

from ...backend import get_array_module
from ...nn import Linear, Module
from ...nn.module import Parameter
from ...ops.linalg import Linear as _LinearFn
from ...ops.shape import cat
from ..tensor_parallel import ShardSpec


class LinearPiece(Module):
    """Output features lo:hi of `linear` (an nn.Linear), one stage's share of a Linear cut between stages.

    Input: x (..., in_features) when lo == 0, else [x | the features :lo] (..., in_features + lo).
    Output: [x | the features :hi] while hi < out_features, else the layer's whole output."""

    def __init__(self, linear: Linear, lo: int, hi: int):
        super().__init__()
        out = linear.out_features
        if not 0 <= lo < hi <= out or (lo, hi) == (0, out):
            raise ValueError(f"a piece of a Linear with {out} output features needs 0 <= lo < hi <= {out} "
                             f"and not all of them, got {lo}:{hi}")
        self.in_features, self.out_features, self.lo, self.hi = linear.in_features, out, lo, hi
        self.weight = Parameter(_copy(linear.weight.data[lo:hi]))
        self.register_parameter("bias", Parameter(_copy(linear.bias.data[lo:hi])) if linear.bias is not None
                                else None)
        spec = ShardSpec(0, lo, hi, out)
        self.shard_spec = {"weight": spec, **({"bias": spec} if linear.bias is not None else {})}

    def forward(self, c):
        n = self.in_features
        x, done = (c, None) if self.lo == 0 else (c[..., :n], c[..., n:])
        z = _LinearFn.apply(x, self.weight, self.bias)
        if done is not None:
            z = cat([done, z], dim=-1)
        return z if self.hi == self.out_features else cat([x, z], dim=-1)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.lo}:{self.hi} of {self.out_features}, "
                f"bias={self.bias is not None}")


def _copy(a):
    """A contiguous copy: a piece must not be a view that keeps the full weight alive."""
    return get_array_module(a).array(a, copy=True, order="C")

