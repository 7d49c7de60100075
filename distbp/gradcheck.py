"""Check backward against central finite differences in float64.

    import distbp as db
    x = db.tensor(np.random.randn(3, 4), requires_grad=True, dtype=np.float64)
    db.gradcheck(lambda x: (x * x).sum(), [x])    # True, or raises GradcheckError naming the input

The function may return any tensor, or a tuple of tensors (a multi-output Function's); a non-scalar
output is reduced with a fixed random weighting so every output element's gradient is exercised, and
several outputs are checked at once (one backward over all of them, autograd.backward).
"""
from __future__ import annotations

import numpy

from . import autograd
from .autograd import Tensor
from .backend import get_array_module, to_numpy


class GradcheckError(AssertionError):
    pass


def numerical_grad(fn, inputs, index, eps=1e-6, weights=None):
    """d(sum(weights * fn(*inputs)))/d inputs[index] by central differences (in place, restored).
    For an fn returning a tuple, `weights` holds one weighting per output (None: plain sum)."""
    x = inputs[index].data
    grad = numpy.zeros(x.shape, dtype=numpy.float64)
    flat = x.reshape(-1)  # a view: x is contiguous (checked by the caller)
    for i in range(flat.size):
        orig = flat[i].item()
        flat[i] = orig + eps
        plus = _scalar(fn(*inputs), weights)
        flat[i] = orig - eps
        minus = _scalar(fn(*inputs), weights)
        flat[i] = orig
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def _scalar(out, weights):
    if isinstance(out, (tuple, list)):
        ws = weights if weights is not None else [None] * len(out)
        return sum(_scalar(o, w) for o, w in zip(out, ws))
    data = to_numpy(out.data if isinstance(out, Tensor) else out).astype(numpy.float64)
    return float((data * weights).sum()) if weights is not None else float(data.sum())


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0) -> bool:
    """True when backward matches finite differences for every input that requires grad.

    Inputs must be float64 tensors (float32 differences are too coarse to trust)."""
    inputs = list(inputs)
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad:
            if t.dtype != numpy.float64:
                raise GradcheckError(f"input {i} is {t.dtype}; gradcheck needs float64 inputs")
            if not t.data.flags.c_contiguous:
                t.data = get_array_module(t.data).ascontiguousarray(t.data)
    out = fn(*inputs)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    if not outs or not all(isinstance(o, Tensor) for o in outs):
        raise GradcheckError("fn must return a Tensor or a tuple of Tensors")
    rng = numpy.random.default_rng(seed)
    # One weighting per output: random for a non-scalar one, none for a scalar, zeros for an output
    # without gradient (indices), which then plays no part in the differences either.
    weights = [None if o.data.size == 1 else rng.standard_normal(o.shape) for o in outs]
    weights = [w if o.requires_grad else numpy.zeros(o.shape) for o, w in zip(outs, weights)]
    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    pairs = [(o, w) for o, w in zip(outs, weights) if o.requires_grad] or [(outs[0], weights[0])]
    autograd.backward([o for o, _ in pairs],  # (if none requires grad, backward says so)
                      [get_array_module(o.data).asarray(numpy.ones(o.shape) if w is None else w, dtype=o.dtype)
                       for o, w in pairs])
    if isinstance(out, Tensor):
        weights = weights[0]
    for i, t in enumerate(inputs):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = numpy.zeros(t.shape) if t.grad is None else to_numpy(t.grad)
        numeric = numerical_grad(fn, inputs, i, eps, weights)
        if not numpy.allclose(analytic, numeric, atol=atol, rtol=rtol):
            err = numpy.abs(analytic - numeric)
            worst = tuple(int(i) for i in numpy.unravel_index(err.argmax(), err.shape))
            raise GradcheckError(
                f"gradient of input {i} (shape {t.shape}) differs from finite differences: max abs "
                f"error {err.max():.3g} at index {worst}: backward {analytic[worst]:.6g}, numeric "
                f"{numeric[worst]:.6g}")
    return True
