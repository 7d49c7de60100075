"""The pieces of a run that `python -m distbp.train` builds from the #15 settings: the loss (a
registered name or the user's module:factory) and the RunControl (schedule, validation cadence,
early stopping). Checks raise the trainer's UsageError: one line, the same on every rank."""
from __future__ import annotations

from . import registry, user_code
from .control import RunControl
from .trainer import TASK_LOSSES, UsageError

# the registered losses that take class indices; the others compare outputs with float targets
_CLASS_LOSSES = ("cross_entropy",)


def loss_for(cfg, model, data, X, y):
    """The configured loss summed over samples, checked on the first samples (None: the task's own)."""
    if not cfg.loss:
        return None
    try:
        if user_code.is_reference(cfg.loss):
            loss = user_code.build_user_loss(cfg.loss, cfg.loss_args)
        else:
            if (cfg.loss in _CLASS_LOSSES) != (data.task == "classification"):
                raise user_code.UserCodeError(
                    f"--loss {cfg.loss} does not fit this dataset's {data.task} labels; use "
                    f"{TASK_LOSSES[data.task]} or another loss for {data.task}")
            factory = registry.LOSSES[cfg.loss]
            accepted = registry.accepted_options(factory)
            unknown = [] if accepted is None else [k for k in cfg.loss_args if k not in accepted]
            if unknown:
                raise user_code.UserCodeError(f"loss {cfg.loss!r} has no option {unknown[0]!r}")
            loss = factory(**{**cfg.loss_args, "reduction": "sum"})
        user_code.check_loss(loss, model, X, y, cfg.loss)
    except user_code.UserCodeError as e:
        raise UsageError(str(e)) from None
    return loss


def control_for(cfg, optimizer, steps_per_epoch: int) -> RunControl:
    """The run's RunControl; the schedule spans --epochs (see training/control.py)."""
    horizon = steps_per_epoch * cfg.epochs
    if cfg.warmup_steps and cfg.warmup_steps >= horizon:
        raise UsageError(f"--warmup-steps {cfg.warmup_steps} is not shorter than the run ({cfg.epochs} epochs x "
                         f"{steps_per_epoch} steps = {horizon}); give fewer warm-up steps")
    return RunControl(optimizer, schedule=cfg.lr_schedule, horizon=horizon, steps_per_epoch=steps_per_epoch,
                      warmup_steps=cfg.warmup_steps, lr_step_size=cfg.lr_step_size, lr_gamma=cfg.lr_gamma,
                      lr_patience=cfg.lr_patience, eval_every=cfg.eval_every, early_stopping=cfg.early_stopping)
