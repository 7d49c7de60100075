"""Machine instructions per training step, distbp against hand-written NumPy, counted by valgrind.

    python benchmarks/step_instructions.py                       # tiny MLP 8-8-4, batch 4
    python benchmarks/step_instructions.py --sizes 784,128,10 --batch 128

Wall-clock timings on a shared machine move by 2x from run to run; an instruction count moves by
well under 1%, so it shows a change of the engine's Python overhead worth a fraction of a
microsecond. On a tiny model nearly all of a step is that overhead. Each implementation runs twice
under `valgrind --tool=callgrind` (start-up included) with a different number of steps; the
difference divided by the extra steps is the cost of one step. Needs valgrind on the PATH; it is a
development tool, not a dependency. It counts instructions, not cache misses: for the speed users
see, run engine_vs_numpy.py.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

import numpy as np


def _build(impl: str, sizes, batch):
    """The very steps the timing benchmark runs (sides.py), on the registry's MLP of `sizes`."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from engine_vs_numpy import mlp_case
    from sides import build_distbp, build_numpy
    case = mlp_case(sizes, batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    step, params = build_distbp(case, x, y, 0.01, None)
    return step if impl == "distbp" else build_numpy(case, x, y, 0.01, params())[0]


def _count(impl: str, sizes, batch, steps: int) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
           "--worker", impl, "--sizes", ",".join(map(str, sizes)), "--batch", str(batch), "--steps", str(steps)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode or not found:
        sys.exit(f"valgrind run failed ({impl}):\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="8,8,4", help="MLP layer sizes (default 8,8,4)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=500, help="extra steps in the longer run")
    ap.add_argument("--worker", choices=["distbp", "numpy"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        sizes = tuple(int(s) for s in args.sizes.split(","))
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if args.worker:  # inside valgrind: a few warm-up steps, then the counted ones
        step = _build(args.worker, sizes, args.batch)
        for _ in range(args.steps):
            step()
        return
    if shutil.which("valgrind") is None:
        sys.exit("step_instructions: valgrind is not on the PATH (apt-get install valgrind)")
    per_step = {}
    for impl in ("numpy", "distbp"):
        short = _count(impl, sizes, args.batch, 20)
        long = _count(impl, sizes, args.batch, 20 + args.steps)
        per_step[impl] = (long - short) / args.steps
    extra = per_step["distbp"] - per_step["numpy"]
    print(f"instructions per step, MLP {args.sizes}, batch {args.batch}:")
    print(f"  hand NumPy {per_step['numpy']:>12,.0f}")
    print(f"  distbp     {per_step['distbp']:>12,.0f}   (+{extra:,.0f}, {per_step['distbp'] / per_step['numpy']:.2f}x)")


if __name__ == "__main__":
    main()
