"""distbp.distributed.clip_grad_norm_ over a ProcessGrid (float64): the zoo MLP, in tensor-parallel
form and split into pipeline stages (with data-parallel replicas where the world is larger), gets one
step's gradients; the total norm and the clipped gradients must equal torch.nn.utils.clip_grad_norm_
on the single-process model's gradients to 1e-12, for the 2-, 1- and inf-norms."""
import math

import numpy as np
import pytest

import distbp as db
from distbp import random
from distbp.data import shard_bounds
from distbp.distributed import ProcessGrid, clip_grad_norm_
from distbp.distributed import tensor_parallel as tp
from distbp.distributed.pipeline import PipelineStage
from distbp.nn import functional
from distbp.training import registry
from tests.conftest import torch_or_skip

N, D_IN, CLASSES, HIDDEN = 8, 6, 3, [8, 4]


def zoo_mlp():
    db.set_default_dtype(np.float64)
    db.manual_seed(7)
    return registry.build_model("mlp", (D_IN,), CLASSES, hidden=HIDDEN, activation="tanh", dropout=0.3)


def batch():
    rng = np.random.default_rng(5)
    return rng.standard_normal((N, D_IN)), rng.integers(0, CLASSES, N)


def torch_reference(max_norm, norm_type):
    """(total norm, clipped gradients by name) of torch's clip_grad_norm_ on one process's gradients."""
    torch = torch_or_skip()
    model = zoo_mlp()
    x, y = batch()
    with random.batch(step=0, first_sample=0):
        loss = functional.cross_entropy(model(db.tensor(x)), y, reduction="sum") / N
    loss.backward()
    grads = {k: torch.tensor(p.grad) for k, p in model.named_parameters()}
    params = []
    for g in grads.values():
        t = torch.zeros_like(g, requires_grad=True)
        t.grad = g.clone()
        params.append(t)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    return float(total), {k: t.grad.numpy() for k, t in zip(grads, params)}


@pytest.mark.mpi
@pytest.mark.parametrize("tensor_parallel,stages", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_over_the_grid_equals_torch_on_one_process(comm, free_after, tensor_parallel, stages,
                                                                  norm_type):
    if comm.size % (tensor_parallel * stages):
        pytest.skip(f"{tensor_parallel} x {stages} ranks do not divide a world of {comm.size}")
    grid = free_after(ProcessGrid(comm, pipeline_stages=stages, tensor_parallel=tensor_parallel))
    model = tp.parallelize_mlp(zoo_mlp(), grid.tp_comm)
    # stage 1 starts after the RowParallelLinear (layer 4): every layer of it is whole on each tp rank
    stage = free_after(PipelineStage(model, grid, [(0, 5), (5, len(model))] if stages == 2 else [(0, len(model))]))
    x, y = batch()
    lo, hi = shard_bounds(N, grid.replica, grid.dp_size)
    stage.train_step(x[lo:hi], y[lo:hi], global_batch=N, num_micro_batches=2, step=0)
    unclipped, _ = torch_reference(1e9, norm_type)
    for max_norm in (1e9, 0.5 * unclipped):   # a limit above the norm leaves the gradients as they are
        want_total, want = torch_reference(max_norm, norm_type)
        named = dict(stage.named_parameters())
        before = {k: p.grad.copy() for k, p in named.items()}
        total = clip_grad_norm_(stage.parameters(), max_norm, grid, norm_type=norm_type)
        np.testing.assert_allclose(float(total), want_total, rtol=1e-12, atol=0)
        got = tp.gather_shards(stage, {k: p.grad for k, p in named.items()}, grid.tp_comm)
        for k, value in got.items():
            np.testing.assert_allclose(value, want[k], rtol=0, atol=1e-12, err_msg=k)
        for k, p in named.items():   # back to the unclipped gradients for the next limit
            p.grad[...] = before[k]
    comm.barrier()
