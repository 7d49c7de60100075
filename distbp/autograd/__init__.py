"""Tensor and reverse-mode autograd.

    grad_mode.py  no_grad, enable_grad, is_grad_enabled
    tensor.py     Tensor (no op: distbp.ops attaches the operators and op methods)
    function.py   Function, apply (records the graph), multi-output nodes, unbroadcast
    engine.py     the backward walk, leaf accumulation, queue_callback
    deferred.py   defer_weight_grads: parameter gradients stashed in backward, computed at once later
    api.py        backward() and grad() over several roots

Inspired by micrograd (karpathy) and early tinygrad; ctx-style backward as in Chainer/PyTorch.
"""
from .api import backward, grad
from .deferred import WeightGradStash, defer_weight_grads
from .engine import queue_callback
from .function import Function, unbroadcast
from .grad_mode import enable_grad, is_grad_enabled, no_grad
from .tensor import Tensor, tensor

__all__ = ["Function", "Tensor", "WeightGradStash", "backward", "defer_weight_grads", "enable_grad", "grad",
           "is_grad_enabled", "no_grad", "queue_callback", "tensor", "unbroadcast"]
