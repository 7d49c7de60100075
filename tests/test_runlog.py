"""RunLog's progress bar: a rank without the loss (a pipeline stage before the last) shows the latest
logged global mean loss, never a loss of 0."""

from distbp.distributed.comm import SelfComm
from distbp.training.runlog import RunLog
from distbp.training.trainer import StepResult


class _Bar:
    def __init__(self):
        self.postfix = None

    def update(self, n):
        pass

    def set_postfix(self, **fields):
        self.postfix = fields


class _Trainer:
    epoch, position = 0, 1

    def __init__(self):
        self.global_step = 0

    def mean_losses(self, results):  # what the allreduce over the ranks would give: the global mean
        return [2.5 + i for i in range(len(results))]


def _log():
    log = RunLog(SelfComm(), "", progress=False, total=10, start=0)
    log.bar = _Bar()
    return log


def test_a_rank_with_the_loss_shows_its_own():
    log, trainer = _log(), _Trainer()
    log.train_step(trainer, StepResult(6.0, 4, 8, 8, True), 100.0)
    assert log.bar.postfix == {"loss": "1.5000", "samples_s": "100"}


def test_a_stage_without_the_loss_shows_the_logged_global_mean():
    log, trainer = _log(), _Trainer()
    no_loss = StepResult(0.0, 0, 8, 8, True)  # what a pipeline stage before the last returns
    log.train_step(trainer, no_loss, 100.0)
    assert log.bar.postfix == {"samples_s": "100"}  # nothing logged yet: no loss shown, not 0
    log.train_step(trainer, no_loss, 100.0)
    log.flush(trainer)
    log.train_step(trainer, no_loss, 90.0)
    assert log.bar.postfix == {"logged_loss": "3.5000", "samples_s": "90"}  # the last flushed step's
