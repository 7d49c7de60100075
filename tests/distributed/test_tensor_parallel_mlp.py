"""The zoo's MLP in tensor-parallel form (float64): `parallelize_mlp` keeps the single-process names
and values, trains 20 SGD steps on 2 tensor ranks (dropout included) exactly as one process, and
as the layers of a 2-stage pipeline x 2 tensor ranks; a cut between a Column and its Row, or a layer
that is not elementwise there, is refused."""
import numpy as np
import pytest

import distbp as db
from distbp import random
from distbp.data import shard_bounds
from distbp.distributed import ColumnParallelLinear, ProcessGrid, RowParallelLinear, SelfComm
from distbp.distributed import tensor_parallel as tp
from distbp.distributed.pipeline import PipelineStage
from distbp.nn import functional
from distbp.training import registry

N, D_IN, CLASSES, STEPS, LR, P = 8, 6, 3, 20, 0.1, 0.3


def zoo_mlp(hidden, dropout=P):
    db.set_default_dtype(np.float64)
    db.manual_seed(7)
    return registry.build_model("mlp", (D_IN,), CLASSES, hidden=hidden, activation="tanh", dropout=dropout)


def batches():
    rng = np.random.default_rng(3)
    for step in range(STEPS):
        yield step, rng.standard_normal((N, D_IN)), rng.integers(0, CLASSES, N)


def reference_states(hidden):
    """One process's state after every step: mean cross-entropy over the batch, SGD."""
    model = zoo_mlp(hidden)
    opt = db.optim.SGD(model.parameters(), lr=LR)
    for step, x, y in batches():
        with random.batch(step=step, first_sample=0):
            out = model(db.tensor(x))
        loss = functional.cross_entropy(out, y, reduction="sum") / N
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield model.state_dict()


def assert_same(got: dict, want: dict):
    for k, value in got.items():
        np.testing.assert_allclose(value, want[k], rtol=0, atol=1e-10, err_msg=k)


def test_one_rank_conversion_is_the_model_under_its_names():
    model = zoo_mlp([8, 4, 6])
    par = tp.parallelize_mlp(model, SelfComm())
    kinds = [type(m).__name__ for m in par]
    assert kinds == ["Flatten", "ColumnParallelLinear", "Tanh", "TensorParallelDropout", "RowParallelLinear", "Tanh",
                     "Dropout", "ColumnParallelLinear", "Tanh", "TensorParallelDropout", "RowParallelLinear"]
    assert list(par.state_dict()) == list(model.state_dict())
    assert_same(tp.full_state_dict(par, SelfComm()), model.state_dict())
    odd = tp.parallelize_mlp(zoo_mlp([8], dropout=0.0), SelfComm())
    assert [type(m).__name__ for m in odd] == ["Flatten", "ColumnParallelLinear", "Tanh", "RowParallelLinear"]
    odd = tp.parallelize_mlp(zoo_mlp([8, 4], dropout=0.0), SelfComm())
    assert type(odd[-1]) is db.nn.Linear  # the third Linear has no partner: whole on every rank


def test_only_elementwise_layers_may_sit_between_a_column_and_its_row():
    model = db.nn.Sequential(db.nn.Linear(4, 4), db.nn.Softmax(dim=-1), db.nn.Linear(4, 2))
    with pytest.raises(TypeError, match="elementwise"):
        tp.parallelize_mlp(model, SelfComm())


def _grid(comm, tensor_parallel, stages):
    if comm.size % (tensor_parallel * stages):
        pytest.skip(f"{tensor_parallel} x {stages} ranks do not divide a world of {comm.size}")
    return ProcessGrid(comm, pipeline_stages=stages, tensor_parallel=tensor_parallel)


@pytest.mark.mpi(min_size=2)
def test_two_tensor_ranks_train_the_converted_zoo_mlp_exactly_as_one_process(comm, free_after):
    grid = free_after(_grid(comm, 2, 1))
    par = tp.parallelize_mlp(zoo_mlp([8, 4]), grid.tp_comm)
    assert isinstance(par[1], ColumnParallelLinear) and isinstance(par[4], RowParallelLinear)
    assert par[1].weight.shape == (4, D_IN)
    opt = db.optim.SGD(par.parameters(), lr=LR)
    for (step, x, y), want in zip(batches(), reference_states([8, 4])):
        with random.batch(step=step, first_sample=0):
            out = par(db.tensor(x))
        loss = functional.cross_entropy(out, y, reduction="sum") / N
        opt.zero_grad()
        loss.backward()
        opt.step()
        full = tp.full_state_dict(par, grid.tp_comm)
        assert full.keys() == want.keys()
        assert_same(full, want)
    comm.barrier()


@pytest.mark.mpi(min_size=4)
@pytest.mark.parametrize("hidden,cut", [([8, 4], 5), ([8, 4, 6], 5), ([8, 4], 3)],
                         ids=["replicated-head", "two-pairs", "cut-inside-a-pair"])
def test_two_stages_of_two_tensor_ranks_train_exactly_as_one_process(comm, free_after, hidden, cut):
    grid = free_after(_grid(comm, 2, 2))
    model = tp.parallelize_mlp(zoo_mlp(hidden), grid.tp_comm)
    # Cut after the first RowParallelLinear (layer 4), what crosses is whole and the same on every
    # tp rank; cut inside the pair (after the first dropout), tp rank r's block goes to tp rank r of
    # the next stage, which is the block its RowParallelLinear multiplies: both are exact.
    stage = free_after(PipelineStage(model, grid, [(0, cut), (cut, len(model))], schedule="1f1b"))
    del model
    opt = db.optim.SGD(stage.parameters(), lr=LR)
    lo, hi = shard_bounds(N, grid.replica, grid.dp_size)
    for (step, x, y), want in zip(batches(), reference_states(hidden)):
        opt.zero_grad()
        stage.train_step(x[lo:hi], y[lo:hi], global_batch=N, num_micro_batches=2, step=step)
        opt.step()
        full = tp.full_state_dict(stage, grid.tp_comm)
        assert full and set(full) <= set(want)
        assert_same(full, want)
    keys = grid.pipe_comm.allgather_obj(sorted(stage.state_dict()))
    assert sorted(k for ks in keys for k in ks) == sorted(want)
    comm.barrier()
