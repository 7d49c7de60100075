"""Tensor parallelism across ranks (float64): the four region operators in closed form, then an MLP
(ColumnParallelLinear -> tanh -> RowParallelLinear -> Linear head) trained 20 SGD steps on 2 tensor
ranks, with and without tensor-parallel dropout, and on 2 tensor ranks x 2 replicas; its gathered
shards must equal one process's full weights to 1e-10 at every step."""
import numpy as np
import pytest

import distbp as db
from distbp import random
from distbp.distributed import ColumnParallelLinear, ProcessGrid, RowParallelLinear
from distbp.distributed import tensor_parallel as tp


def _x(value, *shape):
    return db.tensor(np.full(shape, float(value)), requires_grad=True, dtype=np.float64)


@pytest.mark.mpi
def test_region_operators_closed_forms_over_the_world(comm):
    n, r = comm.size, comm.rank
    # copy_to: identity forward; each rank's loss (r + 1) sum(y): the gradient is sum_r (r + 1)
    x = _x(r, 3)
    y = tp.copy_to_tensor_parallel_region(x, comm)
    np.testing.assert_array_equal(y.data, r)
    (y.sum() * (r + 1)).backward()
    np.testing.assert_array_equal(x.grad, n * (n + 1) / 2)
    # reduce_from: sum forward, identity backward
    x = _x(r, 3)
    y = tp.reduce_from_tensor_parallel_region(x, comm)
    np.testing.assert_array_equal(y.data, n * (n - 1) / 2)
    (y.sum() * (r + 1)).backward()
    np.testing.assert_array_equal(x.grad, r + 1)
    # scatter_to: rank r keeps columns 2r, 2r + 1; backward gathers every rank's (r + 1)
    full = np.arange(2 * 2 * n, dtype=np.float64).reshape(2, 2 * n)
    x = db.tensor(full.copy(), requires_grad=True, dtype=np.float64)
    y = tp.scatter_to_tensor_parallel_region(x, comm)
    np.testing.assert_array_equal(y.data, full[:, 2 * r:2 * r + 2])
    (y.sum() * (r + 1)).backward()
    np.testing.assert_array_equal(x.grad, np.repeat(np.arange(1.0, n + 1), 2)[None].repeat(2, axis=0))
    # gather_from: block j of the output is rank j's; backward keeps this rank's block of the gradient
    x = _x(r, 2, 2)
    y = tp.gather_from_tensor_parallel_region(x, comm)
    np.testing.assert_array_equal(y.data, np.repeat(np.arange(float(n)), 2)[None].repeat(2, axis=0))
    w = np.arange(2 * 2 * n, dtype=np.float64).reshape(2, 2 * n)
    (y * w).sum().backward()
    np.testing.assert_array_equal(x.grad, w[:, 2 * r:2 * r + 2])
    comm.barrier()


N, D_IN, HIDDEN, D_MID, D_OUT, STEPS, LR = 8, 6, 8, 4, 3, 20, 0.1


def _reference_layers():
    db.manual_seed(5)
    return db.nn.Linear(D_IN, HIDDEN), db.nn.Linear(HIDDEN, D_MID), db.nn.Linear(D_MID, D_OUT)


class _MLP(db.nn.Module):
    def __init__(self, first, second, head, p=0.0, tp_comm=None):
        super().__init__()
        self.first, self.second, self.head, self.p, self.tp_comm = first, second, head, p, tp_comm

    def forward(self, x):
        h = self.first(x).tanh()
        if self.p:
            h = (tp.tensor_parallel_dropout(h, self.p, self.training, self.tp_comm) if self.tp_comm is not None
                 else db.nn.functional.dropout(h, self.p, self.training))
        return self.head(self.second(h).tanh())


def _train(model, rows, first_sample, grad_comm=None):
    """20 SGD steps on mean squared error over the N-sample batch, of which this model sees `rows`;
    yields the state after every step."""
    rng = np.random.default_rng(11)
    opt = db.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        x, t = rng.standard_normal((N, D_IN)), rng.standard_normal((N, D_OUT))
        with random.batch(step=step, first_sample=first_sample):
            y = model(db.tensor(x[rows], dtype=np.float64))
        loss = ((y - db.tensor(t[rows], dtype=np.float64)) ** 2).sum() / (N * D_OUT)
        opt.zero_grad()
        loss.backward()
        if grad_comm is not None:   # every replica's share of the one loss: the gradients add up
            for p in model.parameters():
                grad_comm.allreduce(p.grad)
        opt.step()
        yield step


def _check_against_one_process(comm, tensor_parallel, data_parallel, p=0.0, gathered=False):
    if comm.size % (tensor_parallel * data_parallel):
        pytest.skip(f"{tensor_parallel} x {data_parallel} ranks do not divide a world of {comm.size}")
    db.set_default_dtype(np.float64)
    grid = ProcessGrid(comm, tensor_parallel=tensor_parallel)
    # data parallelism over dp_comm's first `data_parallel` replicas' worth of ranks: with more ranks,
    # each group of tensor_parallel x data_parallel repeats the same job
    dp = grid.dp_comm.split(grid.replica // data_parallel, key=grid.replica)
    base = N // dp.size
    rows = slice(dp.rank * base, (dp.rank + 1) * base)
    ref = _MLP(*_reference_layers(), p=p)
    first, second, head = _reference_layers()
    par = _MLP(ColumnParallelLinear.from_linear(first, grid.tp_comm, gather_output=gathered),
               RowParallelLinear.from_linear(second, grid.tp_comm, input_is_parallel=not gathered), head,
               p=p, tp_comm=None if gathered else grid.tp_comm)
    for _ in zip(_train(ref, slice(0, N), 0), _train(par, rows, rows.start, dp if dp.size > 1 else None)):
        full = tp.full_state_dict(par, grid.tp_comm)
        want = ref.state_dict()
        assert full.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(full[k], want[k], rtol=0, atol=1e-10, err_msg=k)
    assert par.first.weight.shape == (HIDDEN // tensor_parallel, D_IN)
    dp.free()
    grid.free()
    comm.barrier()


@pytest.mark.mpi(min_size=2)
def test_two_tensor_ranks_train_an_mlp_exactly_as_one_process(comm):
    _check_against_one_process(comm, tensor_parallel=2, data_parallel=1)


@pytest.mark.mpi(min_size=2)
def test_two_tensor_ranks_with_tensor_parallel_dropout_train_exactly_as_one_process(comm):
    _check_against_one_process(comm, tensor_parallel=2, data_parallel=1, p=0.3)


@pytest.mark.mpi(min_size=2)
def test_gathered_output_and_split_input_train_exactly_as_one_process(comm):
    _check_against_one_process(comm, tensor_parallel=2, data_parallel=1, p=0.3, gathered=True)


@pytest.mark.mpi(min_size=4)
def test_two_tensor_ranks_times_two_replicas_train_exactly_as_one_process(comm):
    _check_against_one_process(comm, tensor_parallel=2, data_parallel=2, p=0.3)
