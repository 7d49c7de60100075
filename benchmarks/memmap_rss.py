"""Peak resident memory per rank of `python -m distbp.train` on a dataset far larger than that target:
a folder of X.npy/y.npy (default 2 GB of float32 features) read memory-mapped, each rank reading only
the rows of its slices of the global batches and the evaluation chunks of its shards.

    .venv/bin/python benchmarks/memmap_rss.py                 # 2 GB in /tmp/distbp_rss, 2 ranks
    .venv/bin/python benchmarks/memmap_rss.py --gb 4 --ranks 4 --keep

The data is written once (random features, labels from a linear rule, so the run learns) and deleted
afterwards unless --keep. Each rank reports its peak resident set (VmHWM in /proc/self/status), which
counts the pages of mapped files it touched as well as its own memory. For scale, the same run on the bundled digits (1 MB) is
measured first: the difference is what the 2 GB file costs. Linux only (/proc)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_dataset(folder: str, gigabytes: float, features: int) -> int:
    """X.npy (float32) and y.npy (int64, 2 classes) of about `gigabytes` GB; returns the sample count."""
    n = int(gigabytes * 2**30) // (4 * features)
    X_path = os.path.join(folder, "X.npy")
    if os.path.exists(X_path) and numpy.load(X_path, mmap_mode="r").shape == (n, features):
        return n
    os.makedirs(folder, exist_ok=True)
    X = numpy.lib.format.open_memmap(X_path, mode="w+", dtype=numpy.float32, shape=(n, features))
    y = numpy.lib.format.open_memmap(os.path.join(folder, "y.npy"), mode="w+", dtype=numpy.int64, shape=(n,))
    rng = numpy.random.default_rng(0)
    w = rng.standard_normal(features).astype(numpy.float32)
    for i in range(0, n, 65536):   # 64k rows at a time: the writer's memory stays small too
        block = rng.standard_normal((min(65536, n - i), features), dtype=numpy.float32)
        X[i:i + len(block)] = block
        y[i:i + len(block)] = block @ w > 0
    X.flush()
    y.flush()
    del X, y
    return n


WORKER = """
import sys
from distbp import distributed
from distbp.train import main
code = main(sys.argv[1:])
comm = distributed.get_comm()
with open("/proc/self/status") as f:   # VmHWM: this process's peak resident set, in kB
    hwm = int(f.read().split("VmHWM:")[1].split()[0])
peak = comm.allgather_obj(hwm / 1024)
if comm.is_root:
    print("PEAK_RSS_MB " + " ".join(f"{v:.0f}" for v in peak), flush=True)
sys.exit(code)
"""


def peak_rss(ranks: int, args: list, workdir: str) -> list:
    script = os.path.join(workdir, "worker.py")
    with open(script, "w") as f:
        f.write(WORKER)
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    out = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, script, "--no-progress", *args],
                         capture_output=True, text=True, env=env, cwd=workdir, check=False)
    if out.returncode != 0:
        sys.exit(f"memmap_rss: the run failed:\n{out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_RSS_MB"):
            return [float(v) for v in line.split()[1:]]
        if line.startswith("Dataset("):
            print("  " + line, flush=True)
    sys.exit("memmap_rss: the run printed no PEAK_RSS_MB line")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=2.0, help="size of X.npy in GB")
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--dir", default="/tmp/distbp_rss", help="where the dataset is written")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=512, help="global batch")
    p.add_argument("--eval-every", type=int, default=150, help="validate (10%% of the file) every N steps")
    p.add_argument("--keep", action="store_true", help="keep the dataset")
    a = p.parse_args()
    n = write_dataset(a.dir, a.gb, a.features)
    size = sum(os.path.getsize(os.path.join(a.dir, f)) for f in ("X.npy", "y.npy")) / 2**30
    common = ["--hidden", "128", "--batch-size", str(a.batch_size), "--steps", str(a.steps)]
    with tempfile.TemporaryDirectory() as work:
        try:
            small = peak_rss(a.ranks, [*common, "--dataset", "digits", "--checkpoint-dir", "ck_small"], work)
            big = peak_rss(a.ranks, [*common, "--dataset", a.dir, "--eval-every", str(a.eval_every),
                                     "--checkpoint-dir", "ck_big"], work)
        finally:
            if not a.keep:
                shutil.rmtree(a.dir, ignore_errors=True)
    read = a.steps * a.batch_size * a.features * 4 / a.ranks / 2**20
    evals = (a.steps // a.eval_every * 0.1 + 0.2) * size * 1024 / a.ranks
    print(f"dataset {size:.2f} GB ({n} samples x {a.features} float32), {a.ranks} ranks, {a.steps} steps of "
          f"{a.batch_size}, validation every {a.eval_every} steps and the test split at the end")
    print(f"rows read per rank: ~{read:.0f} MB for training, ~{evals:.0f} MB for validation and test")
    print(f"peak RSS per rank, digits (1 MB):      {' '.join(f'{v:.0f} MB' for v in small)}")
    print(f"peak RSS per rank, {size:.2f} GB memmap: {' '.join(f'{v:.0f} MB' for v in big)}")


if __name__ == "__main__":
    main()
