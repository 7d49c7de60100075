"""ZeroRedundancyOptimizer (ZeRO-1) against plain data parallelism: each rank its own data shard,
gradients summed with the same communicator's allreduce then the plain optimizer on every rank. The
weights must be bitwise equal, the optimizer state 1/size per rank, and the consolidated state the
plain optimizer's state_dict."""
import numpy as np
import pytest

import distbp as db
from distbp import nn, optim
from distbp.distributed import SelfComm
from distbp.distributed.zero import ZeroRedundancyOptimizer

CASES = [
    (optim.SGD, {"lr": 0.01, "momentum": 0.9}),
    (optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (optim.SGD, {"lr": 0.01, "momentum": 0.8, "dampening": 0.1, "weight_decay": 1e-3}),
    (optim.Adam, {"lr": 1e-2, "weight_decay": 1e-2}),
    (optim.Adam, {"lr": 1e-2, "amsgrad": True}),
    (optim.AdamW, {"lr": 1e-2}),
    (optim.RMSprop, {"lr": 1e-2}),
    (optim.RMSprop, {"lr": 1e-2, "momentum": 0.5, "centered": True, "weight_decay": 1e-3}),
]
IDS = ["sgd-momentum", "sgd-nesterov-wd", "sgd-dampening", "adam-wd", "adam-amsgrad", "adamw", "rmsprop",
       "rmsprop-centered"]


def _model(dtype):
    db.set_default_dtype(dtype)
    db.manual_seed(0)
    # 6*7 + 7 + 7*3 + 3 = 73 parameters: no world size 2..4 divides them, so slices cut parameters
    return nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 3))


def _backward(model, rank, step, dtype):
    rng = np.random.default_rng(1000 * step + rank)  # each rank its own shard of each step's data
    x = db.tensor(rng.standard_normal((5, 6)).astype(dtype))
    y = db.tensor(rng.standard_normal((5, 3)).astype(dtype))
    model.zero_grad()
    d = model(x) - y
    (d * d).sum().backward()


def _plain_step(model, opt, comm, step, dtype, scale=None):
    """Plain data parallelism: the gradients summed (or averaged) over ranks, the plain optimizer."""
    _backward(model, comm.rank, step, dtype)
    params = list(model.parameters())
    flat = comm.alloc_buffer(sum(p.data.size for p in params), dtype)  # as the Reducer's buckets
    off = 0
    for p in params:
        view = flat[off:off + p.data.size]
        if scale is None:
            view[...] = p.grad.reshape(-1)
        else:
            np.multiply(p.grad.reshape(-1), scale, out=view)
        off += p.data.size
    comm.iallreduce(flat).wait()
    off = 0
    for p in params:
        p.grad = flat[off:off + p.data.size].reshape(p.data.shape).copy()
        off += p.data.size
    opt.step()


def _state_bytes(state):
    return sum(v.nbytes for st in state.values() for v in st.values() if isinstance(v, np.ndarray) and v.ndim)


def _assert_same_state(full, plain):
    assert full["param_groups"] == plain["param_groups"]
    assert sorted(full["state"]) == sorted(plain["state"])
    for i, st in plain["state"].items():
        assert sorted(full["state"][i]) == sorted(st)
        for k, v in st.items():
            assert np.array_equal(full["state"][i][k], v), (i, k)
            assert np.asarray(full["state"][i][k]).dtype == np.asarray(v).dtype


@pytest.fixture
def plain_comm(comm, free_after):
    """Plain data parallelism's buffers live on a duplicate of the world, freed after the test: each
    alloc_buffer holds MPI resources until its communicator is freed."""
    return free_after(comm.dup())


def _run(comm, cls, kwargs, dtype, steps=20, average=False, plain_comm=None):
    plain_model, zero_model = _model(dtype), _model(dtype)
    plain = cls(plain_model.parameters(), **kwargs)
    zero = ZeroRedundancyOptimizer(zero_model.parameters(), cls, comm=comm, average=average, **kwargs)
    plain_sched = optim.lr_scheduler.StepLR(plain, step_size=7, gamma=0.5)
    zero_sched = optim.lr_scheduler.StepLR(zero, step_size=7, gamma=0.5)
    scale = 1.0 / comm.size if average and comm.size > 1 else None
    for step in range(steps):
        _plain_step(plain_model, plain, plain_comm or comm, step, dtype, scale)
        _backward(zero_model, comm.rank, step, dtype)
        zero.step()
        plain_sched.step()
        zero_sched.step()
    return plain_model, plain, zero_model, zero


def _assert_bitwise(model_a, model_b):
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert a.data.dtype == b.data.dtype
        assert np.array_equal(a.data, b.data)


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=IDS)
def test_zero_weights_state_and_checkpoint_equal_plain_data_parallelism(comm, plain_comm, free_after, cls, kwargs,
                                                                       dtype):
    plain_model, plain, zero_model, zero = _run(comm, cls, kwargs, dtype, plain_comm=plain_comm)
    free_after(zero)
    _assert_bitwise(plain_model, zero_model)
    assert zero.param_groups[0]["lr"] == plain.param_groups[0]["lr"] == zero.optim.param_groups[0]["lr"]

    # memory: this rank's state covers exactly its slice of the flat buffer
    (lo, hi), = zero.shard_bounds.values()
    numel = sum(p.data.size for p in plain_model.parameters())
    assert _state_bytes(zero.optim.state) * numel == _state_bytes(plain.state) * (hi - lo)
    assert sum(comm.allgather_obj(_state_bytes(zero.optim.state))) == _state_bytes(plain.state)

    full = zero.consolidate_state_dict(to=0)
    if comm.rank == 0:
        _assert_same_state(full, plain.state_dict())
    else:
        assert full is None

    # load the full state into a fresh ZeRO over the same weights: it continues as the plain one does
    resumed_model = _model(dtype)
    for a, b in zip(resumed_model.parameters(), zero_model.parameters()):
        a.data[...] = b.data
    resumed = free_after(ZeroRedundancyOptimizer(resumed_model.parameters(), cls, comm=comm, **kwargs))
    resumed.load_state_dict(plain.state_dict())
    for step in range(20, 25):
        _plain_step(plain_model, plain, plain_comm, step, dtype)
        _backward(resumed_model, comm.rank, step, dtype)
        resumed.step()
    _assert_bitwise(plain_model, resumed_model)
    full = resumed.consolidate_state_dict(to=comm.size - 1)
    if comm.rank == comm.size - 1:
        _assert_same_state(full, plain.state_dict())


@pytest.mark.mpi
def test_zero_average_true_equals_averaged_data_parallelism(comm, plain_comm, free_after):
    plain_model, _, zero_model, zero = _run(comm, optim.Adam, {"lr": 1e-2}, np.float64, steps=8, average=True,
                                            plain_comm=plain_comm)
    free_after(zero)
    _assert_bitwise(plain_model, zero_model)


@pytest.mark.mpi
def test_zero_through_mpi_reduce_scatter_without_shared_memory(comm, free_after, monkeypatch):
    # MPI's own Reduce_scatter and Allreduce: the same bits at two ranks, equal to rounding beyond
    monkeypatch.setenv("DISTBP_SHM_ALLREDUCE", "0")
    plain_model, _, zero_model, zero = _run(comm, optim.SGD, {"lr": 0.01, "momentum": 0.9}, np.float64, steps=8)
    free_after(zero)
    for a, b in zip(plain_model.parameters(), zero_model.parameters()):
        if comm.size <= 2:
            assert np.array_equal(a.data, b.data)
        else:
            np.testing.assert_allclose(a.data, b.data, rtol=1e-9, atol=1e-12)


@pytest.mark.mpi
@pytest.mark.parametrize("numel", [1, 2, 5, 13])
def test_reduce_scatter_and_allgather_slices_match_allreduce(comm, free_after, numel):
    comm = free_after(comm.dup())  # its shared buffers go with it
    shared = comm.alloc_buffer(numel, np.float64)
    shared[...] = np.random.default_rng(comm.rank).standard_normal(numel)
    expected = comm.alloc_buffer(numel, np.float64)
    expected[...] = shared
    comm.iallreduce(expected).wait()
    mine = comm.reduce_scatter_slices(shared)
    bounds = [numel * k // comm.size for k in range(comm.size + 1)]
    lo, hi = bounds[comm.rank], bounds[comm.rank + 1]
    # through shared memory (or at two ranks) the allreduce's bits; MPI's own orders, to rounding
    same = np.array_equal if comm.size <= 2 or comm.uses_shared_memory(shared) else np.allclose
    assert same(mine, expected[lo:hi])
    comm.allgather_slices(shared)
    assert same(shared, expected)


def test_zero_in_a_world_of_one_is_the_plain_optimizer():
    for cls, kwargs in CASES:
        plain_model, plain, zero_model, zero = _run(SelfComm(), cls, kwargs, np.float64, steps=6)
        _assert_bitwise(plain_model, zero_model)
        assert _state_bytes(zero.optim.state) == _state_bytes(plain.state)
        _assert_same_state(zero.consolidate_state_dict(), plain.state_dict())


def test_zero_lays_out_each_dtype_in_its_own_buffer_and_refuses_new_groups():
    a = nn.Parameter(np.ones(3, dtype=np.float32))
    b = nn.Parameter(np.ones(4, dtype=np.float64))
    zero = ZeroRedundancyOptimizer([a, b], optim.SGD, comm=SelfComm(), lr=0.5)
    assert set(zero.shard_bounds) == {np.dtype(np.float32), np.dtype(np.float64)}
    a.grad, b.grad = np.ones(3, dtype=np.float32), None
    zero.step()
    assert np.array_equal(a.data, np.full(3, 0.5, dtype=np.float32)) and np.array_equal(b.data, np.ones(4))
    with pytest.raises(NotImplementedError):
        zero.add_param_group({"params": [nn.Parameter(np.ones(2))]})
