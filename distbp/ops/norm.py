"""Batch normalisation as one Function, with a seam for statistics over several processes."""
from __future__ import annotations

from ..autograd import Function
from ..backend import get_array_module


def _identity(v):
    return v


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1), over every other axis.

    Training: mean and biased var of this batch normalise x, and the running statistics (arrays,
    updated in place) move by PyTorch's rule `running = (1 - momentum) * running + momentum * batch`,
    with the UNBIASED batch variance (count / (count - 1)). Eval: the running statistics normalise x.

    Seam for SyncBatchNorm: `reduce_fn(vector) -> vector` (identity here) is applied to every
    per-channel statistic that sums over the batch, so passing a sum-allreduce gives statistics of
    the global batch, equal to one BatchNorm over all ranks' samples concatenated:
      forward:  [sum(x), count] -> reduced -> mean; then sum((x - mean)^2) -> reduced -> var
                (two passes: the centred sum of squares avoids E[x^2] - E[x]^2 cancellation);
      backward: [sum(gy), sum(gy * x_hat)] -> reduced -> the input gradient.
    The weight and bias gradients stay LOCAL sums (data parallelism then averages them as it does
    every other parameter's gradient, as in PyTorch's SyncBatchNorm).
    """

    def forward(self, x, weight=None, bias=None, running_mean=None, running_var=None, training=True,
                momentum=0.1, eps=1e-5, reduce_fn=_identity):
        xp = get_array_module(x)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        self.axes, self.shape, self.reduce_fn = axes, shape, reduce_fn
        self.training = training
        if training:
            local_count = x.size // x.shape[1]
            stats = reduce_fn(xp.concatenate([x.sum(axis=axes), xp.asarray([local_count], dtype=x.dtype)]))
            count = float(stats[-1])
            if count <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input shape "
                                 f"{x.shape}")
            mean = stats[:-1] / count
            xc = x - mean.reshape(shape)
            var = reduce_fn((xc * xc).sum(axis=axes)) / count
            self.count = count
            if running_mean is not None:
                running_mean *= 1 - momentum
                running_mean += momentum * mean.astype(running_mean.dtype)
                running_var *= 1 - momentum
                running_var += (momentum * count / (count - 1)) * var.astype(running_var.dtype)
        else:
            xc = x - running_mean.astype(x.dtype).reshape(shape)
            var = running_var.astype(x.dtype)
        invstd = 1.0 / xp.sqrt(var + eps)
        x_hat = xc * invstd.reshape(shape)
        self.x_hat, self.invstd, self.has_affine = x_hat, invstd, weight is not None
        if weight is None:
            return x_hat
        self.weight = weight
        return x_hat * weight.reshape(shape) + bias.reshape(shape)

    def backward(self, gy):
        xp = get_array_module(gy)
        axes, shape, x_hat = self.axes, self.shape, self.x_hat
        sum_gy = gy.sum(axis=axes)
        sum_gy_xhat = (gy * x_hat).sum(axis=axes)
        scale = self.invstd if not self.has_affine else self.invstd * self.weight
        gx = None
        if self.needs_input_grad[0]:
            if self.training:
                # d/dx through mean and var too: the batch statistics depend on every sample
                c = x_hat.shape[1]
                total = self.reduce_fn(xp.concatenate([sum_gy, sum_gy_xhat]))
                mean_gy, mean_gy_xhat = total[:c] / self.count, total[c:] / self.count
                gx = gy - mean_gy.reshape(shape) - x_hat * mean_gy_xhat.reshape(shape)
                gx *= scale.reshape(shape)
            else:
                gx = gy * scale.reshape(shape)
        if not self.has_affine:
            return (gx,)
        return gx, sum_gy_xhat, sum_gy


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, reduce_fn=None):
    """torch.nn.functional.batch_norm (argument order included); `reduce_fn` as in BatchNorm."""
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    if (weight is None) != (bias is None):
        raise ValueError("batch_norm needs both weight and bias, or neither")
    args = (x,) if weight is None else (x, weight, bias)
    return BatchNorm.apply(*args, running_mean=running_mean, running_var=running_var, training=training,
                           momentum=momentum, eps=eps, reduce_fn=reduce_fn or _identity)
