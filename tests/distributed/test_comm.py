"""Collectives against closed forms with rank-valued inputs (ChainerMN/mpi4py style)."""
import numpy as np
import pytest

from distbp.distributed import SelfComm


@pytest.mark.mpi
def test_allreduce_sum_max_min_of_rank_values(comm):
    n = comm.size
    for op, expected in (("sum", n * (n - 1) / 2), ("max", n - 1), ("min", 0)):
        a = np.full((2, 3), float(comm.rank))
        assert comm.allreduce(a, op) is a
        np.testing.assert_array_equal(a, expected)


@pytest.mark.mpi
def test_iallreduce_completes_after_wait(comm):
    a = np.arange(5, dtype=np.float64) * (comm.rank + 1)
    req = comm.iallreduce(a)
    while not req.test():
        pass
    np.testing.assert_array_equal(req.wait(), np.arange(5) * comm.size * (comm.size + 1) / 2)


def _rank_values(rank, numel):
    return np.random.default_rng(100 + rank).standard_normal(numel)


@pytest.mark.mpi
@pytest.mark.parametrize("numel", [1000, 7])  # 7: slices of unequal length on 2 and 4 ranks
def test_buffer_allreduce_sums_in_rank_order_exactly_with_two_in_flight(comm, free_after, numel):
    """alloc_buffer's arrays are node shared memory under MPI on one machine; their sum-allreduce must
    be exact (every element summed in rank order, the same bits on every rank), also while two are
    in flight and ranks finish them in different orders (each buffer needs its own barriers)."""
    comm = free_after(comm.dup())   # the buffers' shared memory goes with it
    a, b = comm.alloc_buffer(numel, np.float64), comm.alloc_buffer(numel, np.float64)
    if comm.size > 1:
        assert comm.uses_shared_memory(a) and comm.uses_shared_memory(b)
    for step in range(3):  # reuse, as DDP reuses its buckets every step
        a[...] = _rank_values(comm.rank, numel) * (step + 1)
        b[...] = _rank_values(comm.rank, numel) * -2.0
        ra, rb = comm.iallreduce(a), comm.iallreduce(b)
        for req in ((ra, rb) if comm.rank % 2 else (rb, ra)):  # odd ranks finish a first, even ones b
            req.wait()
        want_a = _rank_values(0, numel) * (step + 1)
        for r in range(1, comm.size):
            want_a = want_a + _rank_values(r, numel) * (step + 1)
        np.testing.assert_array_equal(a, want_a)
        np.testing.assert_array_equal(b, -2.0 * sum(_rank_values(r, numel) for r in range(comm.size)))
    everyone = comm.allgather(a)
    assert all(np.array_equal(row, everyone[0]) for row in everyone)


@pytest.mark.mpi
def test_buffer_smaller_than_the_world_falls_back_to_mpi(comm, free_after):
    comm = free_after(comm.dup())
    a = comm.alloc_buffer(1, np.float32)
    a[...] = comm.rank + 1
    comm.iallreduce(a).wait()
    assert a[0] == comm.size * (comm.size + 1) / 2
    if comm.size > 1:
        assert not comm.uses_shared_memory(a)


@pytest.mark.mpi
def test_bcast_allgather_reduce_scatter_closed_forms(comm):
    n, r = comm.size, comm.rank
    b = np.full(3, float(r) + 10)
    comm.bcast(b, root=n - 1)
    np.testing.assert_array_equal(b, n - 1 + 10)
    g = comm.allgather(np.array([r, 2 * r], dtype=np.int64))
    np.testing.assert_array_equal(g, [[i, 2 * i] for i in range(n)])
    x = np.arange(2 * n, dtype=np.float64).reshape(2 * n, 1) + r   # rank r holds i + r in row i
    block = comm.reduce_scatter(x)
    rows = np.arange(2 * r, 2 * r + 2)
    np.testing.assert_array_equal(block[:, 0], n * rows + n * (n - 1) / 2)


@pytest.mark.mpi
def test_objects_split_and_barrier(comm, free_after):
    assert comm.allgather_obj({"r": comm.rank}) == [{"r": i} for i in range(comm.size)]
    assert comm.bcast_obj("root" if comm.rank == 0 else None) == "root"
    sub = free_after(comm.split(comm.rank % 2))
    assert sub.size == len(range(comm.rank % 2, comm.size, 2)) and sub.rank == comm.rank // 2
    total = sub.allreduce(np.array([comm.rank], dtype=np.int64))
    assert total[0] == sum(range(comm.rank % 2, comm.size, 2))
    comm.barrier()


@pytest.mark.mpi(min_size=2)
def test_send_recv_ring(comm):
    n, r = comm.size, comm.rank
    out = np.full(4, float(r))
    got = np.empty(4)
    if r % 2 == 0:  # even ranks send first, so blocking send/recv cannot deadlock
        comm.send(out, (r + 1) % n)
        comm.recv(got, (r - 1) % n)
    else:
        comm.recv(got, (r - 1) % n)
        comm.send(out, (r + 1) % n)
    np.testing.assert_array_equal(got, (r - 1) % n)


def test_self_comm_is_identity_and_rejects_bad_op():
    c = SelfComm()
    a = np.ones(3)
    assert c.allreduce(a) is a and c.iallreduce(a).wait() is a
    assert c.allgather(a).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        c.allreduce(a, "avg")
