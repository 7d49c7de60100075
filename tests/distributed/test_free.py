"""Freeing communicators: what a grid, a DDP wrapper, a pipeline stage and a sharded optimizer create
is given back by free() (counted from outside distbp: tests/context_ids.py probes MPICH's pool of
about 2048 communicators per process), a freed communicator refuses further use with one clear
error, and what was given to them (the world, the module) stays usable."""
import copy

import numpy as np
import pytest
from context_ids import free_context_ids
from distributed_helpers import max_diff, shard

import distbp as db
from distbp import nn, optim
from distbp.distributed import (
    CommunicatorFreedError,
    DistributedDataParallel,
    MPIComm,
    ProcessGrid,
    ZeroRedundancyOptimizer,
    get_comm,
)
from distbp.distributed.pipeline import PipelineStage, partition


def _mpi(comm):
    if not isinstance(comm, MPIComm):
        pytest.skip("counts MPI communicators: run under mpiexec")
    return comm


def _mlp():
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _stage(comm):
    stages = 2 if comm.size % 2 == 0 else 1
    grid = ProcessGrid(comm, pipeline_stages=stages)
    model = _mlp()
    return grid, PipelineStage(model, grid, partition(model, stages))


MAKERS = {
    "grid": lambda comm: [ProcessGrid(comm, pipeline_stages=comm.size)],
    "ddp": lambda comm: [DistributedDataParallel(_mlp(), comm)],
    "ddp-several-buckets": lambda comm: [DistributedDataParallel(_mlp(), comm, bucket_cap_mb=0.0001)],
    "ddp-deterministic": lambda comm: [DistributedDataParallel(_mlp(), comm, deterministic=True)],
    "pipeline-stage": lambda comm: list(reversed(_stage(comm))),   # the stage first, then its grid
    "zero": lambda comm: [ZeroRedundancyOptimizer(_mlp().parameters(), optim.SGD, comm, lr=0.1)],
    "split": lambda comm: [comm.split(comm.rank % 2)],
}


@pytest.mark.mpi
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_free_gives_back_every_communicator_it_made(comm, kind):
    comm = _mpi(comm)
    comm.alloc_buffer(comm.size, np.float64)  # the world's own node group, made once, is not counted below
    before = free_context_ids()
    made = MAKERS[kind](comm)
    taken = before - free_context_ids()
    for thing in made:
        thing.free()
        thing.free()  # idempotent
    left = before - free_context_ids()
    assert left == 0, f"{kind}: took {taken} communicators and left {left} of them"
    assert taken > 0 or (kind == "zero" and comm.size == 1)   # ZeRO on one rank has nothing to share


@pytest.mark.mpi(min_size=2)
def test_three_thousand_grids_built_and_freed_stay_within_mpi_limits(comm):
    """18000 communicators in all, where MPICH has room for about 2048 at a time: without free()
    this fails within the first 350 grids. On two ranks (a few seconds; more ranks only take longer)."""
    if _mpi(comm).size != 2:
        pytest.skip("runs on two ranks")
    before = free_context_ids()
    for k in range(3000):
        with ProcessGrid(comm, pipeline_stages=2) as grid:
            if k % 1000 == 0:   # the grid works: rank-valued sum over its pipeline, 0 + 1
                assert grid.pipe_comm.allreduce(np.array([comm.rank], dtype=np.int64))[0] == 1
    assert free_context_ids() == before
    assert comm.allreduce(np.ones(1))[0] == comm.size   # the grid never freed the world


@pytest.mark.mpi
def test_a_freed_communicator_refuses_further_use(comm):
    sub = _mpi(comm).split(0)
    a = sub.alloc_buffer(max(sub.size, 2), np.float64)
    a[:] = 1.0
    assert sub.allreduce(a)[0] == sub.size
    sub.free()
    calls = {
        "allreduce": lambda: sub.allreduce(np.ones(2)),
        "iallreduce": lambda: sub.iallreduce(np.ones(2)),
        "bcast": lambda: sub.bcast(np.ones(2)),
        "allgather": lambda: sub.allgather(np.ones(2)),
        "bcast_obj": lambda: sub.bcast_obj(1),
        "barrier": sub.barrier,
        "split": lambda: sub.split(0),
        "alloc_buffer": lambda: sub.alloc_buffer(8, np.float64),
        "isend": lambda: sub.isend(np.ones(2), 0),
        "recv": lambda: sub.recv(np.ones(2), 0),
    }
    for name, call in calls.items():
        with pytest.raises(CommunicatorFreedError, match="was freed") as info:
            call()
        assert "\n" not in str(info.value), name
    assert sub.buffer_path(a) == "mpi" or sub.size == 1   # its shared memory is gone
    sub.free()   # again: nothing happens
    assert comm.allreduce(np.ones(1))[0] == comm.size


@pytest.mark.mpi
def test_a_freed_grid_refuses_use_and_its_world_stays(comm):
    with ProcessGrid(_mpi(comm)) as grid:
        assert grid.dp_comm.allreduce(np.ones(1))[0] == comm.size
    with pytest.raises(CommunicatorFreedError, match="was freed"):
        grid.dp_comm.allreduce(np.ones(1))
    with pytest.raises(CommunicatorFreedError):
        grid.pipe_comm.barrier()
    assert comm.allreduce(np.ones(1))[0] == comm.size


@pytest.mark.mpi
def test_freeing_a_wrapper_of_a_passed_in_mpi_communicator_leaves_that_communicator(comm):
    """MPIComm over a communicator the caller made: free() releases what MPIComm made on it (node
    group, windows, watchdog), never the caller's communicator."""
    raw = _mpi(comm).comm.Dup()
    wrapped = MPIComm(raw)
    wrapped.alloc_buffer(comm.size, np.float64)
    wrapped.free()
    assert raw.allreduce(1) == comm.size   # still a live communicator
    raw.Free()


@pytest.mark.mpi
def test_a_model_wrapped_again_after_free_trains_like_one_process(comm):
    """free() removes the old wrapper's gradient hooks and copies each .grad out of its bucket (the
    shared memory that goes): a second DDP over the same module then trains exactly like one
    process (float64, 1e-10)."""
    ref = _mlp()
    mine = copy.deepcopy(ref)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((24, 6)), rng.integers(0, 3, 24)
    opt_ref, opt = optim.SGD(ref.parameters(), lr=0.1), optim.SGD(mine.parameters(), lr=0.1)
    ddp = None
    for step in range(4):
        if step % 2 == 0:   # a new wrapper every other step; the old one was freed
            ddp = DistributedDataParallel(mine, comm)
        idx = np.arange(6 * step, 6 * step + 6)
        opt_ref.zero_grad()
        opt.zero_grad()
        nn.functional.cross_entropy(ref(db.tensor(x[idx])), y[idx]).backward()
        part = idx[shard(6, comm.rank, comm.size)]
        loss = nn.functional.cross_entropy(ddp(db.tensor(x[part])), y[part], reduction="sum") * (comm.size / 6)
        loss.backward()
        if step % 2 == 1:
            grads = [p.grad.copy() for p in mine.parameters()]
            ddp.free()
            assert all(np.array_equal(g, p.grad) for g, p in zip(grads, mine.parameters()))
            with pytest.raises(CommunicatorFreedError, match="DistributedDataParallel was freed"):
                ddp(db.tensor(x[part]))
        opt_ref.step()
        opt.step()
    assert max_diff(mine, ref) <= 1e-10


@pytest.mark.mpi
def test_a_freed_sharded_optimizer_refuses_to_step(comm):
    model = _mlp()
    with ZeroRedundancyOptimizer(model.parameters(), optim.SGD, comm, lr=0.1) as opt:
        model(db.tensor(np.ones((2, 6)))).sum().backward()
        opt.step()
    with pytest.raises(CommunicatorFreedError, match="ZeroRedundancyOptimizer was freed"):
        opt.step()


@pytest.mark.mpi
def test_a_with_block_left_by_an_error_frees_nothing(comm):
    """free() is collective: after an error the other ranks may not be there to free with, so the
    block leaves the communicator as it was (the exit releases it)."""
    sub = comm.split(0)
    with pytest.raises(ValueError, match="boom"), sub:
        raise ValueError("boom")
    assert sub.allreduce(np.ones(1))[0] == comm.size
    sub.free()


@pytest.mark.mpi
def test_freeing_the_process_wide_communicator_makes_get_comm_give_a_new_one(comm):
    world = _mpi(get_comm())
    world.alloc_buffer(world.size, np.float64)
    world.free()
    with pytest.raises(CommunicatorFreedError, match="was freed"):
        world.barrier()
    again = get_comm()
    assert again is not world and again is get_comm()
    assert again.allreduce(np.array([comm.rank]))[0] == comm.size * (comm.size - 1) // 2
