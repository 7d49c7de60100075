"""Check backward against central finite differences in float64.

    import distbp as db
    x = db.tensor(np.random.randn(3, 4), requires_grad=True, dtype=np.float64)
    db.gradcheck(lambda x: (x * x).sum(), [x])    # True, or raises GradcheckError naming the input

The function may return any tensor; a non-scalar output is reduced with a fixed random weighting
so every output element's gradient is exercised.
"""
from __future__ import annotations

import numpy

from .autograd import Tensor
from .backend import get_array_module, to_numpy


class GradcheckError(AssertionError):
    pass


def numerical_grad(fn, inputs, index, eps=1e-6, weights=None):
    """d(sum(weights * fn(*inputs)))/d inputs[index] by central differences (in place, restored)."""
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
    if not isinstance(out, Tensor):
        raise GradcheckError("fn must return a Tensor")
    weights = None
    if out.data.size != 1:
        weights = numpy.random.default_rng(seed).standard_normal(out.shape)
    for t in inputs:
        if isinstance(t, Tensor):
            t.grad = None
    seed_grad = numpy.ones(out.shape) if weights is None else weights
    xp = get_array_module(out.data)
    out.backward(xp.asarray(seed_grad, dtype=out.dtype))
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
