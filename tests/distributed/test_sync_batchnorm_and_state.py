"""SyncBatchNorm against a NumPy formula over the global batch, conversion, and broadcast_state."""
import numpy as np
import pytest
from distributed_helpers import shard

import distbp as db
from distbp import nn
from distbp.distributed import broadcast_state
from distbp.distributed.sync_batchnorm import SyncBatchNorm
from distbp.gradcheck import gradcheck
from distbp.optim import SGD


@pytest.mark.mpi
def test_sync_batchnorm_forward_uses_global_batch_statistics(comm):
    db.set_default_dtype(np.float64)
    full = np.random.default_rng(3).standard_normal((7, 3, 2)) * 2 + 1   # 7 samples: uneven on 2 and 4
    x = full[shard(7, comm.rank, comm.size)]
    bn = SyncBatchNorm(3, momentum=0.5, comm=comm)
    y = bn(db.tensor(x)).data
    mean, var = full.mean(axis=(0, 2)), full.var(axis=(0, 2))   # NumPy over the global batch
    expect = (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + 1e-5)
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.5 * mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * var * 14 / 13, rtol=1e-12)


def test_sync_batchnorm_passes_gradcheck_in_a_world_of_one():
    bn = SyncBatchNorm(2).double()
    bn.weight.data[:] = [1.5, -0.5]
    x = db.tensor(np.random.default_rng(0).standard_normal((4, 2, 3)), requires_grad=True, dtype=np.float64)
    assert gradcheck(lambda a: bn(a) * db.tensor(np.arange(24.0).reshape(4, 2, 3)), [x])


def test_convert_sync_batchnorm_keeps_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.BatchNorm1d(3)))
    weight, running_mean = model[1][0].weight, model[1][0].running_mean
    SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(model[1][0], SyncBatchNorm)
    assert model[1][0].weight is weight and model[1][0].running_mean is running_mean
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "1.0.running_mean",
                                        "1.0.running_var", "1.0.num_batches_tracked"]


@pytest.mark.mpi
def test_broadcast_state_gives_every_rank_root_params_and_momentum(comm):
    db.manual_seed(comm.rank)
    model = nn.Linear(3, 2)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    if comm.rank == 0:  # only rank 0 has trained (as if it had loaded a checkpoint)
        model(db.tensor(np.ones((1, 3)))).sum().backward()
        opt.step()
    broadcast_state(model, opt, comm)
    for key, value in model.state_dict().items():
        assert (comm.allgather(value) == value).all(), key
    buf = opt.state[model.weight]["momentum_buffer"]
    np.testing.assert_array_equal(buf, np.ones((2, 3)))   # d sum(Wx+b)/dW = 1 for x = ones
