"""RMSprop: torch.optim.RMSprop's update rule (Hinton's lecture 6e; centered form from Graves 2013)."""
from __future__ import annotations

from ..backend import get_array_module
from .optimizer import Optimizer


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, *, lr: float, alpha: float, eps: float,
                   weight_decay: float, momentum: float, maximize: bool = False) -> None:
    """One RMSprop step on arrays, in place on `param` and the buffers (grad_avg is None unless
    centered, momentum_buffer None unless momentum > 0).

    g = -grad if maximize (first, as torch);  g = g + wd*param;  v = alpha*v + (1-alpha)*g^2
    centered: a = alpha*a + (1-alpha)*g, v~ = v - a^2
    denom = sqrt(v or v~) + eps;  momentum: buf = momentum*buf + g/denom, param -= lr*buf
    else: param -= lr * g/denom.  NOTE: eps is outside the sqrt, as in torch (TensorFlow puts it inside)."""
    xp = get_array_module(param)
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad + weight_decay * param
    tmp = grad * grad  # one scratch array for the temporaries (the step is memory-bound)
    tmp *= 1 - alpha
    square_avg *= alpha
    square_avg += tmp
    if grad_avg is not None:
        xp.multiply(grad, 1 - alpha, out=tmp)
        grad_avg *= alpha
        grad_avg += tmp
        xp.multiply(grad_avg, grad_avg, out=tmp)
        xp.subtract(square_avg, tmp, out=tmp)
        xp.sqrt(tmp, out=tmp)
    else:
        xp.sqrt(square_avg, out=tmp)
    tmp += eps
    xp.divide(grad, tmp, out=tmp)  # tmp = g / denom
    if momentum_buffer is not None:
        momentum_buffer *= momentum
        momentum_buffer += tmp
        xp.multiply(momentum_buffer, lr, out=tmp)
    else:
        tmp *= lr
    param -= tmp


class RMSprop(Optimizer):
    """State per parameter: step, square_avg (and momentum_buffer with momentum, grad_avg when
    centered), torch's names; every buffer starts at zero. As in torch, the flags after `centered` may
    be passed by position."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False):
        if not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not momentum >= 0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not alpha >= 0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                                  "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                                  "maximize": maximize, "differentiable": differentiable})

    def _update(self, p, grad, state, group):
        if not state:
            xp = get_array_module(p.data)
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        state["step"] += 1
        rmsprop_update(p.data, grad, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer"),
                       lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                       weight_decay=group["weight_decay"], momentum=group["momentum"], maximize=group["maximize"])
