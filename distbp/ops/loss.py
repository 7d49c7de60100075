"""Loss functions, each one fused node with PyTorch's `reduction` ('mean', 'sum', 'none')."""
from __future__ import annotations

import numpy

from ..autograd import Function, Tensor
from ..backend import get_array_module, is_array
from ..kernels import fused

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(values, reduction):
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _scale(gy, reduction, n):
    """The gradient each element receives from the reduction."""
    return gy / n if reduction == "mean" else gy


_ROWS = {}  # n -> read-only numpy.arange(n): cross entropy indexes rows with it every step


def _row_indices(xp, n):
    if xp is not numpy:
        return xp.arange(n)
    rows = _ROWS.get(n)
    if rows is None:
        if len(_ROWS) > 64:  # batch sizes seen are few; bound it anyway
            _ROWS.clear()
        rows = _ROWS[n] = numpy.arange(n)
        rows.flags.writeable = False
    return rows


class CrossEntropy(Function):
    """log_softmax + negative log likelihood over dim 1 for integer class targets.
    logits (N, C) or (N, C, d...) with targets (N,) or (N, d...). Targets equal to
    `ignore_index` add nothing and are left out of the mean, as in PyTorch."""

    def forward(self, logits, targets, reduction="mean", ignore_index=-100):
        xp = get_array_module(logits)
        if logits.ndim > 2:  # (N, C, d...) -> (N*d..., C)
            c = logits.shape[1]
            logits = xp.moveaxis(logits, 1, -1).reshape(-1, c)
            self.spatial = targets.shape
            targets = targets.reshape(-1)
        else:
            self.spatial = None
        self.reduction = reduction
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        rows = _row_indices(xp, len(targets))
        c = logits.shape[1]
        n = len(targets)
        # argmin, not min: a C method without numpy's Python wrapper, and this runs every step
        if n and (ignore_index >= 0 or (targets.dtype.kind == "i" and targets[targets.argmin()] < 0)):
            valid = targets != ignore_index
            kept = targets[valid]
            bad = (kept < 0) | (kept >= c)
            if bool(bad.any()):  # numpy would wrap a negative class index silently, cupy any bad one
                raise ValueError(f"cross_entropy target {int(kept[bad][0])} is out of range; class targets "
                                 f"must be in [0, {c}) or equal ignore_index ({ignore_index})")
            targets = xp.where(valid, targets, 0)
            self.n = int(kept.size)
        else:  # the usual case: nothing to ignore
            valid, self.n = None, n
        try:
            picked = shifted[rows, targets]
        except IndexError:  # a target >= C
            raise ValueError(f"cross_entropy target {int(targets.max())} is out of range; class targets "
                             f"must be in [0, {c}) or equal ignore_index ({ignore_index})") from None
        nll = xp.log(s[:, 0]) - picked
        if valid is not None:
            nll *= valid
        e /= s  # the softmax, in place: backward's starting point
        self.probs, self.rows, self.targets, self.valid = e, rows, targets, valid
        self.logits = logits  # a reference, no copy: backward recomputes the softmax if called again
        if reduction == "none":
            return nll.reshape(self.spatial) if self.spatial is not None else nll
        total = nll.sum()
        return total / self.n if reduction == "mean" else total

    def backward(self, gy):
        g = self.probs  # turned into the gradient in place, so the first backward owns it
        if g is None:  # a second backward through a retained graph: the softmax again
            shifted = self.logits - self.logits.max(axis=1, keepdims=True)
            g = get_array_module(shifted).exp(shifted)
            g /= g.sum(axis=1, keepdims=True)
        self.probs = None
        g[self.rows, self.targets] -= 1
        if self.reduction == "none":
            g *= gy.reshape(-1)[:, None]
        else:
            if self.reduction == "mean":  # on the CPU as a Python float: numpy's 0-d arithmetic costs more
                gy = float(gy) / self.n if gy.__class__ is numpy.ndarray else gy / self.n
            g *= gy
        if self.valid is not None:
            g *= self.valid[:, None]
        if self.spatial is not None:
            xp = get_array_module(g)
            n, c = self.spatial[0], g.shape[1]
            g = xp.moveaxis(g.reshape((n,) + tuple(self.spatial[1:]) + (c,)), -1, 1)
        return g, None


class MSE(Function):
    def forward(self, x, t, reduction="mean"):
        self.diff, self.reduction = x - t, reduction
        return _reduce(self.diff * self.diff, reduction)

    def backward(self, gy):
        xp = get_array_module(self.diff)
        if xp is not numpy:  # one fused kernel on the GPU (distbp/kernels.py)
            g = fused(xp, "mse_backward")(_scale(gy, self.reduction, self.diff.size), self.diff)
        else:
            g = _scale(gy, self.reduction, self.diff.size) * 2 * self.diff
        nx, nt = self.needs_input_grad
        return (g if nx else None, -g if nt else None)


class L1(Function):
    def forward(self, x, t, reduction="mean"):
        xp = get_array_module(x)
        diff = x - t
        self.sign, self.reduction, self.n = xp.sign(diff), reduction, diff.size
        return _reduce(abs(diff), reduction)

    def backward(self, gy):
        g = _scale(gy, self.reduction, self.n) * self.sign
        nx, nt = self.needs_input_grad
        return (g if nx else None, -g if nt else None)


class BCE(Function):
    """Binary cross entropy on probabilities; log clamped at -100 as PyTorch does."""

    def forward(self, p, t, reduction="mean"):
        xp = get_array_module(p)
        self.p, self.t, self.reduction = p, t, reduction
        with numpy.errstate(divide="ignore"):  # log(0) = -inf is expected here: clamped next
            log_p = xp.maximum(xp.log(p), -100)
            log_1p = xp.maximum(xp.log(1 - p), -100)
        return _reduce(-(t * log_p + (1 - t) * log_1p), reduction)

    def backward(self, gy):
        xp = get_array_module(gy)
        p, t = self.p, self.t
        eps = 1e-12  # PyTorch clamps the denominator the same way
        g = _scale(gy, self.reduction, p.size)
        gp = g * (p - t) / xp.maximum(p * (1 - p), eps)
        gt = g * (xp.log(1 - p) - xp.log(p)) if self.needs_input_grad[1] else None
        return gp, gt


class BCEWithLogits(Function):
    """max(x,0) - x*t + log(1 + exp(-|x|)): the stable form of BCE(sigmoid(x), t)."""

    def forward(self, x, t, reduction="mean", pos_weight=None):
        xp = get_array_module(x)
        self.x, self.t, self.reduction, self.pw = x, t, reduction, pos_weight
        if pos_weight is None and xp is not numpy:  # one fused kernel on the GPU (distbp/kernels.py)
            return _reduce(fused(xp, "bce_with_logits")(x, t), reduction)
        log1pexp = xp.log1p(xp.exp(-abs(x)))
        if pos_weight is None:
            loss = xp.maximum(x, 0) - x * t + log1pexp
        else:  # torch: (1 - t) x + (1 + (pw - 1) t) * log(1 + exp(-x))
            lw = 1 + (pos_weight - 1) * t
            loss = (1 - t) * x + lw * (log1pexp + xp.maximum(-x, 0))
        return _reduce(loss, reduction)

    def backward(self, gy):
        xp = get_array_module(gy)
        x, t = self.x, self.t
        g = _scale(gy, self.reduction, x.size)
        if self.pw is None and xp is not numpy:
            gx = fused(xp, "bce_with_logits_backward")(g, x, t)
            return gx, -g * x if self.needs_input_grad[1] else None
        sig = 0.5 * (1 + xp.tanh(0.5 * x))
        if self.pw is None:
            gx = g * (sig - t)
        else:
            lw = 1 + (self.pw - 1) * t
            gx = g * ((1 - t) - lw * (1 - sig))
        gt = -g * x if self.pw is None else None
        if self.needs_input_grad[1] and gt is None:
            gt = g * (-x + (self.pw - 1) * (xp.log1p(xp.exp(-abs(x))) + xp.maximum(-x, 0)))
        return gx, gt if self.needs_input_grad[1] else None


def _target(t, like):
    return t if isinstance(t, Tensor) else get_array_module(like.data).asarray(t)


def cross_entropy(logits, target, reduction="mean", ignore_index=-100):
    if reduction not in _REDUCTIONS:
        _check_reduction(reduction)
    t = target.data if isinstance(target, Tensor) else target
    if not is_array(t):
        t = get_array_module(logits.data).asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy expects integer class targets, got dtype {t.dtype}")
    shape = logits.data.shape
    if not (len(shape) == 2 and t.shape == shape[:1]) and (len(shape) < 2 or t.shape != shape[:1] + shape[2:]):
        raise ValueError(f"cross_entropy needs logits (N, C, d...) and targets (N, d...); got logits "
                         f"{tuple(shape)} and targets {t.shape}")
    return CrossEntropy.apply(logits, t, reduction=reduction, ignore_index=ignore_index)


def mse_loss(input, target, reduction="mean"):
    _check_reduction(reduction)
    return MSE.apply(input, _target(target, input), reduction=reduction)


def l1_loss(input, target, reduction="mean"):
    _check_reduction(reduction)
    return L1.apply(input, _target(target, input), reduction=reduction)


def binary_cross_entropy(input, target, reduction="mean"):
    _check_reduction(reduction)
    return BCE.apply(input, _target(target, input), reduction=reduction)


def binary_cross_entropy_with_logits(input, target, reduction="mean", pos_weight=None):
    _check_reduction(reduction)
    pw = pos_weight.data if isinstance(pos_weight, Tensor) else pos_weight
    return BCEWithLogits.apply(input, _target(target, input), reduction=reduction, pos_weight=pw)


def nll_loss(log_probs, target, reduction="mean"):
    """Negative log likelihood of integer targets given log-probabilities (N, C)."""
    _check_reduction(reduction)
    from .shape import getitem
    t = target.data if isinstance(target, Tensor) else get_array_module(log_probs.data).asarray(target)
    xp = get_array_module(t)
    picked = -getitem(log_probs, (xp.arange(len(t)), t))
    if reduction == "none":
        return picked
    return picked.mean() if reduction == "mean" else picked.sum()
