"""Collectives against closed forms with rank-valued inputs (ChainerMN/mpi4py style)."""
import numpy as np
import pytest

from distbp.dist import SelfComm


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
def test_objects_split_and_barrier(comm):
    assert comm.allgather_obj({"r": comm.rank}) == [{"r": i} for i in range(comm.size)]
    assert comm.bcast_obj("root" if comm.rank == 0 else None) == "root"
    sub = comm.split(comm.rank % 2)
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
