"""Every differentiable op, one Function class each, with the lowercase functions users call.

Each op file imports autograd, backend and, where one op is built from others, sibling op files:
nothing above ops. An op's backward must never write into `gy`
(another branch of the graph may hold the same array). Tensor's operators and op methods are
attached here, by tensor_methods (one table)."""
from . import tensor_methods  # noqa: F401  (attaches Tensor's operators and op methods)
from .conv import conv1d, conv2d
from .elementwise import (
                          abs,
                          add,
                          clamp,
                          clip,
                          div,
                          exp,
                          leaky_relu,
                          log,
                          maximum,
                          minimum,
                          mul,
                          neg,
                          pow,
                          relu,
                          sigmoid,
                          sqrt,
                          sub,
                          tanh,
                          where,
)
from .embedding import embedding
from .linalg import linear, matmul
from .loss import (
                          binary_cross_entropy,
                          binary_cross_entropy_with_logits,
                          cross_entropy,
                          l1_loss,
                          mse_loss,
                          nll_loss,
)
from .norm import batch_norm
from .pool import avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .reduce import amax, log_softmax, max, mean, softmax, std, sum, var
from .shape import (
                          cat,
                          concatenate,
                          flatten,
                          getitem,
                          pad,
                          permute,
                          reshape,
                          squeeze,
                          stack,
                          transpose,
                          unsqueeze,
)

__all__ = [
    "abs", "add", "amax", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cat", "clamp", "clip",
    "concatenate", "cross_entropy", "div", "exp", "flatten", "getitem", "l1_loss", "leaky_relu", "linear",
    "log", "log_softmax", "matmul", "max", "maximum", "mean", "minimum", "mse_loss", "mul", "neg",
    "nll_loss", "pad", "permute", "pow", "relu", "reshape", "sigmoid", "softmax", "sqrt", "squeeze", "stack",
    "std", "sub", "sum", "tanh", "transpose", "unsqueeze", "var", "where",
]
__all__ += ["avg_pool1d", "avg_pool2d", "batch_norm", "conv1d", "conv2d", "embedding", "max_pool1d",
            "max_pool2d"]
