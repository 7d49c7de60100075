"""distbp: a backpropagation engine you can read, trained for real over MPI.

    import distbp as db
    x = db.tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward(); x.grad    # [[2., 4.]]
"""
from . import autograd, backend, distributed, nn, ops, optim, random
from .autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from .backend import (
    cuda_available,
    get_default_dtype,
    get_rng_state,
    initial_seed,
    manual_seed,
    set_default_dtype,
    set_rng_state,
)
from .gradcheck import GradcheckError, gradcheck
from .ops import (
    abs,
    cat,
    clamp,
    clip,
    concatenate,
    exp,
    log,
    matmul,
    maximum,
    mean,
    minimum,
    pad,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    stack,
    sum,
    tanh,
    where,
)

__version__ = "0.1.0"


def _new(fill, shape, dtype, requires_grad, device):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    t = Tensor(fill(shape, dtype or get_default_dtype()), requires_grad=requires_grad)
    return t.to(device) if device else t


def zeros(*shape, dtype=None, requires_grad=False, device=None):
    import numpy
    return _new(numpy.zeros, shape, dtype, requires_grad, device)


def ones(*shape, dtype=None, requires_grad=False, device=None):
    import numpy
    return _new(numpy.ones, shape, dtype, requires_grad, device)


def randn(*shape, dtype=None, requires_grad=False, device=None):
    return _new(lambda s, d: backend.rng().standard_normal(s).astype(d), shape, dtype, requires_grad, device)


def rand(*shape, dtype=None, requires_grad=False, device=None):
    return _new(lambda s, d: backend.rng().random(s).astype(d), shape, dtype, requires_grad, device)


def fit(model, data, **settings) -> dict:
    """Train `model` on `data` as `python -m distbp.train` does (distbp/fitting.py); returns the history."""
    from .fitting import fit as _fit  # the training stack loads on first use, not with `import distbp`
    return _fit(model, data, **settings)


def arange(*args, dtype=None):
    import numpy
    return Tensor(numpy.arange(*args, dtype=dtype))


__all__ = [
    "Function", "GradcheckError", "Tensor", "abs", "arange", "autograd", "backend", "cat", "clamp", "clip", "concatenate",
    "cuda_available", "distributed", "enable_grad", "exp", "fit", "get_default_dtype", "get_rng_state", "gradcheck",
    "initial_seed", "is_grad_enabled", "log", "manual_seed", "matmul", "maximum", "mean", "minimum", "nn", "no_grad", "ones",
    "ops", "optim", "pad", "rand", "randn", "random", "relu", "reshape", "set_default_dtype", "set_rng_state",
    "sigmoid", "softmax", "sqrt", "stack", "sum", "tanh", "tensor", "where", "zeros",
]
