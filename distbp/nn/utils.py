"""Gradient clipping, torch.nn.utils's clip_grad_norm_ and clip_grad_value_ (in place on .grad)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy

from .. import backend
from ..autograd import Tensor


def _grads(parameters: Tensor | Iterable[Tensor]) -> list:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def _norm(g, xp, p: float):
    """The p-norm of one gradient, flattened (torch.linalg.vector_norm)."""
    if p == 2:
        return xp.sqrt(xp.vdot(g, g).real) if g.size else xp.zeros((), g.dtype)
    if math.isinf(p):
        return xp.abs(g).max() if g.size else xp.zeros((), g.dtype)
    if p == 0:
        return xp.count_nonzero(g).astype(g.dtype)
    return (xp.abs(g) ** p).sum() ** (1 / p)


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False):
    """Scale all gradients together so that their joint norm is at most max_norm; return that norm
    before clipping (a 0-d array on the gradients' device).

    total = norm([norm(g) for g in grads], norm_type);  g *= min(1, max_norm / (total + 1e-6)).
    The 1e-6 is torch's: it keeps the coefficient finite when every gradient is zero. Under MPI
    data parallel call it after the gradients are averaged, so every rank clips by the same factor."""
    max_norm, norm_type = float(max_norm), float(norm_type)
    if max_norm < 0 or math.isnan(max_norm):
        raise ValueError(f"Invalid max_norm: {max_norm} (must be >= 0)")
    if norm_type < 0 or math.isnan(norm_type):
        raise ValueError(f"Invalid norm_type: {norm_type} (must be >= 0 or inf)")
    grads = _grads(parameters)
    if not grads:
        return numpy.zeros((), dtype=backend.get_default_dtype())
    xp = backend.get_array_module(*grads)
    norms = xp.stack([_norm(g, xp, norm_type) for g in grads])
    total = xp.asarray(_norm(norms, xp, norm_type))
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} of the gradients is {float(total)}, so it "
                           "cannot be clipped; pass error_if_nonfinite=False to scale by it anyway")
    coef = max_norm / (total + 1e-6)
    if xp is numpy and coef >= 1:
        return total  # under the limit: torch multiplies by 1.0; skipping it is the same and free
    coef = xp.minimum(coef, 1.0)
    for g in grads:
        g *= coef.astype(g.dtype, copy=False)
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    if clip_value < 0:
        raise ValueError(f"Invalid clip_value: {clip_value} (must be >= 0)")
    for g in _grads(parameters):
        xp = backend.get_array_module(g)
        xp.clip(g, -clip_value, clip_value, out=g)


__all__ = ["clip_grad_norm_", "clip_grad_value_"]
