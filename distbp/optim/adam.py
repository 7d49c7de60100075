"""Adam and AdamW: torch.optim.Adam / AdamW's update rules (Kingma & Ba 2015; Loshchilov & Hutter 2019)."""
from __future__ import annotations

import numpy

from ..backend import get_array_module
from ..kernels import fused
from .optimizer import Optimizer


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step: int, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float, decoupled: bool, maximize: bool = False) -> None:
    """One Adam step on arrays, in place on `param` and the moment buffers. `step` counts from 1.

    g = -grad if maximize (first, as torch)
    AdamW (decoupled):  param *= 1 - lr*wd            Adam: g = grad + wd*param (L2 in the gradient)
    m = b1*m + (1-b1)*g;   v = b2*v + (1-b2)*g^2;   vmax = max(vmax, v) when amsgrad
    param -= lr/(1-b1^t) * m / (sqrt(v or vmax)/sqrt(1-b2^t) + eps)
    NOTE: eps is added after the bias correction of sqrt(v), as torch does (the paper adds it to
    sqrt(v_hat), which is the same thing); `max_exp_avg_sq` is None unless amsgrad."""
    xp = get_array_module(param)
    if xp is not numpy and max_exp_avg_sq is None and not maximize:  # one fused kernel on the GPU
        fused(xp, "adam")(param, grad, exp_avg, exp_avg_sq, 1 - lr * weight_decay if decoupled else 1.0,
                          0.0 if decoupled else weight_decay, beta1, 1 - beta1, beta2, 1 - beta2,
                          1 / (1 - beta2 ** step) ** 0.5, eps, lr / (1 - beta1 ** step))
        return
    if maximize:
        grad = -grad
    if weight_decay != 0:
        if decoupled:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    # one scratch array for every temporary: the step is memory-bound, so fewer passes is faster
    tmp = grad * (1 - beta1)
    exp_avg *= beta1
    exp_avg += tmp
    xp.multiply(grad, grad, out=tmp)
    tmp *= 1 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += tmp
    if max_exp_avg_sq is not None:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    xp.sqrt(exp_avg_sq if max_exp_avg_sq is None else max_exp_avg_sq, out=tmp)
    tmp *= 1 / (1 - beta2 ** step) ** 0.5
    tmp += eps
    xp.divide(exp_avg, tmp, out=tmp)  # tmp = m / denom
    tmp *= lr / (1 - beta1 ** step)
    param -= tmp


class Adam(Optimizer):
    """Adam with bias correction; weight_decay adds wd*param to the gradient (L2), as torch.optim.Adam.
    State per parameter: step, exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad), torch's names.
    decoupled_weight_decay=True makes it AdamW, as in torch; maximize=True negates the gradient first."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False):
        if not lr >= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0 <= beta < 1:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not isinstance(decoupled_weight_decay, bool):
            raise TypeError(f"decoupled_weight_decay must be a bool, got {decoupled_weight_decay!r}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "amsgrad": amsgrad, "maximize": maximize, "foreach": foreach,
                                  "capturable": capturable, "differentiable": differentiable, "fused": fused,
                                  "decoupled_weight_decay": decoupled_weight_decay})

    def _update(self, p, grad, state, group):
        if not state:
            xp = get_array_module(p.data)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        adam_update(p.data, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                    step=state["step"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                    weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"],
                    maximize=group["maximize"])


class AdamW(Adam):
    """Adam with decoupled weight decay: param *= 1 - lr*weight_decay before the Adam step
    (torch.optim.AdamW; note the default weight_decay is 1e-2, not 0)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable, fused=fused, decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # AdamW stays decoupled whatever the saved groups say, as torch's
            group["decoupled_weight_decay"] = True
