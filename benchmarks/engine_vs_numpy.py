"""One MLP training step (forward, cross entropy, backward, SGD) in distbp against the same math
written by hand in NumPy, and PyTorch when it is importable; each side in its own process.

    python benchmarks/engine_vs_numpy.py                  # MLPs 784-128-10 and 784-1024-1024-10, 2 threads
    python benchmarks/engine_vs_numpy.py --threads 1 --json
    python benchmarks/engine_vs_numpy.py --sizes 8,8,4 --batch 4   # tiny: shows pure Python overhead

The MLPs are the registry's `mlp` (Flatten, Linear+ReLU per hidden size, Linear). Blocks alternate
distbp, numpy, torch, distbp, ...; `paired` is the median over rounds of distbp's speed over the
peer's in the same round (above 1: distbp is faster), with its quartiles and range (benchmarks/README.md).
Before timing, one step of each side is checked to give the same weights, so all do the same work.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules below
import paired
import sides

DEFAULT_CONFIGS = [((784, 128, 10), 128), ((784, 1024, 1024, 10), 256)]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mlp_case(sizes, batch) -> dict:
    return {"label": "mlp " + "-".join(map(str, sizes)), "model": "mlp", "input_shape": [sizes[0]],
            "num_outputs": sizes[-1], "options": {"hidden": list(sizes[1:-1])}, "batch": batch, "seed": 0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", help="MLP layer sizes, e.g. 784,128,10 (default: 784,128,10 and 784,1024,1024,10)")
    ap.add_argument("--batch", type=int, default=128, help="batch size with --sizes")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even when importable")
    paired.add_timing_args(ap)
    args = ap.parse_args(argv)
    paired.check_timing_args(ap, args)
    configs = DEFAULT_CONFIGS
    if args.sizes:
        try:
            configs = [(tuple(int(s) for s in args.sizes.split(",")), args.batch)]
        except ValueError:
            ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
        if len(configs[0][0]) < 3 or min(configs[0][0]) < 1 or args.batch < 1:
            ap.error("--sizes needs at least one hidden layer (3 positive sizes), --batch >= 1")
    names = ["distbp", "numpy"]
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        names.append("torch")
    env = paired.worker_env(args.threads, pythonpath=REPO, same_malloc=not args.default_malloc)
    with paired.Workers((n, paired.Worker(n, sides.worker_argv(n, args.threads), env)) for n in names) as workers:
        rows = paired.run_cases([mlp_case(s, b) for s, b in configs], workers, "distbp", args)
    meta = {"threads": args.threads, "dtype": "float32", "sides": names}
    if args.json:
        paired.print_json(meta, rows)
        return
    paired.print_table(f"one training step, float32, {args.threads} thread(s) per side, each side in its own "
                       f"process; samples/s: median of {args.blocks} blocks", rows, names, "distbp")


if __name__ == "__main__":
    main()
