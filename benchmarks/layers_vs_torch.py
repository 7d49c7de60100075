"""Training-step speed of distbp's conv and recurrent models beside PyTorch CPU's for the same step,
each side in its own process.

    python benchmarks/layers_vs_torch.py [--threads 2] [--blocks 10] [--models cnn,gru]

Steps (float32, synthetic 28x28 one-channel images, batch 128, cross entropy, SGD lr 0.01), the
registry's models at their defaults:
  cnn: 2x (Conv2d 3x3 pad 1, ReLU, MaxPool2d 2) with 16 and 32 channels, Linear(1568, 64), ReLU, Linear(64, 10)
  gru: GRU(28, 64) reading the image row by row (28 steps), Linear(64, 10) on the last output
  lstm: the same with an LSTM
PyTorch runs the same architecture (benchmarks/torch_mirror.py) from distbp's weights; one step of
each is checked to give the same weights first. Needs torch in the running interpreter (torch==2.13.0:
`pip install -e '.[parity]'`). Reading the paired ratio: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules below
import paired
import sides

MODELS = ("cnn", "gru", "lstm")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="cnn,gru", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--batch", type=int, default=128)
    paired.add_timing_args(ap)
    args = ap.parse_args(argv)
    paired.check_timing_args(ap, args)
    models = args.models.split(",")
    if any(m not in MODELS for m in models) or args.batch < 1:
        ap.error(f"--models takes {', '.join(MODELS)}, got {args.models!r}; --batch must be >= 1")
    if importlib.util.find_spec("torch") is None:
        sys.exit("layers_vs_torch: torch is not importable here; install it with pip install -e '.[parity]'")
    cases = [{"label": m, "model": m, "input_shape": [1, 28, 28], "num_outputs": 10, "options": {},
              "batch": args.batch, "seed": 0} for m in models]
    names = ["distbp", "torch"]
    env = paired.worker_env(args.threads, pythonpath=REPO, same_malloc=not args.default_malloc)
    with paired.Workers((n, paired.Worker(n, sides.worker_argv(n, args.threads), env)) for n in names) as workers:
        rows = paired.run_cases(cases, workers, "distbp", args)
    if args.json:
        paired.print_json({"threads": args.threads, "dtype": "float32", "sides": names}, rows)
        return
    paired.print_table(f"one training step, float32, {args.threads} thread(s) per side, each side in its own "
                       f"process; samples/s: median of {args.blocks} blocks", rows, names, "distbp")


if __name__ == "__main__":
    main()
