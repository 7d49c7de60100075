"""ProcessGrid: replicas x pipeline stages (x tensor-parallel shards), checked with rank-valued allreduces over its two groups
(closed-form sums) and with activations passed down each pipeline and gradients back up."""
import numpy as np
import pytest

from distbp.distributed import ProcessGrid, p2p


def _stages(comm, which):
    stages = {"one": 1, "two": 2, "world": comm.size}[which]
    if comm.size % stages:
        pytest.skip(f"{stages} stages do not divide a world of {comm.size}")
    return stages


@pytest.mark.mpi
@pytest.mark.parametrize("which", ["one", "two", "world"])
def test_grid_coordinates_and_groups_give_closed_form_sums(comm, free_after, which):
    P = _stages(comm, which)
    D = comm.size // P
    grid = free_after(ProcessGrid(comm, pipeline_stages=P))
    assert (grid.num_stages, grid.dp_size) == (P, D)
    assert comm.rank == grid.replica * P + grid.stage
    assert (grid.pipe_comm.size, grid.pipe_comm.rank) == (P, grid.stage)
    assert (grid.dp_comm.size, grid.dp_comm.rank) == (D, grid.replica)
    assert grid.is_first_stage == (grid.stage == 0) and grid.is_last_stage == (grid.stage == P - 1)
    assert grid.prev_rank == (grid.stage - 1 if grid.stage > 0 else None)
    assert grid.next_rank == (grid.stage + 1 if grid.stage < P - 1 else None)
    # over dp_comm: sum_k (k P + stage) = P D (D - 1) / 2 + D stage; over pipe_comm: sum_s (replica P + s)
    dp = grid.dp_comm.allreduce(np.array([comm.rank], dtype=np.int64))
    assert dp[0] == P * D * (D - 1) // 2 + D * grid.stage
    pipe = grid.pipe_comm.allreduce(np.array([comm.rank], dtype=np.int64))
    assert pipe[0] == P * P * grid.replica + P * (P - 1) // 2
    comm.barrier()


@pytest.mark.mpi
@pytest.mark.parametrize("P", [1, 2])
def test_grid_with_two_tensor_ranks_gives_closed_form_sums_over_its_three_groups(comm, free_after, P):
    T = 2
    if comm.size % (P * T):
        pytest.skip(f"{P} stages x {T} tensor ranks do not divide a world of {comm.size}")
    D = comm.size // (P * T)
    grid = free_after(ProcessGrid(comm, pipeline_stages=P, tensor_parallel=T))
    assert (grid.num_stages, grid.tp_size, grid.dp_size) == (P, T, D)
    assert comm.rank == (grid.replica * P + grid.stage) * T + grid.tp_rank
    assert (grid.tp_comm.size, grid.tp_comm.rank) == (T, grid.tp_rank)
    assert (grid.pipe_comm.size, grid.pipe_comm.rank) == (P, grid.stage)
    assert (grid.dp_comm.size, grid.dp_comm.rank) == (D, grid.replica)
    r, s, t = grid.replica, grid.stage, grid.tp_rank

    def total(group):
        return group.allreduce(np.array([comm.rank], dtype=np.int64))[0]

    # world rank = (r P + s) T + t, summed over t; over s (same r, t); over r (same s, t)
    assert total(grid.tp_comm) == T * T * (r * P + s) + T * (T - 1) // 2
    assert total(grid.pipe_comm) == T * (P * P * r + P * (P - 1) // 2) + P * t
    assert total(grid.dp_comm) == T * (P * D * (D - 1) // 2 + D * s) + D * t
    assert f"shard {t} of {T}" in repr(grid)
    comm.barrier()


@pytest.mark.mpi
def test_a_world_size_that_is_not_a_multiple_of_stages_times_tensor_ranks_raises_on_every_rank(comm):
    T = comm.size + 1   # never divides the world
    with pytest.raises(ValueError, match=rf"^world size {comm.size} is not a multiple of --pipeline-stages 1 x "
                                         rf"--tensor-parallel {T} = {T}; use {T} ranks$"):
        ProcessGrid(comm, tensor_parallel=T)
    comm.barrier()   # no rank is left waiting in a split


@pytest.mark.mpi
@pytest.mark.parametrize("which", ["two", "world"])
def test_activations_flow_down_each_pipeline_and_gradients_back(comm, free_after, which):
    P = _stages(comm, which)
    grid = free_after(ProcessGrid(comm, pipeline_stages=P))
    pipe = grid.pipe_comm
    for m in range(3):
        # each stage adds its world rank; the first starts from 100 * m
        x = (np.full((2, 3), 100.0 * m) if grid.is_first_stage else
             p2p.recv_array(pipe, (2, 3), np.float64, grid.prev_rank, p2p.tag(m, "forward")).wait())
        y = x + comm.rank
        if not grid.is_last_stage:
            p2p.send_array(pipe, y, grid.next_rank, p2p.tag(m, "forward")).wait()
        else:   # this replica's world ranks are replica * P + 0 .. P - 1
            np.testing.assert_array_equal(y, 100.0 * m + P * P * grid.replica + P * (P - 1) // 2)
        g = (np.full(4, float(m)) if grid.is_last_stage else
             p2p.recv_array(pipe, 4, np.float64, grid.next_rank, p2p.tag(m, "backward")).wait())
        if not grid.is_first_stage:
            p2p.send_array(pipe, g * 2, grid.prev_rank, p2p.tag(m, "backward")).wait()
        else:
            np.testing.assert_array_equal(g, m * 2.0 ** (P - 1))
    comm.barrier()


@pytest.mark.mpi
def test_a_world_size_that_is_not_a_multiple_raises_on_every_rank(comm):
    stages = comm.size + 1 if comm.size > 1 else 2   # never divides the world
    lower = comm.size // stages * stages
    counts = f"{lower} or {lower + stages}" if lower else f"{lower + stages}"
    with pytest.raises(ValueError, match=rf"^world size {comm.size} is not a multiple of --pipeline-stages "
                                         rf"{stages}; use {counts} ranks$"):
        ProcessGrid(comm, pipeline_stages=stages)
    if comm.size == 3:
        with pytest.raises(ValueError, match="^world size 3 is not a multiple of --pipeline-stages 2; use 2 or 4 "
                                             "ranks$"):
            ProcessGrid(comm, pipeline_stages=2)
    comm.barrier()   # no rank is left waiting in a split
