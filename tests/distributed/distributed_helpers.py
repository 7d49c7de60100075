"""Helpers for the distributed tests (imported by name: tests/distributed is on sys.path under pytest)."""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"  # the mpich wheel puts it beside python


def launch_job(tmp_path, n: int, body: str, prelude: str = "", **env):
    """Run `body` as a script on n ranks of its own mpiexec job (60 s cap); returns (process, seconds).
    The script starts with `comm = dist.init(threads=1)`; `prelude` adds imports before that."""
    script = tmp_path / "job.py"
    script.write_text("import numpy as np, time\nimport distbp.distributed as dist\n" + prelude
                      + "comm = dist.init(threads=1)\n" + textwrap.dedent(body))
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", **env)
    full_env.pop("PMI_RANK", None)
    t0 = time.monotonic()
    proc = subprocess.run(["timeout", "60", str(MPIEXEC), "-n", str(n), sys.executable, str(script)],
                          check=False, capture_output=True, text=True, env=full_env, cwd=tmp_path)
    return proc, time.monotonic() - t0


def shard(n: int, rank: int, size: int) -> slice:
    """Contiguous slice of n samples for `rank`; sizes differ by at most one (numpy.array_split's rule)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def max_diff(model_a, model_b) -> float:
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a)
