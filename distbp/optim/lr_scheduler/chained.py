"""Schedules of schedules: SequentialLR (one after another at milestones) and ChainedScheduler (all at once)."""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from ..optimizer import Optimizer
from .base import LRScheduler
from .plateau import ReduceLROnPlateau


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


def _undo_initial_steps(schedulers) -> None:
    """Take back the constructor step of each scheduler (inside nested composites too)."""
    for s in schedulers:
        if hasattr(s, "_schedulers"):
            _undo_initial_steps(s._schedulers)
        else:
            s.last_epoch -= 1
