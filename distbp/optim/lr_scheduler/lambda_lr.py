"""LambdaLR: lr = initial_lr * a function of the epoch (closed form only, as torch's)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from ..optimizer import Optimizer
from .base import LRScheduler


class LambdaLR(LRScheduler):
    """lr = initial_lr * lr_lambda(epoch); one function, or one per parameter group."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]],
                 last_epoch: int = -1):
        n = len(optimizer.param_groups)
        if callable(lr_lambda):
            self.lr_lambdas = [lr_lambda] * n
        else:
            if len(lr_lambda) != n:
                raise ValueError(f"Expected {n} lr_lambdas (one per parameter group), but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]

    def state_dict(self) -> dict:
        # functions do not serialise; the caller passes the same lambdas when rebuilding (as in torch)
        return {k: v for k, v in super().state_dict().items() if k != "lr_lambdas"}
