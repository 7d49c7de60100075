"""BatchNorm1d / BatchNorm2d with PyTorch's buffers, momentum convention and state_dict keys."""
from __future__ import annotations

import numpy

from .. import backend
from ..ops.norm import batch_norm
from . import init
from .module import Module, empty_parameter


class _BatchNorm(Module):
    """Batch statistics in training (running stats updated), running statistics in eval.

    Buffers: running_mean, running_var (float) and num_batches_tracked (int64), so PyTorch state
    dicts load as they are. momentum=None means a cumulative average (1 / num_batches_tracked).
    Subclasses change where statistics come from through `_reduce_fn` (SyncBatchNorm returns a
    sum-allreduce; see distbp.ops.norm.BatchNorm)."""

    _dims: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype=None):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be positive, got {num_features}")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = empty_parameter(num_features, dtype=dtype)
            self.bias = empty_parameter(num_features, dtype=dtype)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            dt = dtype or backend.get_default_dtype()
            self.register_buffer("running_mean", numpy.zeros(num_features, dtype=dt))
            self.register_buffer("running_var", numpy.ones(num_features, dtype=dt))
            self.register_buffer("num_batches_tracked", numpy.zeros((), dtype=numpy.int64))
        self.reset_parameters()

    def reset_parameters(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def _reduce_fn(self):
        """Applied to per-channel sums over the batch; None (the identity) for a single process."""
        return

    def forward(self, x):
        if x.ndim not in self._dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{d}-D' for d in self._dims)} "
                             f"input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) got an input with {x.shape[1]} "
                             f"channels (shape {tuple(x.shape)})")
        use_batch_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        track = self.track_running_stats and self.training
        return batch_norm(x, self.running_mean if self.track_running_stats else None,
                          self.running_var if self.track_running_stats else None,
                          self.weight, self.bias, training=use_batch_stats,
                          momentum=momentum if track else 0.0, eps=self.eps, reduce_fn=self._reduce_fn())

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) inputs, statistics per channel C."""

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) inputs, statistics per channel C."""

    _dims = (4,)
