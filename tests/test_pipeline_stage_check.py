"""A stage simulates every stage's action list before it runs its own: a schedule whose sends and
receives do not match is refused with ScheduleError before any message moves (never a hang)."""
import numpy as np
import pytest

import distbp as db
from distbp import nn
from distbp.distributed import SelfComm
from distbp.distributed.grid import ProcessGrid
from distbp.distributed.pipeline import PipelineStage, ScheduleError, partition
from distbp.distributed.pipeline import stage as stage_module


def _stage():
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    return PipelineStage(model, ProcessGrid(SelfComm(), pipeline_stages=1), partition(model, 1), "1f1b")


def test_a_checked_schedule_trains():
    x, y = np.random.default_rng(0).standard_normal((6, 4)), np.array([0, 1, 0, 1, 1, 0])
    result = _stage().train_step(x, y, 6, 3)
    assert np.isfinite(result.loss_sum)


def test_a_broken_schedule_is_refused_before_the_step_runs(monkeypatch):
    real = stage_module.build_schedules

    def without_a_backward(name, num_stages, num_micro_batches):
        lists = real(name, num_stages, num_micro_batches)
        return [[a for a in lists[0] if not (a.op == "backward" and a.micro_batch == 1)]]

    monkeypatch.setattr(stage_module, "build_schedules", without_a_backward)
    stage = _stage()
    x, y = np.random.default_rng(0).standard_normal((6, 4)), np.array([0, 1, 0, 1, 1, 0])
    with pytest.raises(ScheduleError, match="micro-batch 1"):
        stage.train_step(x, y, 6, 3)
    assert all(p.grad is None for p in stage.parameters())  # nothing ran
