"""`python -m distbp.plot RUN_DIR`: loss and accuracy curves of a run's metrics.jsonl as a PNG.

matplotlib is an optional extra (`pip install 'distbp[plot]'`); without it the command says so in one line."""
from __future__ import annotations

import argparse
import json
import os
import sys


class PlotError(Exception):
    """A user-facing problem; str(e) is the one line printed."""


def read_metrics(run_dir: str) -> dict:
    """{'train': [...], 'val': [...], 'test': [...]} records from RUN_DIR/metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise PlotError(f"no metrics.jsonl in {run_dir} (train with --log-dir {run_dir} first)")
    series = {"train": [], "val": [], "test": []}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise PlotError(f"{path} line {number} is not valid JSON") from None
            series.setdefault(record.get("split", "train"), []).append(record)
    if not series["train"]:
        raise PlotError(f"{path} has no training records")
    return series


def plot(run_dir: str, out: str | None = None) -> str:
    """Write the figure (default RUN_DIR/curves.png) and return its path."""
    series = read_metrics(run_dir)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("matplotlib is not installed; pip install 'distbp[plot]'") from None
    train, val = series["train"], series["val"]
    metric = "accuracy" if any("accuracy" in r for r in val) else "r2"
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", linewidth=0.8)
    if val:
        ax_loss.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation")
        ax_metric.plot([r["step"] for r in val], [r.get(metric) for r in val], "o-", label="validation")
    ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
    ax_metric.set(xlabel="step", ylabel=metric, title=metric)
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = out or os.path.join(run_dir, "curves.png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distbp.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a --log-dir of python -m distbp.train")
    parser.add_argument("--out", metavar="FILE.png", help="where to write the figure (default RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    try:
        print(plot(args.run_dir, args.out))
        return 0
    except PlotError as e:
        print(f"distbp.plot: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
