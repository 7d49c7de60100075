"""Tensor's operators and op methods, attached to distbp.autograd.Tensor in one table: each method
is the op's own function (`t + o` calls add(t, o), `t.sum(1)` calls sum(t, 1)), so an op with a
method is its Function, its function and one line in METHODS."""
from __future__ import annotations

from ..autograd import Tensor

# Many of these names are distbp.ops' exports too; they come from the op modules, not from the
# package, because the package imports this module before it binds them.
from .elementwise import (
    _tensorish,
    abs,
    add,
    clip,
    div,
    exp,
    log,
    mul,
    neg,
    pow,
    relu,
    sigmoid,
    sqrt,
    sub,
    tanh,
    to,
)
from .linalg import matmul
from .reduce import amax, log_softmax, max, mean, softmax, std, sum, var
from .shape import flatten, getitem, permute, reshape, squeeze, transpose, unsqueeze


def _reflected(op):
    """`o - t` and friends: the other operand, made an array like t's, goes first."""
    def method(self, other):
        return op(_tensorish(other, self), self)
    method.__name__ = f"__r{op.__name__}__"
    return method


METHODS = {
    "__add__": add, "__radd__": add, "__sub__": sub, "__rsub__": _reflected(sub),
    "__mul__": mul, "__rmul__": mul, "__truediv__": div, "__rtruediv__": _reflected(div),
    "__pow__": pow, "__rpow__": _reflected(pow), "__matmul__": matmul, "__rmatmul__": _reflected(matmul),
    "__neg__": neg, "__abs__": abs, "__getitem__": getitem,
    "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "relu": relu, "sigmoid": sigmoid, "tanh": tanh,
    "clip": clip, "clamp": clip, "softmax": softmax, "log_softmax": log_softmax,
    "sum": sum, "mean": mean, "max": max, "amax": amax, "var": var, "std": std,
    "reshape": reshape, "view": reshape, "flatten": flatten, "permute": permute, "transpose": transpose,
    "unsqueeze": unsqueeze, "squeeze": squeeze, "T": property(transpose),
    "to": to,
}

for _name, _method in METHODS.items():
    setattr(Tensor, _name, _method)
