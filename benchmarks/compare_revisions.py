"""Training-step speed of two source trees of distbp, each in its own process, alternating blocks.

    git archive --prefix=old/ HEAD~5 | tar -x -C /tmp          # any earlier commit, as a tree
    python benchmarks/compare_revisions.py /tmp/old             # against this working tree
    python benchmarks/compare_revisions.py /tmp/old /tmp/new --blocks 20 --threads 1 --json

Steps (float32, synthetic data, cross entropy, SGD lr 0.01), built from the public API only
(distbp.tensor, nn layers, optim.SGD, F.cross_entropy, backward), which every revision has:
  mlp: Linear(784, 128), ReLU, Linear(128, 10); batch 128
  cnn: 2x (Conv2d 3x3 pad 1, ReLU, MaxPool2d 2) with 16 and 32 channels, Flatten, Linear(1568, 64), ReLU,
       Linear(64, 10) on 28x28 one-channel images; batch 128
  gru: GRU(28, 64) over 28 steps, Linear(64, 10) on h_n; batch 128
The new tree builds each model and its data; the old tree loads the same weights and data
(load_state_dict). One step of each must give the same weights before timing: a refactor that
changes the arithmetic is reported instead of timed. `new/old` is the paired speed ratio
(benchmarks/README.md): above 1, the new tree is faster.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules below
import paired
import sides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "mlp": {"input_shape": [784]},
    "cnn": {"input_shape": [1, 28, 28]},
    "gru": {"input_shape": [28, 28]},  # (steps, features), batch_first
}


def build_model(name: str):
    from distbp import nn
    if name == "mlp":
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    class GRUHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(28, 64, batch_first=True)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            _, h = self.gru(x)
            return self.fc(h[0])
    return GRUHead()


def build_step(case, x, y, lr, state):
    """The tree's step (paired.serve_steps' `build`)."""
    return sides.distbp_step(lambda case: build_model(case["model"]), case, x, y, lr, state)


def worker(tree: str) -> None:
    import distbp
    here = os.path.realpath(distbp.__file__)
    if not here.startswith(os.path.realpath(tree) + os.sep):
        sys.exit(f"compare_revisions: asked for the distbp of {tree}, imported {here}")
    paired.serve_steps(build_step)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", nargs="?", help="the source tree to compare against (its root holds distbp/)")
    ap.add_argument("new", nargs="?", default=REPO, help="the other source tree (default: this working tree)")
    ap.add_argument("--models", default="mlp,cnn,gru", help=f"comma-separated, of {', '.join(CASES)}")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    paired.add_timing_args(ap)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    paired.check_timing_args(ap, args)
    if args.old is None:
        ap.error("give the old source tree")
    models = args.models.split(",")
    if any(m not in CASES for m in models) or args.batch < 1:
        ap.error(f"--models takes {', '.join(CASES)}, got {args.models!r}; --batch must be >= 1")
    trees = {"new": os.path.abspath(args.new), "old": os.path.abspath(args.old)}
    for tree in trees.values():
        if not os.path.isfile(os.path.join(tree, "distbp", "__init__.py")):
            ap.error(f"{tree} holds no distbp/__init__.py")
    cases = [{"label": m, "model": m, "num_outputs": 10, "batch": args.batch, "seed": 0, **CASES[m]}
             for m in models]
    with paired.Workers(
            (side, paired.Worker(side, [sys.executable, os.path.abspath(__file__), "--worker", tree],
                                 paired.worker_env(args.threads, pythonpath=tree,
                                                   same_malloc=not args.default_malloc)))
            for side, tree in trees.items()) as workers:
        rows = paired.run_cases(cases, workers, "new", args)
    if args.json:
        paired.print_json({"threads": args.threads, "dtype": "float32", "trees": trees}, rows)
        return
    paired.print_table(f"new {trees['new']}\nold {trees['old']}\none training step, float32, {args.threads} "
                       f"thread(s) per tree, each in its own process; samples/s: median of {args.blocks} blocks",
                       rows, ["new", "old"], "new")


if __name__ == "__main__":
    main()
