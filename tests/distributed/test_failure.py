"""A failing or stalled rank ends the whole job within seconds and is named, never left hanging.

Each test launches its own small `mpiexec` job from a single-process pytest (not marked `mpi`), with
`timeout` as a backstop, and checks how fast it ended and what it printed."""
import re

import pytest
from distributed_helpers import MPIEXEC, launch_job

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")




def test_exception_on_one_rank_ends_a_4_rank_job_and_names_the_rank(tmp_path):
    proc, took = launch_job(tmp_path, 4, """
        for step in range(100):
            if comm.rank == 2 and step == 3:
                raise ValueError("bad batch on purpose")
            comm.allreduce(np.ones(10))
    """)
    assert proc.returncode != 0
    assert took < 20, f"job took {took:.1f} s"
    assert "rank 2: Traceback" in proc.stderr and "ValueError: bad batch on purpose" in proc.stderr


def test_watchdog_names_the_stalled_rank_step_and_collective(tmp_path):
    proc, took = launch_job(tmp_path, 4, """
        dist.set_step(7)
        if comm.rank == 1:
            time.sleep(50)  # stalls outside MPI: never reaches the allreduce
        if comm.rank == 3:
            comm.bcast(np.ones(2))  # desynchronised: waits in a different collective
        else:
            comm.allreduce(np.ones(5))
    """, DISTBP_COLLECTIVE_TIMEOUT="1.5")
    assert proc.returncode != 0
    assert took < 20, f"job took {took:.1f} s"
    # whichever waiting rank times out first reports (0, 2 or 3): its own collective is in its
    # first line, the others' in the lines below it; rank 1 answers nothing
    reporter = re.search(r"distbp watchdog: rank (\d) waited", proc.stderr)
    assert reporter and reporter.group(1) in "023", proc.stderr
    assert "ranks missing (did not answer, busy outside MPI or dead): [1]" in proc.stderr
    assert "#1 allreduce(float64[5]) at step 7, called from job.py:11" in proc.stderr
    assert "#1 bcast(float64[2]) at step 7, called from job.py:9" in proc.stderr
    for r in {"0", "2", "3"} - {reporter.group(1)}:
        assert f"rank {r}: waiting in #1 " in proc.stderr


def test_debug_mode_names_ranks_whose_collective_shapes_differ(tmp_path):
    proc, took = launch_job(tmp_path, 2, """
        comm.allreduce(np.ones(3))
        comm.allreduce(np.ones(4 if comm.rank == 1 else 3))
    """, DISTBP_DEBUG_COLLECTIVES="1")
    assert proc.returncode != 0
    assert took < 20
    assert "CollectiveMismatchError: ranks called different collectives at sequence number 2" in proc.stderr
    assert "rank 0: #2 allreduce(float64[3])" in proc.stderr and "rank 1: #2 allreduce(float64[4])" in proc.stderr
