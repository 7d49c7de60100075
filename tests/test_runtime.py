"""distbp.distributed.runtime's process set-up that needs no MPI: freed memory kept for reuse, BLAS threads,
and distbp.bench's weak-scaling mode (its MPI run is in tests/distributed/test_launches.py)."""
import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distbp import bench
from distbp.distributed.runtime import precise_naps

ROOT = Path(__file__).resolve().parents[1]
glibc_linux = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                                 reason="mallopt is glibc's")

# Two 3 MB arrays made and dropped each step: glibc's default returns the freed 6 MB to the OS and
# faults it in again next step (~1,500 page faults a step here), the pattern that cost a DDP rank
# 3-5 ms a step. Printed: page faults per step over the last 20 of 30 steps.
_FAULTS = textwrap.dedent("""
    import resource, numpy as np
    from distbp.distributed.runtime import retain_freed_memory
    print(retain_freed_memory())
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for step in range(30):
        if step == 10:
            before = faults()
        a, b = np.ones(3 << 18, np.float32), np.ones(3 << 18, np.float32)
        del a, b
    print((faults() - before) / 20)
""")


def _faults_per_step(**env):
    out = subprocess.run([sys.executable, "-c", _FAULTS], check=True, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), **env)).stdout.split()
    return out[0] == "True", float(out[1])


@glibc_linux
def test_retained_freed_memory_is_reused_without_page_faults():
    applied, faults = _faults_per_step()
    assert applied and faults < 20, f"{faults} page faults per step"


@glibc_linux
def test_retaining_freed_memory_can_be_switched_off():
    applied, faults = _faults_per_step(DISTBP_RETAIN_FREED_MEMORY="0")
    assert not applied
    assert faults > 100, f"only {faults} page faults per step: the pattern no longer shows what it guards"


def test_bench_scaling_needs_more_than_one_rank(capsys):
    assert bench.main(["--sizes", "4,3", "--batch-per-rank", "2", "--steps", "1", "--scaling", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mpiexec -n 2" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_precise_naps_sets_the_timer_slack_a_waiting_rank_naps_with():
    libc = ctypes.CDLL(None)
    before = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK, in ns
    try:
        assert precise_naps(2000) and libc.prctl(30, 0, 0, 0, 0) == 2000
    finally:
        libc.prctl(29, before, 0, 0, 0)
