"""Fused elementwise kernels for the GPU path: one pass over memory where NumPy makes several.

On a GPU a small training step is bound by kernel launches and memory passes, not by arithmetic:
`gy * y * (1 - y)` is three kernels and three temporaries in CuPy, one with `cupy.fuse`. Each
formula below is written once, over an array module `xp`, so the same text is

  * the fused kernel on CuPy (`cupy.fuse` traces it into one CUDA kernel; in-place `+=`/`*=`
    on an argument write that argument, which is how the optimizer updates work), and
  * a plain NumPy expression, which the tests compare with the unfused formulas in distbp.ops and
    distbp.optim (the NumPy path itself never calls these: it keeps its own tuned code).

Call sites ask `fused(xp, name)` only when `xp is not numpy`. Formulas take only arrays and Python
numbers (cupy.fuse's rule): no Python branching on values, no shapes.
"""
from __future__ import annotations

import numpy


# ----- activations: forward and backward -----
def sigmoid(xp, x):
    return 0.5 * (1 + xp.tanh(0.5 * x))  # tanh form: no overflow in exp(-x), as distbp.ops


def sigmoid_backward(xp, gy, y):
    return gy * y * (1 - y)


def tanh_backward(xp, gy, y):
    return gy * (1 - y * y)


def relu_backward(xp, gy, y):
    return gy * (y > 0)


# ----- losses -----
def bce_with_logits(xp, x, t):
    return xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))


def bce_with_logits_backward(xp, g, x, t):
    return g * (0.5 * (1 + xp.tanh(0.5 * x)) - t)


def mse_backward(xp, g, diff):
    return g * 2 * diff


# ----- optimizer updates, in place on their array arguments -----
def sgd(xp, param, grad, lr):
    param -= lr * grad


def sgd_momentum(xp, param, grad, buf, lr, momentum, damp, wd):
    """torch's SGD after its first step: buf = momentum*buf + (1-dampening)*(g + wd*p); p -= lr*buf.
    `damp` is 1 - dampening."""
    g = grad + wd * param
    buf *= momentum
    buf += damp * g
    param -= lr * buf


def sgd_nesterov(xp, param, grad, buf, lr, momentum, damp, wd):
    g = grad + wd * param
    buf *= momentum
    buf += damp * g
    param -= lr * (g + momentum * buf)


def adam(xp, param, grad, exp_avg, exp_avg_sq, decay, l2, beta1, c1, beta2, c2, denom_scale, eps, step_size):
    """torch's Adam/AdamW step (no amsgrad, no maximize) in one pass. decay = 1 - lr*wd (AdamW) or 1;
    l2 = wd (Adam) or 0; c1, c2 = 1 - beta1, 1 - beta2; denom_scale = 1/sqrt(1 - beta2^t);
    step_size = lr/(1 - beta1^t). Same operations, in the same order, as distbp.optim.adam_update."""
    param *= decay
    g = grad + l2 * param
    exp_avg *= beta1
    exp_avg += g * c1
    exp_avg_sq *= beta2
    exp_avg_sq += g * g * c2
    param -= exp_avg / (xp.sqrt(exp_avg_sq) * denom_scale + eps) * step_size


FORMULAS = {f.__name__: f for f in (sigmoid, sigmoid_backward, tanh_backward, relu_backward, bce_with_logits,
                                    bce_with_logits_backward, mse_backward, sgd, sgd_momentum, sgd_nesterov, adam)}

_compiled: dict = {}  # (array module, name) -> callable; cupy.fuse caches its kernels per dtype inside


def fused(xp, name: str):
    """The kernel `name` on array module `xp`: `xp.fuse` of its formula (one CUDA kernel on CuPy),
    or the formula as plain NumPy expressions when xp is numpy."""
    key = (xp, name)
    kernel = _compiled.get(key)
    if kernel is None:
        formula = FORMULAS[name]

        def bound(*args):
            return formula(xp, *args)

        bound.__name__ = bound.__qualname__ = name  # cupy.fuse names the CUDA kernel after it
        kernel = bound if xp is numpy else xp.fuse(kernel_name=f"distbp_{name}")(bound)
        _compiled[key] = kernel
    return kernel
