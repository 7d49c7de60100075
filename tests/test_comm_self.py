"""Point-to-point in a world of one (SelfComm): rank 0 sends to itself through a FIFO mailbox per tag;
checked transfers (distbp.distributed.p2p) and the process grid without a launcher."""
import numpy as np
import pytest

from distbp.distributed import ProcessGrid, SelfComm, p2p
from distbp.distributed.p2p import recv_array, send_array


def test_isend_irecv_to_itself_is_fifo_per_tag_and_copies_at_send():
    c = SelfComm()
    a = np.arange(6.0).reshape(2, 3)
    assert c.isend(a, 0, tag=5).wait() is None
    a[...] = -1  # the message was taken at isend: changing the array now does not change it
    c.isend(np.full((2, 3), 7.0), 0, tag=5)
    c.isend(np.ones(2, dtype=np.int32), 0, tag=9)
    got = np.empty(2, dtype=np.int32)
    assert c.irecv(got, 0, tag=9).wait() is got   # another tag is matched on its own
    np.testing.assert_array_equal(got, [1, 1])
    first, second = np.empty((2, 3)), np.empty((2, 3))
    c.irecv(first, 0, tag=5).wait()
    c.irecv(second, 0, tag=5).wait()
    np.testing.assert_array_equal(first, np.arange(6.0).reshape(2, 3))   # in the order they were sent
    np.testing.assert_array_equal(second, 7.0)


def test_blocking_send_recv_to_itself():
    c = SelfComm()
    c.send(np.array([1.5, 2.5]), 0, tag=3)
    np.testing.assert_array_equal(c.recv(np.empty(2), 0, tag=3), [1.5, 2.5])


def test_receive_without_a_matching_send_raises_at_once():
    c = SelfComm()
    c.isend(np.ones(2), 0, tag=1)
    with pytest.raises(RuntimeError, match=r"recv from rank 0 with tag 2 \(gradient of micro-batch 0\) in a world "
                                           r"of one has no matching send"):
        c.irecv(np.empty(2), 0, tag=2, what="gradient of micro-batch 0")
    other = c.split(0)   # another communicator: messages never cross
    with pytest.raises(RuntimeError, match="no matching send"):
        other.irecv(np.empty(2), 0, tag=1)
    c.irecv(np.empty(2), 0, tag=1).wait()


def test_peers_other_than_itself_and_mismatched_buffers_raise():
    c = SelfComm()
    with pytest.raises(RuntimeError, match="send to rank 1 in a world of one; launch with mpiexec -n 2 or more"):
        c.send(np.ones(2), 1)
    with pytest.raises(RuntimeError, match="recv from rank 2 in a world of one; launch with mpiexec -n 3 or more"):
        c.irecv(np.empty(2), 2)
    c.isend(np.ones(4, dtype=np.float32), 0)
    with pytest.raises(ValueError, match=r"into float64 \(4,\) in a world of one, but the message sent is float32"):
        c.recv(np.empty(4), 0)
    np.testing.assert_array_equal(c.recv(np.empty((2, 2), dtype=np.float32), 0), np.ones((2, 2)))  # still queued


def test_checked_transfer_to_itself_round_trips_any_layout():
    c = SelfComm()
    for m, x in enumerate([np.arange(12.0).reshape(3, 4).T,   # not contiguous: sent as a copy
                           np.array(3, dtype=np.int64), np.zeros((0, 5), dtype=np.float32),
                           np.arange(8, dtype=np.uint8).reshape(2, 1, 2, 2) > 3]):
        send_array(c, x, 0, p2p.tag(m, "forward"), what=f"activation of micro-batch {m}").wait()
        got = recv_array(c, x.shape, x.dtype, 0, p2p.tag(m, "forward")).wait()
        assert got.dtype == x.dtype and got.shape == x.shape
        np.testing.assert_array_equal(got, x)


def test_checked_transfer_mismatch_names_both_sides_and_leaves_nothing_queued():
    c = SelfComm()
    t = p2p.tag(3, "forward")
    send_array(c, np.ones((4, 8), dtype=np.float32), 0, t)
    req = recv_array(c, (4, 8), np.float64, 0, t, what="activation of micro-batch 3")
    with pytest.raises(ValueError) as e:
        req.wait()
    assert str(e.value) == ("rank 0 expected activation of micro-batch 3 as float64 (4, 8) from rank 0, "
                            "which sent float32 (4, 8)")
    with pytest.raises(ValueError, match="which sent float32"):   # waiting again gives the same error
        req.wait()
    send_array(c, np.ones(3), 0, t)
    with pytest.raises(ValueError, match=r"expected the message with tag 12 as float64 \(4,\) from rank 0, which "
                                         r"sent float64 \(3,\)"):
        recv_array(c, 4, np.float64, 0, t).wait()
    with pytest.raises(RuntimeError, match="no matching send"):  # the mismatched data was taken off the queue
        c.irecv(np.empty(3), 0, t)


def test_irecv_message_takes_the_next_message_whole_whatever_its_length():
    c = SelfComm()
    c.isend(np.arange(3, dtype=np.float64), 0, tag=4)
    c.isend(np.ones(2, dtype=np.uint8), 0, tag=4)
    first = c.irecv_message(0, 4).wait()
    assert first.dtype == np.uint8 and first.shape == (24,)
    np.testing.assert_array_equal(first.view(np.float64), [0, 1, 2])
    np.testing.assert_array_equal(c.irecv_message(0, 4).wait(), [1, 1])
    with pytest.raises(RuntimeError, match="no matching send"):
        c.irecv_message(0, 4)
    c.isend(np.ones(2, dtype=np.uint8), 0, tag=p2p.tag(0, "forward"))   # shorter than any header
    with pytest.raises(ValueError, match=r"the message on tag 0 \(2 bytes\) is not from send_array"):
        recv_array(c, (2,), np.uint8, 0, p2p.tag(0, "forward")).wait()


def test_tags_are_distinct_even_and_bounded():
    tags = {p2p.tag(m, d) for m in range(100) for d in ("forward", "backward")}
    headers = {t + 1 for t in tags}
    assert len(tags) == 200 and not tags & headers and all(t % 2 == 0 for t in tags)
    assert max(headers) <= p2p.TAG_LIMIT and p2p.tag(8191, "backward") + 1 == p2p.TAG_LIMIT
    with pytest.raises(ValueError, match="micro-batch 8192 needs MPI tag 32769, above 32767, the largest tag every "
                                         "MPI library allows; use at most 8192 micro-batches per step"):
        p2p.tag(8192, "forward")
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        p2p.tag(0, "sideways")
    with pytest.raises(ValueError, match="tag 3 cannot carry a checked transfer"):
        send_array(SelfComm(), np.ones(2), 0, 3)
    with pytest.raises(ValueError, match="cannot send dtype object"):
        send_array(SelfComm(), np.array([None]), 0, 0)


def test_process_grid_in_a_world_of_one():
    grid = ProcessGrid(SelfComm(), pipeline_stages=1)
    assert (grid.num_stages, grid.stage, grid.dp_size, grid.replica) == (1, 0, 1, 0)
    assert grid.is_first_stage and grid.is_last_stage and grid.prev_rank is None and grid.next_rank is None
    assert grid.pipe_comm.size == grid.dp_comm.size == 1
    with pytest.raises(ValueError, match=r"^world size 1 is not a multiple of --pipeline-stages 2; use 2 ranks$"):
        ProcessGrid(SelfComm(), pipeline_stages=2)
    for bad in (0, 2.0, "2"):
        with pytest.raises(ValueError, match="--pipeline-stages must be a positive integer"):
            ProcessGrid(SelfComm(), pipeline_stages=bad)


def test_free_is_a_no_op_in_a_world_of_one_but_a_freed_wrapper_refuses_use():
    from distbp import nn
    from distbp.distributed import CommunicatorFreedError, DistributedDataParallel
    c = SelfComm()
    with c as same:
        assert same is c
    c.free()
    np.testing.assert_array_equal(c.allreduce(np.ones(2)), 1.0)   # nothing was held, nothing is refused
    with ProcessGrid(c) as grid:
        assert grid.dp_comm.size == 1
    ddp = DistributedDataParallel(nn.Linear(2, 1), c)
    ddp.free()
    ddp.free()
    with pytest.raises(CommunicatorFreedError, match="^this DistributedDataParallel was freed"):
        ddp(np.ones((1, 2)))
