"""The gradient reducer on its own, without DistributedDataParallel: its gradients equal the average
over ranks of each rank's own gradients (every rank computes them all, so each checks independently)."""
import numpy as np
import pytest

import distbp as db
from distbp import nn
from distbp.distributed import Reducer
from distbp.distributed.reducer import bucket_cap_bytes


def _model():
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))


def _x(rank):
    return db.tensor(np.random.default_rng(rank).standard_normal((3, 4)))


def _grads(model, rank):
    for p in model.parameters():
        p.grad = None
    model(_x(rank)).sum().backward()
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.mpi
def test_reducer_averages_the_gradients_of_an_armed_backward_and_leaves_others_local(comm, free_after):
    reference = _model()
    expected = np.mean([np.concatenate([g.ravel() for g in _grads(reference, r)]) for r in range(comm.size)],
                       axis=0)
    mine = _grads(reference, comm.rank)
    model = _model()
    reducer = free_after(Reducer(model.named_parameters(), comm, bucket_cap_bytes(1e-4)))  # several buckets
    assert len(reducer.buckets) > 1
    assert reducer.bytes_per_sync == sum(p.data.nbytes for p in model.parameters())

    reducer.prepare_for_backward(sync=False)   # not armed: gradients stay this rank's
    model(_x(comm.rank)).sum().backward()
    for g, p in zip(mine, model.parameters()):
        np.testing.assert_array_equal(p.grad, g)

    for p in model.parameters():
        p.grad = None
    reducer.prepare_for_backward()
    assert reducer.armed
    model(_x(comm.rank)).sum().backward()
    assert not reducer.armed and reducer.iteration == 1
    got = np.concatenate([p.grad.ravel() for p in model.parameters()])
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


def test_bucket_cap_bytes_checks_the_size():
    assert bucket_cap_bytes(1) == 1024 * 1024
    with pytest.raises(ValueError, match="Invalid bucket_cap_mb: -1"):
        bucket_cap_bytes(-1)
