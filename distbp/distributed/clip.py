"""Gradient clipping over a ProcessGrid: torch's clip_grad_norm_ of the single-process model, when its
parameters are spread over tensor-parallel shards, pipeline stages and data-parallel replicas.

The norm must count every element of the single-process model's gradient once:
  - a tensor-parallel shard (`shard_spec_of(p).dim` set) holds its own slice: sum over tp_comm;
  - a parameter replicated over tp_comm (a RowParallelLinear's bias, a plain layer) is the same
    array on the T ranks: tp_rank 0 counts it, the others add nothing;
  - each pipeline stage holds different layers: sum over pipe_comm;
  - data-parallel replicas hold the same (already reduced) gradients: no sum over dp_comm.
For the inf norm the sums are maxima, which may count an element more than once."""
from __future__ import annotations

import math

import numpy

from .. import backend
from .tensor_parallel import shard_spec_of


def _params(parameters) -> list:
    return [parameters] if hasattr(parameters, "grad") else list(parameters)


def _share(g, xp, p: float):
    """One gradient's part of the total before the root: sum |g|^p (max |g| for inf, the nonzero
    count for 0), so that the parts of the shards and the stages add (or max) into the whole."""
    if not g.size:
        return xp.zeros((), g.dtype)
    if math.isinf(p):
        return xp.abs(g).max()
    if p == 0:
        return xp.count_nonzero(g).astype(g.dtype)
    if p == 2:
        return xp.vdot(g, g).real
    return (xp.abs(g) ** p).sum()


def clip_grad_norm_(parameters, max_norm: float, grid, norm_type: float = 2.0, error_if_nonfinite: bool = False):
    """`distbp.nn.utils.clip_grad_norm_` (torch's) of the whole model, whose parameters this rank holds
    the `grid.stage`, `grid.tp_rank` part of: every rank gets the same total norm (returned, a 0-d
    array) and scales its gradients by the same factor. Call it after the data-parallel gradient
    reduction. Collective over grid.tp_comm, then grid.pipe_comm: every rank calls it, with its
    parameters (a rank without gradients still takes part)."""
    max_norm, norm_type = float(max_norm), float(norm_type)
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"Invalid max_norm: {max_norm} (must be >= 0)")
    if norm_type < 0 or math.isnan(norm_type):
        raise ValueError(f"Invalid norm_type: {norm_type} (must be >= 0 or inf)")
    params = [p for p in _params(parameters) if p.grad is not None]
    grads = [p.grad for p in params]
    xp = backend.get_array_module(*grads) if grads else numpy
    dtype = grads[0].dtype if grads else backend.get_default_dtype()
    inf = math.isinf(norm_type)
    mine = []  # this rank's parts of the total
    for p in params:
        spec = shard_spec_of(p)
        if not inf and grid.tp_rank != 0 and (spec is None or spec.dim is None):
            continue  # replicated over tp_comm: counted on tp_rank 0
        mine.append(_share(p.grad, xp, norm_type))
    if inf:
        local = xp.stack(mine).max() if mine else xp.zeros((), dtype)
    else:
        local = xp.stack(mine).sum() if mine else xp.zeros((), dtype)
    total = xp.array(local, dtype=dtype).reshape(1)
    op = "max" if inf else "sum"
    for comm in (grid.tp_comm, grid.pipe_comm):
        if comm.size > 1:
            total = comm.allreduce(total, op)
    total = total.reshape(())
    if not inf and norm_type not in (0, 1):
        total = total ** (1 / norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} of the gradients is {float(total)}, so it "
                           "cannot be clipped; pass error_if_nonfinite=False to scale by it anyway")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= coef.astype(g.dtype, copy=False)
    return total
