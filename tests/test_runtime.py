"""Process set-up that needs no MPI: freed memory kept for reuse (by `import distbp` itself), timer slack,
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
# 3-5 ms a step. Printed: whether retain_freed_memory is in effect, then page faults per step over
# the last 20 of 30 steps. {setup} is what the process does first.
_FAULTS = textwrap.dedent("""
    import resource, numpy as np
    {setup}
    print(retain_freed_memory())
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for step in range(30):
        if step == 10:
            before = faults()
        a, b = np.ones(3 << 18, np.float32), np.ones(3 << 18, np.float32)
        del a, b
    print((faults() - before) / 20)
""")


_INIT = "from distbp.distributed.runtime import retain_freed_memory"
# a plain script: only `import distbp`; the call afterwards reports what the import did
_IMPORT = "import distbp\nfrom distbp._process import retain_freed_memory"


def _faults_per_step(setup, **env):
    env = {k: v for k, v in os.environ.items() if k != "DISTBP_RETAIN_FREED_MEMORY"} | env
    out = subprocess.run([sys.executable, "-c", _FAULTS.format(setup=setup)], check=True, capture_output=True,
                         text=True, env=dict(env, PYTHONPATH=str(ROOT))).stdout.split()
    return out[0] == "True", float(out[1])


@glibc_linux
@pytest.mark.parametrize("setup", [_IMPORT, _INIT], ids=["import-distbp", "runtime"])
def test_retained_freed_memory_is_reused_without_page_faults(setup):
    applied, faults = _faults_per_step(setup)
    assert applied and faults < 20, f"{faults} page faults per step"


@glibc_linux
@pytest.mark.parametrize("setup", [_IMPORT, _INIT], ids=["import-distbp", "runtime"])
def test_retaining_freed_memory_can_be_switched_off(setup):
    applied, faults = _faults_per_step(setup, DISTBP_RETAIN_FREED_MEMORY="0")
    assert not applied
    assert faults > 100, f"only {faults} page faults per step: the pattern no longer shows what it guards"


def test_import_applies_it_once_and_init_reports_the_same(monkeypatch):
    from distbp import _process
    from distbp.distributed import runtime
    applied = _process.retain_freed_memory()
    calls = []
    monkeypatch.setattr(_process, "_set_malloc_thresholds", lambda: calls.append(1) or True)
    assert runtime.retain_freed_memory() is applied and _process.retain_freed_memory() is applied
    assert calls == []  # the import made the one attempt


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
