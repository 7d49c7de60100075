"""distbp.nn.functional (import as F): the stateless forms of the layers and losses."""
from __future__ import annotations

from ..ops import (
                   binary_cross_entropy,
                   binary_cross_entropy_with_logits,
                   cross_entropy,
                   l1_loss,
                   leaky_relu,
                   linear,
                   log_softmax,
                   mse_loss,
                   nll_loss,
                   pad,
                   relu,
                   sigmoid,
                   softmax,
                   tanh,
)
from ..ops.conv import conv1d, conv2d
from ..ops.embedding import embedding
from ..ops.norm import batch_norm
from ..ops.pool import avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .dropout import dropout

__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "l1_loss", "leaky_relu",
    "linear", "log_softmax", "mse_loss", "nll_loss", "pad", "relu", "sigmoid", "softmax", "tanh",
]
__all__ += [
    "avg_pool1d", "avg_pool2d", "batch_norm", "conv1d", "conv2d", "dropout", "embedding", "max_pool1d",
    "max_pool2d",
]
