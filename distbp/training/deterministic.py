"""The Trainer's step in deterministic mode (`--deterministic`): one forward and backward per group.

DistributedDataParallel(deterministic=True) (distbp/distributed/deterministic.py) cuts each global
batch into fixed groups and gives this rank whole groups; this runs them. Each group's loss is its
per-sample sum divided by the global batch, as in the normal step, and each forward is keyed by the
group's first global sample, so dropout gives every sample the mask it has on one process. The
reduced gradients are the same bits on every world size, one process included."""
from __future__ import annotations

import math

import numpy

from .. import backend
from .. import random as distbp_random
from ..autograd import tensor
from ..distributed import DistributedDataParallel, get_comm, trace


def deterministic_ddp(model, comm, groups: int) -> DistributedDataParallel:
    """The data-parallel wrapper of deterministic mode (on one rank too: the same tree of sums)."""
    return DistributedDataParallel(model, comm or get_comm(), average=False, deterministic=True, groups=groups)


def group_forward_backward(ddp: DistributedDataParallel, loss_fn, X, y, batch, step: int, device: str,
                           per_sample: int) -> tuple[float, int]:
    """Forward and backward of this rank's groups of the global batch `batch` (indices into X, y),
    then the collective sum; returns (this rank's loss sum, its samples). A group whose loss is not
    finite backpropagates nan, so every rank sees non-finite gradients after the sum."""
    ddp.train()
    scale = len(batch) * per_sample
    loss_sum, samples = 0.0, 0
    for group, (a, b) in enumerate(ddp.group_bounds(len(batch))):
        with trace.span("data", step=step, group=group):
            Xg, yg = X[batch[a:b]], y[batch[a:b]]
        with trace.span("forward", step=step, group=group):
            with distbp_random.batch(step=step, first_sample=a):
                out = ddp(tensor(backend.to_device(Xg, device)))
            total = loss_fn(out, backend.to_device(yg, device))
            value = float(total.item())
        with trace.span("backward", step=step, group=group):
            (total / scale if math.isfinite(value) else total * math.nan).backward()
        loss_sum += value
        samples += b - a
    ddp.reduce_groups()
    return loss_sum, samples


def per_sample_values(task: str, y) -> int:
    """Values per sample the loss sums over (1 for classification)."""
    return 1 if task == "classification" else int(numpy.prod(y.shape[1:]))
