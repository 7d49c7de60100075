"""LRScheduler, the base of every schedule: the lr of each group set at construction and every step()."""
from __future__ import annotations

from ..optimizer import Optimizer


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


def _check_positive_int(name: str, value) -> None:
    if not (isinstance(value, int) and value > 0):
        raise ValueError(f"Invalid {name}: {value} (must be a positive integer)")
