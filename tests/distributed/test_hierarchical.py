"""Hierarchical allreduce (shared memory within a host, MPI between hosts) against its closed form.

On one machine MPI puts every rank on one node; these tests cut the world into pretend hosts of L
consecutive ranks with DISTBP_RANKS_PER_HOST (the shared memory is real, the hosts are not). tests/test_netns_cluster.py runs it across real namespace hosts."""
import numpy as np
import pytest
from distributed_helpers import max_diff

from distbp.distributed import MPIComm


def _pretend_hosts(comm, monkeypatch, per_host: int, free_after) -> MPIComm:
    """A communicator over comm's ranks whose hosts are consecutive runs of `per_host` ranks (freed
    after the test, with its shared windows and cross-host communicators)."""
    monkeypatch.setenv("DISTBP_RANKS_PER_HOST", str(per_host))
    return free_after(comm.split(0))


def _layouts(size: int) -> list:
    """Ranks per host that divide the world into at least two hosts."""
    return [L for L in range(1, size) if size % L == 0]


def _values(rank: int, numel: int, dtype) -> np.ndarray:
    return np.random.default_rng(500 + rank).standard_normal(numel).astype(dtype)


def _expected(size: int, per_host: int, numel: int, dtype) -> np.ndarray:
    """The documented order: each host's ranks added in rank order, then the hosts in host order."""
    total = None
    for host in range(size // per_host):
        ranks = range(host * per_host, (host + 1) * per_host)
        part = _values(ranks[0], numel, dtype)
        for r in ranks[1:]:
            part = part + _values(r, numel, dtype)
        total = part if total is None else total + part
    return total


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("numel", [1000, 13])  # 13: uneven node slices and uneven host pieces
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_in_host_order_exactly_same_bits_everywhere(comm, monkeypatch, free_after, numel, dtype):
    for per_host in _layouts(comm.size):
        hier = _pretend_hosts(comm, monkeypatch, per_host, free_after)
        assert hier.hosts() == [list(range(h, h + per_host)) for h in range(0, comm.size, per_host)]
        a, b = hier.alloc_buffer(numel, dtype), hier.alloc_buffer(numel, dtype)
        assert hier.buffer_path(a) == hier.buffer_path(b) == "hierarchical"
        for step in range(2):   # buffers are reused every step, as DDP's buckets are
            a[...] = _values(comm.rank, numel, dtype) * (step + 1)
            b[...] = _values(comm.rank, numel, dtype)
            ra, rb = hier.iallreduce(a), hier.iallreduce(b)
            for req in ((ra, rb) if comm.rank % 2 else (rb, ra)):  # ranks finish them in different orders
                req.wait()
            want = _expected(comm.size, per_host, numel, dtype)
            np.testing.assert_array_equal(a, want * dtype(step + 1))
            np.testing.assert_array_equal(b, want)
        whole = sum(_values(r, numel, np.float64) for r in range(comm.size))
        np.testing.assert_allclose(b, whole, **({"rtol": 1e-10, "atol": 1e-12} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-5}))
        everyone = comm.allgather(b)
        assert all(row.tobytes() == everyone[0].tobytes() for row in everyone)


@pytest.mark.mpi(min_size=2)
def test_test_drives_it_to_the_end_and_reduce_scatter_gives_the_allreduce_bits(comm, monkeypatch, free_after):
    per_host = _layouts(comm.size)[-1]
    hier = _pretend_hosts(comm, monkeypatch, per_host, free_after)
    a = hier.alloc_buffer(257, np.float64)
    a[...] = _values(comm.rank, 257, np.float64)
    req = hier.iallreduce(a)
    while not req.test():
        pass
    want = _expected(comm.size, per_host, 257, np.float64)
    np.testing.assert_array_equal(req.wait(), want)
    a[...] = _values(comm.rank, 257, np.float64)
    mine = hier.reduce_scatter_slices(a)
    lo = 257 * comm.rank // comm.size
    np.testing.assert_array_equal(mine, want[lo:lo + mine.size])
    a[lo:lo + mine.size] = comm.rank
    hier.allgather_slices(a)
    np.testing.assert_array_equal(a, np.repeat(np.arange(comm.size), np.diff([257 * k // comm.size
                                                                             for k in range(comm.size + 1)])))


@pytest.mark.mpi(min_size=2)
def test_ddp_with_hierarchical_buckets_equals_one_process(comm, monkeypatch, free_after):
    from test_ddp import TOL, _data, _mlp, _run
    hier = _pretend_hosts(comm, monkeypatch, _layouts(comm.size)[-1], free_after)
    x, y = _data(8 * 4, (6,), 3)
    ref, ddp = _run(_mlp, hier, x, y, batch=8, steps=12, free_after=free_after)
    assert {ddp.reducer.comm.buffer_path(b.buffer) for b in ddp.reducer.buckets} == {"hierarchical"}
    assert max_diff(ddp, ref) <= TOL
