"""Trainer(accumulate=N) on every rank of the world: DistributedDataParallel reduces the gradients once
per optimizer step (the first N-1 micro-batches run under no_sync), and the weights equal one
process's steps on the whole batch (float64, 1e-12)."""
import copy

import numpy as np
import pytest

import distbp as db
from distbp.distributed import SelfComm
from distbp.optim import SGD
from distbp.training.registry import build_model
from distbp.training.trainer import Trainer


@pytest.mark.mpi
@pytest.mark.parametrize("accumulate", [2, 3])
def test_accumulation_reduces_once_per_step_and_equals_the_whole_batch(comm, free_after, accumulate):
    db.set_default_dtype(np.float64)
    db.manual_seed(3)
    model = build_model("mlp", (6,), 3, hidden=[8], dropout=0.25)
    one = copy.deepcopy(model)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((37, 6)), rng.integers(0, 3, 37)
    batches = [np.arange(37), rng.permutation(37)[:23]]       # a full batch and an uneven one
    many = Trainer(model, SGD(model.parameters(), lr=0.1, momentum=0.9), comm, accumulate=accumulate)
    ref = Trainer(one, SGD(one.parameters(), lr=0.1, momentum=0.9), SelfComm())
    if many.ddp is not None:
        free_after(many.ddp)
    for batch in batches:
        assert many.step_on(X, y, batch).updated
        ref.step(X[batch], y[batch], len(batch))
    if comm.size > 1:
        assert many.ddp.iteration == len(batches)     # one reduction per optimizer step, not per micro-batch
    for p, q in zip(model.parameters(), one.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=0, atol=1e-12)
