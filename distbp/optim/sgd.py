"""SGD with momentum, dampening, Nesterov and weight decay: torch.optim.SGD's update rule."""
from __future__ import annotations

import numpy

from ..backend import get_array_module
from ..kernels import fused
from .optimizer import Optimizer


def sgd_update(param, grad, buf, *, lr, momentum, dampening, weight_decay, nesterov, first, maximize=False):
    """One SGD step on arrays, in place on `param`; returns the new momentum buffer (or None).

    g = -grad if maximize (first, as torch);  g = g + wd*param;
    buf = g (first step) else momentum*buf + (1-dampening)*g;
    direction = g + momentum*buf (Nesterov) or buf;  param -= lr * direction."""
    xp = get_array_module(param)
    if xp is not numpy and momentum != 0 and not first and not maximize:  # one fused kernel on the GPU
        fused(xp, "sgd_nesterov" if nesterov else "sgd_momentum")(param, grad, buf, lr, momentum,
                                                                  1 - dampening, weight_decay)
        return buf
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    if momentum != 0:
        if first:
            buf = g.copy() if g is grad else g  # g is already a fresh array after negation or decay
        else:
            buf *= momentum
            buf += (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g
    return buf


class SGD(Optimizer):
    """State per parameter: momentum_buffer (only when momentum != 0), torch's name. As in torch, the
    buffer starts as the first step's gradient and lr multiplies the buffer, not each gradient
    (Sutskever et al. start from zero with lr inside; the two differ when lr changes).
    maximize=True ascends: the gradient is negated first, so weight decay still pulls toward zero."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None):
        if not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not momentum >= 0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize,
                                  "foreach": foreach, "differentiable": differentiable, "fused": fused})

    def _step_group(self, group):
        if group["momentum"] == 0 and group["weight_decay"] == 0:
            # plain SGD, the hot path: no state, one line per parameter (maximize flips lr's sign once)
            lr = -group["lr"] if group["maximize"] else group["lr"]
            for p in group["params"]:
                if p.grad is not None:
                    xp = get_array_module(p.data)
                    if xp is not numpy:  # one fused kernel on the GPU (distbp/kernels.py)
                        fused(xp, "sgd")(p.data, p.grad, lr)
                    else:
                        p.data -= lr * p.grad
        else:
            super()._step_group(group)

    def _update(self, p, grad, state, group):
        first = "momentum_buffer" not in state
        buf = sgd_update(p.data, grad, state.get("momentum_buffer"), lr=group["lr"],
                         momentum=group["momentum"], dampening=group["dampening"],
                         weight_decay=group["weight_decay"], nesterov=group["nesterov"], first=first,
                         maximize=group["maximize"])
        if buf is not None:
            state["momentum_buffer"] = buf
