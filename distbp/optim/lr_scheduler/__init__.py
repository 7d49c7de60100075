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

One module per family: base (LRScheduler), step (StepLR, MultiStepLR, ExponentialLR, ConstantLR,
LinearLR), cosine, lambda_lr, onecycle, plateau (ReduceLROnPlateau) and chained (SequentialLR,
ChainedScheduler).
"""
from .base import LRScheduler
from .chained import ChainedScheduler, SequentialLR
from .cosine import CosineAnnealingLR
from .lambda_lr import LambdaLR
from .onecycle import OneCycleLR
from .plateau import ReduceLROnPlateau
from .step import ConstantLR, ExponentialLR, LinearLR, MultiStepLR, StepLR

__all__ = ["ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR",
           "LinearLR", "MultiStepLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR", "StepLR"]
