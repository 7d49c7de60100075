"""Learning-rate schedules with torch.optim.lr_scheduler's names and values.

    sched = StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(epochs):
        train_one_epoch(...)      # calls opt.step()
        sched.step()              # then advance the schedule

As in torch, step() uses each schedule's chainable form (`get_lr`: the next lr from the group's
current lr), so schedules compose (ChainedScheduler, SequentialLR, an lr changed by hand) and a
schedule gives torch's values bit for bit. The closed form (`_get_closed_form_lr`: lr from
`base_lrs` and `last_epoch`) is used where torch uses it: when SequentialLR starts the next schedule
at a milestone. LambdaLR and OneCycleLR have only a closed form, as in torch. Construct schedulers
before loading an optimizer state_dict: a constructor's first step (LinearLR, ConstantLR) scales
the current lr. ReduceLROnPlateau's step() takes the metric.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence

from .optimizer import Optimizer


class LRScheduler:
    """Base: sets each group's lr to `get_lr()` at construction (epoch 0) and at every step(). A subclass
    defines get_lr(), and _get_closed_form_lr() too when get_lr() is a chainable form."""

    _is_initial = False  # True only during the constructor's step (torch's _initial_mode)

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when "
                                   f"resuming with last_epoch={last_epoch}; load the optimizer state first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self) -> None:
        self._is_initial = True
        try:
            self.step()
        finally:
            del self._is_initial  # back to the class's False, and out of state_dict

    def get_lr(self) -> list[float]:
        raise NotImplementedError

    def _get_closed_form_lr(self) -> list[float]:
        """The lr at `last_epoch` from `base_lrs` alone (get_lr() where that is already closed)."""
        return self.get_lr()

    def step(self) -> None:
        self.last_epoch += 1
        self._set_lrs(self.get_lr())

    def _restart(self) -> None:
        """Epoch 0 again, by the closed form (torch's `_update_lr(0)`, at SequentialLR's milestones)."""
        self.last_epoch = 0
        self._set_lrs(self._get_closed_form_lr())

    def _lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def _set_lrs(self, lrs) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = self._lrs()

    def get_last_lr(self) -> list[float]:
        """The lr of each group as this scheduler last set it."""
        return self._last_lr

    def state_dict(self) -> dict:
        """Everything but the optimizer (torch's layout; save the optimizer's own state_dict too)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


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


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size); step() multiplies by gamma every step_size epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        _check_positive_int("step_size", step_size)
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = initial_lr * gamma ** (number of milestones <= epoch); a repeated milestone counts twice."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch: int = -1):
        self.milestones = sorted(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        n = self.milestones.count(self.last_epoch)
        return [lr * self.gamma ** n for lr in self._lrs()] if n else self._lrs()

    def _get_closed_form_lr(self):
        return [base * self.gamma ** bisect_right(self.milestones, self.last_epoch) for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr = initial_lr * factor for epochs < total_iters, then initial_lr (step() divides by factor at
    total_iters, as torch's, so factor 0 fails there)."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1):
        if not 0 <= factor <= 1:
            raise ValueError(f"Invalid factor: {factor} (must be in [0, 1])")
        _check_positive_int("total_iters", total_iters)
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self._lrs()]
        if self.last_epoch != self.total_iters:
            return self._lrs()
        return [lr * (1.0 / self.factor) for lr in self._lrs()]

    def _get_closed_form_lr(self):
        held = self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)
        return [base * held for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = initial_lr * gamma ** epoch; step() multiplies by gamma."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return self._lrs() if self._is_initial else [lr * self.gamma for lr in self._lrs()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2  (SGDR without restarts;
    past T_max it rises again, period 2*T_max, as torch's does). step() uses torch's recursive form:
    lr' = eta_min + (lr - eta_min) * (1 + cos(pi*e/T_max)) / (1 + cos(pi*(e-1)/T_max)), and an additive
    step on leaving the minimum, where that ratio would be 0/0."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if not T_max > 0:
            raise ValueError(f"Invalid T_max: {T_max} (must be > 0)")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, t = self.last_epoch, self.T_max
        if self._is_initial:
            return self._lrs()
        if (e - 1 - t) % (2 * t) == 0:
            return [lr + (base - self.eta_min) * (1 - math.cos(math.pi / t)) / 2
                    for lr, base in zip(self._lrs(), self.base_lrs)]
        ratio = (1 + math.cos(math.pi * e / t)) / (1 + math.cos(math.pi * (e - 1) / t))
        return [ratio * (lr - self.eta_min) + self.eta_min for lr in self._lrs()]

    def _get_closed_form_lr(self):
        c = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warmup (or decay): lr = initial_lr * factor, factor going from start_factor to end_factor
    over total_iters steps, then held."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"Invalid start_factor: {start_factor} (must be in (0, 1])")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"Invalid end_factor: {end_factor} (must be in [0, 1])")
        _check_positive_int("total_iters", total_iters)
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, start, end = self.last_epoch, self.start_factor, self.end_factor
        if e == 0:
            return [lr * start for lr in self._lrs()]
        if self._is_initial or e > self.total_iters:
            return self._lrs()
        ratio = 1.0 + (end - start) / (self.total_iters * start + (e - 1) * (end - start))
        return [lr * ratio for lr in self._lrs()]

    def _get_closed_form_lr(self):
        t = min(self.total_iters, self.last_epoch) / self.total_iters
        factor = self.start_factor + (self.end_factor - self.start_factor) * t
        return [base * factor for base in self.base_lrs]


class _Composite(LRScheduler):
    """A scheduler of schedulers: checks them, and saves their states inside its own."""

    def _adopt(self, schedulers, optimizer) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler")
        for i, s in enumerate(schedulers):
            if not hasattr(s, "optimizer"):
                raise TypeError(f"{name}: scheduler at index {i} has no `optimizer` attribute")
            if isinstance(s, ReduceLROnPlateau):  # a ValueError, as in torch
                msg = f"{name} does not support ReduceLROnPlateau (its step() takes the metric), index {i}"
                raise ValueError(msg)  # noqa: TRY004
            if s.optimizer is not optimizer:
                raise ValueError(f"{name} expects all schedulers to belong to the same optimizer, but "
                                 f"{type(s).__name__} at index {i} has another")
        self._schedulers, self.optimizer = list(schedulers), optimizer

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "_schedulers"})
        for s, state in zip(self._schedulers, state_dict["_schedulers"]):
            s.load_state_dict(state)


class SequentialLR(_Composite):
    """schedulers[i] runs from milestones[i-1] on: at its milestone it restarts at epoch 0 by its closed
    form (from initial_lr), then steps in its chainable form. Construction resets lr to initial_lr
    and undoes the constructor steps of the given schedulers, as torch's."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int],
                 last_epoch: int = -1):
        self._adopt(schedulers, optimizer)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got {len(schedulers)} "
                             f"schedulers and {len(milestones)} milestones")
        self._milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        _undo_initial_steps(self._schedulers)
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        s = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            s._restart()
        else:
            s.step()
        self._last_lr = s.get_last_lr()


class ChainedScheduler(_Composite):
    """step() steps every scheduler in turn, each chaining on the lr the previous one left (so
    multiplicative schedules multiply). `optimizer` defaults to the first scheduler's."""

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None):
        if optimizer is None and len(schedulers) > 0:
            optimizer = schedulers[0].optimizer
        self._adopt(schedulers, optimizer)
        self._last_lr = self._lrs()

    def step(self) -> None:
        for s in self._schedulers:
            s.step()
        self._last_lr = self._lrs()


class ReduceLROnPlateau(LRScheduler):
    """step(metric): lr *= factor (not below min_lr; a cut smaller than eps is skipped) once the metric
    has not improved for more than `patience` steps, then `cooldown` steps ignore bad epochs.
    Improved: below best*(1-threshold) ('min', 'rel'), below best-threshold ('min', 'abs'), and
    mirrored for 'max'."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 min_lr: float | Sequence[float] = 0, eps: float = 1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if not factor < 1.0:
            raise ValueError(f"Invalid factor: {factor} (must be < 1)")
        if mode not in ("min", "max"):
            raise ValueError(f"Invalid mode: {mode!r} (must be 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"Invalid threshold_mode: {threshold_mode!r} (must be 'rel' or 'abs')")
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.default_min_lr, self.min_lrs = None, list(min_lr)
        else:
            self.default_min_lr, self.min_lrs = min_lr, [min_lr] * n
        self.optimizer, self.mode, self.factor, self.patience = optimizer, mode, factor, patience
        self.threshold, self.threshold_mode, self.cooldown, self.eps = threshold, threshold_mode, cooldown, eps
        self.best = math.inf if mode == "min" else -math.inf
        self.last_epoch = self.num_bad_epochs = self.cooldown_counter = 0
        self._last_lr = self._lrs()

    def step(self, metrics) -> None:  # the metric: a float, or anything float() takes (a 0-d array)
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = self._lrs()

    def _is_better(self, a: float) -> bool:
        t, rel = self.threshold, self.threshold_mode == "rel"
        if self.mode == "min":
            return a < (self.best * (1.0 - t) if rel else self.best - t)
        return a > (self.best * (1.0 + t) if rel else self.best + t)

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):  # a group was added since construction
            if self.default_min_lr is None:
                raise RuntimeError(f"the optimizer has {len(groups)} param groups, min_lr has {len(self.min_lrs)}")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                group["lr"] = new


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


def _check_positive_int(name: str, value) -> None:
    if not (isinstance(value, int) and value > 0):
        raise ValueError(f"Invalid {name}: {value} (must be a positive integer)")


def _per_group(name: str, value, groups) -> list:
    """One value per param group: a scalar repeated, or a list/tuple of exactly that length."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name} must have one value per param group: got {len(value)} for {len(groups)}")
        return list(value)
    return [value] * len(groups)


def _undo_initial_steps(schedulers) -> None:
    """Take back the constructor step of each scheduler (inside nested composites too)."""
    for s in schedulers:
        if hasattr(s, "_schedulers"):
            _undo_initial_steps(s._schedulers)
        else:
            s.last_epoch -= 1


__all__ = ["ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR",
           "LinearLR", "MultiStepLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR", "StepLR"]
