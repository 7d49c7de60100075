"""OneCycleLR: the 1cycle policy, lr (and momentum) through warm-up and annealing phases."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..optimizer import Optimizer
from .base import LRScheduler, _check_positive_int


class OneCycleLR(LRScheduler):
    """1cycle (Smith & Topin 2017), torch's: lr goes from max_lr/div_factor up to max_lr by step
    pct_start*total_steps - 1, then anneals ('cos' or 'linear') to initial_lr/final_div_factor at step
    total_steps - 1; three_phase goes back down to initial_lr symmetrically, then to the minimum.
    With cycle_momentum the group's momentum (or beta1 of betas) moves the opposite way, between
    max_momentum and base_momentum. Closed form only (not chainable, as torch's); step() per batch,
    at most total_steps times."""

    def __init__(self, optimizer: Optimizer, max_lr: float | Sequence[float], total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | Sequence[float] = 0.85, max_momentum: float | Sequence[float] = 0.95,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
            _check_positive_int("epochs", epochs)
            _check_positive_int("steps_per_epoch", steps_per_epoch)
            total_steps = epochs * steps_per_epoch
        _check_positive_int("total_steps", total_steps)
        if not (isinstance(pct_start, float) and 0 <= pct_start <= 1):
            raise ValueError(f"Invalid pct_start: {pct_start} (must be a float in [0, 1])")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"Invalid anneal_strategy: {anneal_strategy!r} (must be 'cos' or 'linear')")
        self.total_steps, self.anneal_strategy, self.cycle_momentum = total_steps, anneal_strategy, cycle_momentum
        # phases: (last step, lr from, lr to, momentum from, momentum to), the last four naming group keys
        up = (float(pct_start * total_steps) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum")
        if three_phase:
            down = (float(2 * pct_start * total_steps) - 2, "max_lr", "initial_lr", "base_momentum",
                    "max_momentum")
            self._phases = [up, down, (total_steps - 1, "initial_lr", "min_lr", "max_momentum",
                                       "max_momentum")]
        else:
            self._phases = [up, (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        groups = optimizer.param_groups
        if last_epoch == -1:
            for group, top in zip(groups, _per_group("max_lr", max_lr, groups)):
                group["initial_lr"], group["max_lr"] = top / div_factor, top
                group["min_lr"] = group["initial_lr"] / final_div_factor
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in optimizer.defaults
            if last_epoch == -1:
                for group, hi, lo in zip(groups, _per_group("max_momentum", max_momentum, groups),
                                         _per_group("base_momentum", base_momentum, groups)):
                    self._set_momentum(group, hi)
                    group["max_momentum"], group["base_momentum"] = hi, lo
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _set_momentum(self, group: dict, m: float) -> None:
        if self.use_beta1:
            group["betas"] = (m, *group["betas"][1:])
        else:
            group["momentum"] = m

    def get_lr(self):
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps is "
                             f"{self.total_steps}")
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
            if step <= end or i == len(self._phases) - 1:
                pct = (step - start) / (end - start)
                break
            start = end
        if self.cycle_momentum:
            for group in self.optimizer.param_groups:
                self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
        return [self._anneal(group[lr0], group[lr1], pct) for group in self.optimizer.param_groups]


def _per_group(name: str, value, groups) -> list:
    """One value per param group: a scalar repeated, or a list/tuple of exactly that length."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name} must have one value per param group: got {len(value)} for {len(groups)}")
        return list(value)
    return [value] * len(groups)
