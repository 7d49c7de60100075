"""Differentiable communication: gradcheck in a world of one, a distributed finite-difference check
(one rank perturbs at a time, all ranks sum their losses) and a send/recv pipeline in closed form."""
import numpy as np
import pytest

import distbp as db
from distbp.distributed import SelfComm
from distbp.distributed import functional as DF
from distbp.gradcheck import gradcheck


def _t64(*shape, seed):
    return db.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True, dtype=np.float64)


def test_allreduce_and_allgather_pass_gradcheck_in_a_world_of_one():
    c = SelfComm()
    x = _t64(2, 3, seed=0)
    assert gradcheck(lambda a: DF.allreduce(a * a, c).tanh(), [x])
    assert gradcheck(lambda a: DF.allgather(a.exp(), c) * 2.0, [x])


def _distributed_fd_check(comm, loss_of, x_data, eps=1e-6):
    """Global loss F = sum over ranks of loss_of(x_rank): backward's x.grad on each rank must equal
    dF/dx_rank by central differences, perturbing one rank's one element at a time."""
    x = db.tensor(x_data.copy(), requires_grad=True, dtype=np.float64)
    loss_of(x).backward()
    analytic = comm.allgather(x.grad)

    def global_loss(data):
        with db.no_grad():
            local = loss_of(db.tensor(data, dtype=np.float64)).data
        return comm.allreduce(np.array([float(local)]))[0]

    numeric = np.zeros((comm.size,) + x_data.shape)
    for r in range(comm.size):
        for i in range(x_data.size):
            vals = []
            for sign in (1, -1):
                data = x_data.copy()
                if comm.rank == r:
                    data.reshape(-1)[i] += sign * eps
                vals.append(global_loss(data))
            numeric[r].reshape(-1)[i] = (vals[0] - vals[1]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.mpi
def test_allreduce_gradient_matches_distributed_finite_differences(comm):
    w = np.random.default_rng(comm.rank).standard_normal(3)  # a different loss on every rank
    x0 = np.random.default_rng(10 + comm.rank).standard_normal(3)
    _distributed_fd_check(comm, lambda x: (DF.allreduce(x.tanh(), comm) ** 2 * w).sum(), x0)


@pytest.mark.mpi
def test_allgather_gradient_matches_distributed_finite_differences(comm):
    w = np.random.default_rng(comm.rank).standard_normal((comm.size, 2))
    x0 = np.random.default_rng(10 + comm.rank).standard_normal(2)
    _distributed_fd_check(comm, lambda x: (DF.allgather(x * x, comm) * w).sum(), x0)


@pytest.mark.mpi
def test_allreduce_closed_form_gradient_is_the_sum_of_rank_weights(comm):
    # L_r = (r + 1) * sum(allreduce(x)): dF/dx_r = sum_r' (r' + 1) = size (size + 1) / 2 on every rank
    x = db.tensor(np.full(3, float(comm.rank)), requires_grad=True, dtype=np.float64)
    y = DF.allreduce(x, comm)
    np.testing.assert_array_equal(y.data, comm.size * (comm.size - 1) / 2)
    (y.sum() * (comm.rank + 1)).backward()
    np.testing.assert_array_equal(x.grad, comm.size * (comm.size + 1) / 2)


@pytest.mark.mpi(min_size=2)
def test_send_recv_pipeline_gradient_closed_form(comm):
    # rank 0: h = 2x, send to rank 1; rank 1: L = sum(h^2). dL/dx = 2 * 2h = 8x on rank 0.
    if comm.rank == 0:
        x = db.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True, dtype=np.float64)
        DF.send(x * 2.0, dest=1, comm=comm).backward(np.zeros(0))
        np.testing.assert_array_equal(x.grad, 8 * np.array([1.0, -2.0, 3.0]))
    elif comm.rank == 1:
        h = DF.recv(0, (3,), np.float64, comm)
        np.testing.assert_array_equal(h.data, [2.0, -4.0, 6.0])
        (h * h).sum().backward()
    comm.barrier()
