"""The zoo's CNN in tensor-parallel form (float64): `parallelize` splits its classifier head (Linear ->
tanh -> Linear) into Column -> Row and keeps the convolutional trunk whole on every tensor rank. The
trunk's gradients must be one process's on every tensor rank (the copy region's backward already
sums the head's partial input gradients, so nothing may sum them again over the tensor ranks), and
20 SGD-momentum steps at 2 tensor ranks, and 2 tensor ranks x 2 replicas, must give one process's
weights and momentum to 1e-10."""
import numpy as np
import pytest

import distbp as db
from distbp import random
from distbp.data import shard_bounds
from distbp.distributed import ColumnParallelLinear, DistributedDataParallel, ProcessGrid, RowParallelLinear
from distbp.distributed import tensor_parallel as tp
from distbp.nn import functional
from distbp.training import registry
from distbp.training.tensor_parallel_state import gather_state

N, SIDE, CLASSES, HIDDEN, STEPS, LR = 8, 8, 3, 6, 20, 0.05
TRUNK = ["1.weight", "1.bias", "4.weight", "4.bias"]   # the two Conv2d layers


def zoo_cnn():
    db.set_default_dtype(np.float64)
    db.manual_seed(11)
    return registry.build_model("cnn", (SIDE * SIDE,), CLASSES, hidden=[HIDDEN], activation="tanh", channels=2)


def batches():
    rng = np.random.default_rng(4)
    for step in range(STEPS):
        yield step, rng.standard_normal((N, SIDE * SIDE)), rng.integers(0, CLASSES, N)


def _loss(model, x, y, step, first_sample=0):
    with random.batch(step=step, first_sample=first_sample):
        out = model(db.tensor(x))
    return functional.cross_entropy(out, y, reduction="sum") / N   # / the global batch, on every rank


def reference():
    """One process: the first step's gradients, then (weights, optimizer state) after every step."""
    model = zoo_cnn()
    opt = db.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    grads, states = None, []
    for step, x, y in batches():
        opt.zero_grad()
        _loss(model, x, y, step).backward()
        if grads is None:
            grads = {n: p.grad.copy() for n, p in model.named_parameters()}
        opt.step()
        states.append((model.state_dict(), opt.state_dict()))
    return grads, states


def _grid(comm):
    if comm.size % 2:
        pytest.skip(f"a world of {comm.size} cannot hold tensor ranks in pairs")
    return ProcessGrid(comm, tensor_parallel=2)


def assert_close(got: dict, want: dict, what: str):
    assert got.keys() == want.keys(), what
    for k, value in got.items():
        np.testing.assert_allclose(value, want[k], rtol=0, atol=1e-10, err_msg=f"{what} {k}")


@pytest.mark.mpi(min_size=2)
def test_tensor_parallel_cnn_head_trains_exactly_as_one_process(comm, free_after):
    grid = free_after(_grid(comm))   # 2 tensor ranks; a world of 4 adds a second replica (DDP over dp_comm)
    grads, states = reference()
    model = tp.parallelize(zoo_cnn(), grid.tp_comm)
    kinds = [type(m).__name__ for m in model]
    assert kinds[:8] == ["Reshape", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten"]
    assert isinstance(model[8], ColumnParallelLinear) and isinstance(model[10], RowParallelLinear)
    net = free_after(DistributedDataParallel(model, grid.dp_comm, average=False)) if grid.dp_size > 1 else model
    opt = db.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    lo, hi = shard_bounds(N, grid.replica, grid.dp_size)
    for (step, x, y), (want_model, want_opt) in zip(batches(), states):
        opt.zero_grad()
        _loss(net, x[lo:hi], y[lo:hi], step, first_sample=lo).backward()
        if step == 0:
            trunk = {n: p.grad for n, p in model.named_parameters() if n in TRUNK}
            # one process's trunk gradients on every tensor rank: counted once, not T times
            assert_close(trunk, {n: grads[n] for n in TRUNK}, "trunk gradient")
            mine = grid.tp_comm.allgather_obj(trunk)
            assert all(np.array_equal(mine[0][n], mine[1][n]) for n in TRUNK)
        opt.step()
        full_model, full_opt = gather_state(model, opt.state_dict(), grid.tp_comm)
        assert_close(full_model, want_model, f"step {step} weight")
        for i, st in want_opt["state"].items():
            assert_close(full_opt["state"][i], st, f"step {step} momentum of parameter {i}")
    comm.barrier()
