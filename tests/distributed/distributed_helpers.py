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


def own_rows(model, name: str, full):
    """The part of the single-process tensor `full` (named `name`) that `model` holds: rows lo:hi of a
    Linear cut between pipeline stages or sharded over tensor ranks (its `shard_spec`), else all."""
    prefix, _, leaf = name.rpartition(".")
    spec = getattr(dict(model.named_modules()).get(prefix), "shard_spec", {}).get(leaf)
    if spec is None or spec.dim is None or full.shape[spec.dim] != spec.full:
        return full
    index = [slice(None)] * full.ndim
    index[spec.dim] = slice(spec.start, spec.stop)
    return full[tuple(index)]


def max_diff(model_a, model_b) -> float:
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a)


def train_on_gpu_shards(ref, ddp, gpu, steps: int = 5) -> None:
    """`steps` SGD-momentum steps of a CPU reference on batches of 8 and of `ddp` (a model on
    'cuda') on this rank's shard of each, its loss scaled so the reduced gradient is the batch mean."""
    import distbp as db
    from distbp import nn
    from distbp.optim import SGD
    opt_ref, opt = SGD(ref.parameters(), lr=0.1, momentum=0.9), SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8 * steps, 6)), rng.integers(0, 3, 8 * steps)
    for step in range(steps):
        idx = np.arange(8 * step, 8 * step + 8)
        opt_ref.zero_grad()
        opt.zero_grad()
        nn.functional.cross_entropy(ref(db.tensor(x[idx])), y[idx]).backward()
        part = idx[shard(8, gpu.rank, gpu.size)]
        loss = nn.functional.cross_entropy(ddp(db.tensor(x[part], device="cuda")), db.tensor(y[part], device="cuda"),
                                           reduction="sum") * (gpu.size / 8)
        loss.backward()
        opt_ref.step()
        opt.step()
