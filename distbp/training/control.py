"""What happens around the optimizer steps of a run: the learning-rate schedule, when to validate, and
early stopping. All of it is state the checkpoint carries (`state_dict`), so a run resumed mid-epoch
continues exactly as the unbroken run.

Schedules (`--lr-schedule`) step once per optimizer step, over the run's horizon `--epochs` x steps
per epoch (a `--steps` cap stops the run early without changing the schedule, so a run stopped and
resumed follows the unbroken run's schedule):
  cosine:   CosineAnnealingLR down to 0 over the horizon after the warm-up;
  step:     StepLR, lr x `lr_gamma` every `lr_step_size` steps (0: every epoch);
  onecycle: OneCycleLR with max_lr = --lr over the horizon; its rise lasts `warmup_steps` (default
            30% of the horizon, torch's); momentum is not cycled, so --momentum keeps its meaning;
  plateau:  ReduceLROnPlateau on the validation loss, lr x `lr_gamma` after `lr_patience`
            validations without improvement; it steps at each validation, not each step.
`--warmup-steps W` (not onecycle): lr rises linearly from lr/(W+1) to lr over the first W steps
(LinearLR), then the schedule starts (SequentialLR; for plateau the two run chained)."""
from __future__ import annotations

import math

from ..optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

SCHEDULES = ("none", "cosine", "step", "onecycle", "plateau")


def build_scheduler(name: str, optimizer, horizon: int, steps_per_epoch: int, warmup: int = 0,
                    step_size: int = 0, gamma: float = 0.1, patience: int = 2):
    """(per-step scheduler or None, plateau scheduler or None) for `optimizer`."""
    if name == "none" and not warmup:
        return None, None
    if name == "onecycle":
        pct = warmup / horizon if warmup else 0.3
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=horizon,
                          pct_start=float(pct), cycle_momentum=False), None
    warm = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup) if warmup else None
    if name == "plateau":
        return warm, ReduceLROnPlateau(optimizer, factor=gamma, patience=patience)
    if name == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=max(horizon - warmup, 1))
    elif name == "step":
        main = StepLR(optimizer, step_size=step_size or steps_per_epoch, gamma=gamma)
    else:   # "none" with a warm-up
        return warm, None
    if warm is None:
        return main, None
    return SequentialLR(optimizer, [warm, main], milestones=[warmup]), None


class RunControl:
    """The schedule, validation cadence and early stopping of one run (the same on every rank).

    `after_step()` after each optimizer step; `eval_due(step, epoch_ended)` says whether to validate
    now; `after_eval(metrics)` feeds the validation loss to the plateau schedule and early stopping
    and returns True when the run should stop."""

    def __init__(self, optimizer, *, schedule: str = "none", horizon: int = 1, steps_per_epoch: int = 1,
                 warmup_steps: int = 0, lr_step_size: int = 0, lr_gamma: float = 0.1, lr_patience: int = 2,
                 eval_every: int = 0, early_stopping: int = 0):
        self.eval_every, self.patience = eval_every, early_stopping
        self.scheduler, self.plateau = (build_scheduler(schedule, optimizer, horizon, steps_per_epoch, warmup_steps,
                                                        lr_step_size, lr_gamma, lr_patience)
                                        if optimizer is not None else (None, None))
        self.best, self.best_step, self.bad_evals, self.stopped = math.inf, -1, 0, False
        self.last_val = None   # the latest validation metrics (not saved: a report, not state)

    def after_step(self) -> None:
        # with plateau, the warm-up's LinearLR: past its last step it keeps the lr (and plateau's cuts)
        if self.scheduler is not None:
            self.scheduler.step()

    def eval_due(self, step: int, epoch_ended: bool) -> bool:
        return step % self.eval_every == 0 if self.eval_every else epoch_ended

    def after_eval(self, metrics: dict, step: int) -> bool:
        self.last_val = metrics
        loss = metrics["loss"]
        if self.plateau is not None:
            self.plateau.step(loss)
        if loss < self.best:   # nan never improves
            self.best, self.best_step, self.bad_evals = loss, step, 0
        else:
            self.bad_evals += 1
        self.stopped = bool(self.patience) and self.bad_evals >= self.patience
        return self.stopped

    def lr(self) -> float | None:
        s = self.scheduler or self.plateau
        return s._lrs()[0] if s is not None else None

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "plateau": self.plateau.state_dict() if self.plateau is not None else None,
                "best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        for name in ("scheduler", "plateau"):
            mine = getattr(self, name)
            if mine is not None and state.get(name) is not None:
                mine.load_state_dict(state[name])
        self.best, self.best_step = float(state["best"]), int(state["best_step"])
        self.bad_evals, self.stopped = int(state["bad_evals"]), bool(state["stopped"])

