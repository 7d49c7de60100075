"""Point-to-point: nonblocking ring exchanges against closed forms, whole messages of any length,
checked transfers (p2p) whose mismatches raise on the receiver without hanging the sender, and a
stage that never sends, named by the watchdog. In a world of one every rank's neighbour is itself."""
import re

import numpy as np
import pytest
from distributed_helpers import MPIEXEC, launch_job

from distbp.distributed import p2p
from distbp.distributed.p2p import recv_array, send_array

PRELUDE = "from distbp.distributed import p2p\n"


@pytest.mark.mpi
def test_isend_irecv_ring_both_ways_with_several_tags_in_flight(comm):
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    big = 40_000  # 320 kB: above MPICH's eager limit, so the send waits for the matching receive
    sends = [comm.isend(np.full(3, 10.0 * r + t), right, tag=t) for t in range(3)]
    sends.append(comm.isend(np.arange(big, dtype=np.float64) * r, left, tag=7))
    got = {t: np.empty(3) for t in (2, 0, 1)}   # receives posted in another order than the sends
    recvs = {t: comm.irecv(got[t], left, tag=t) for t in got}
    from_right = comm.irecv(np.empty(big), right, tag=7)
    np.testing.assert_array_equal(from_right.wait(), np.arange(big) * right)
    for t, req in recvs.items():
        assert req.wait() is got[t]
        np.testing.assert_array_equal(got[t], 10.0 * left + t)
    for req in sends:
        assert req.wait() is None
    comm.barrier()


@pytest.mark.mpi
def test_checked_transfers_forward_then_backward_around_the_ring(comm):
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    sends = [send_array(comm, np.full((2, m + 1), r + m, dtype=np.float32), right, p2p.tag(m, "forward"),
                        what=f"activation of micro-batch {m}") for m in range(4)]
    for m in reversed(range(4)):   # received in the reverse order: the tags keep them apart
        x = recv_array(comm, (2, m + 1), np.float32, left, p2p.tag(m, "forward")).wait()
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, left + m)
        back = send_array(comm, x.astype(np.float64) * 2, left, p2p.tag(m, "backward"))
        g = recv_array(comm, (2, m + 1), np.float64, right, p2p.tag(m, "backward")).wait()
        np.testing.assert_array_equal(g, 2 * (r + m))
        back.wait()
    for req in sends:
        req.wait()
    comm.barrier()


@pytest.mark.mpi
def test_irecv_message_takes_whole_messages_of_any_length_in_order(comm):
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    lengths = [0, 7, 9000, 300_000]   # empty, eager and above MPICH's eager limit
    sends = [comm.isend(np.full(k, (r + k) % 251, dtype=np.uint8), right, tag=6) for k in lengths]
    for k in lengths:   # one tag: MPI keeps one sender's messages in order
        got = comm.irecv_message(left, tag=6, what="a message").wait()
        assert got.dtype == np.uint8 and got.shape == (k,)
        np.testing.assert_array_equal(got, (left + k) % 251)
    for req in sends:
        req.wait()
    comm.barrier()


@pytest.mark.mpi
@pytest.mark.parametrize("sent,expected", [
    ((np.float32, (4, 8)), (np.float64, (4, 8))),
    ((np.float64, (300, 299)), (np.float64, (300, 300))),  # large: the send completes only once received
    ((np.float64, (300, 301)), (np.float64, (300, 300))),  # longer than expected: not truncated, named
    ((np.float32, (8, 4)), (np.float32, (4, 8))),          # the same bytes in another shape
    ((np.int32, (4, 8)), (np.float32, (4, 8))),            # the same bytes as another dtype
], ids=["dtype", "large-shape", "longer", "same-bytes-shape", "same-bytes-dtype"])
def test_mismatch_raises_on_the_receiver_naming_both_sides_and_the_sender_completes(comm, sent, expected):
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    t = p2p.tag(3, "forward")
    send = send_array(comm, np.zeros(sent[1], dtype=sent[0]), right, t)
    req = recv_array(comm, expected[1], expected[0], left, t, what="activation of micro-batch 3")
    with pytest.raises(ValueError) as e:
        req.wait()
    assert str(e.value) == (f"rank {r} expected activation of micro-batch 3 as {np.dtype(expected[0])} "
                            f"{expected[1]} from rank {left}, which sent {np.dtype(sent[0])} {sent[1]}")
    send.wait()   # the receiver took the data before raising
    # nothing stray is left on the tag: the next transfer on it gets the right data
    again = send_array(comm, np.full(expected[1], r, dtype=expected[0]), right, t)
    np.testing.assert_array_equal(recv_array(comm, expected[1], expected[0], left, t).wait(), left)
    again.wait()
    comm.barrier()




@pytest.mark.mpi
def test_a_message_not_from_send_array_is_named_and_taken(comm):
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    t = p2p.tag(2, "backward")
    send = comm.isend(np.ones(5), right, tag=t)
    with pytest.raises(ValueError) as e:
        recv_array(comm, (5,), np.float64, left, t, what="gradient of micro-batch 2").wait()
    assert str(e.value) == (f"rank {r} expected gradient of micro-batch 2 from rank {left}, but the message on tag "
                            f"{t} (40 bytes) is not from send_array: both sides must use send_array/recv_array")
    send.wait()
    again = send_array(comm, np.full(5, r, dtype=np.float64), right, t)
    np.testing.assert_array_equal(recv_array(comm, (5,), np.float64, left, t).wait(), left)
    again.wait()
    comm.barrier()


@pytest.mark.mpi
def test_the_sent_array_may_change_once_send_array_returns(comm):
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    x = np.arange(50_000, dtype=np.float64) + r   # above the eager limit: still in flight below
    send = send_array(comm, x, right, p2p.tag(0, "forward"))
    x[:] = -1
    got = recv_array(comm, (50_000,), np.float64, left, p2p.tag(0, "forward")).wait()
    np.testing.assert_array_equal(got, np.arange(50_000) + left)
    send.wait()
    comm.barrier()


@pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")
def test_watchdog_names_a_stage_that_never_sends(tmp_path):
    # 2 replicas x 2 stages; stage 0 of replica 1 (world rank 2) stalls outside MPI and never sends
    proc, took = launch_job(tmp_path, 4, prelude=PRELUDE, body="""
        grid = dist.ProcessGrid(comm, pipeline_stages=2)
        dist.set_step(5)
        if comm.rank == 2:
            time.sleep(50)
        if grid.is_first_stage:
            p2p.send_array(grid.pipe_comm, np.ones((4, 8)), grid.next_rank, p2p.tag(1, "forward"),
                           what="activation of micro-batch 1 to stage 1").wait()
        else:
            p2p.recv_array(grid.pipe_comm, (4, 8), np.float64, grid.prev_rank, p2p.tag(1, "forward"),
                           what="activation of micro-batch 1 from stage 0").wait()
    """, DISTBP_COLLECTIVE_TIMEOUT="1.5")
    assert proc.returncode != 0
    assert took < 20, f"job took {took:.1f} s"
    assert re.search(r"distbp watchdog: rank 1 \(world rank 3\) waited \d+\.\d s \(timeout 1.5 s\) in "
                     r"point-to-point irecv\(a message of any length\) from rank 0 tag 4 \[activation of micro-batch "
                     r"1 from stage 0, expecting float64 \(4, 8\)\] at step 5, called from job.py:14", proc.stderr), \
        proc.stderr
    assert "  its peer: rank 0 (world rank 2)\n" in proc.stderr
    assert "ranks missing (did not answer, busy outside MPI or dead): [0]" in proc.stderr
