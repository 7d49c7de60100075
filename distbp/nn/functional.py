"""distbp.nn.functional (import as F): the stateless forms of the layers and losses."""
from __future__ import annotations

from ..ops import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, l1_loss,
                   leaky_relu, linear, log_softmax, mse_loss, nll_loss, pad, relu, sigmoid, softmax, tanh)

__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "l1_loss", "leaky_relu",
    "linear", "log_softmax", "mse_loss", "nll_loss", "pad", "relu", "sigmoid", "softmax", "tanh",
]
