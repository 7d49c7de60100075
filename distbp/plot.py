"""`python -m distbp.plot RUN_DIR`: loss and accuracy curves of a run's metrics.jsonl as a PNG.
`python -m distbp.plot --schedule gpipe,1f1b --stages 4 --micro-batches 8 --out FILE.png`: the
simulated timelines of pipeline schedules, drawn from the action lists the stages run.
`python -m distbp.plot --trace DIR`: where each rank's step time went in a `distbp.train --trace DIR`
run, as a table and the last steps' timeline (distbp/trace_view.py).

matplotlib is an optional extra (`pip install 'distbp[plot]'`); without it the command says so in one line."""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import trace_view
from .distributed.pipeline.schedule import build_schedules, peak_in_flight, simulate_schedules

_TITLES = {"gpipe": "GPipe", "1f1b": "1F1B"}

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


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("matplotlib is not installed; pip install 'distbp[plot]'") from None
    return plt


def plot(run_dir: str, out: str | None = None) -> str:
    """Write the figure (default RUN_DIR/curves.png) and return its path."""
    series = read_metrics(run_dir)
    plt = _pyplot()
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


def plot_schedules(out: str, schedules=("gpipe", "1f1b"), num_stages: int = 4, num_micro_batches: int = 8,
                   forward_time: float = 1.0, backward_time: float = 2.0) -> str:
    """Draw each named schedule's simulated timeline (`simulate_schedules` of the real action lists,
    so the picture is what the stages run): one panel per schedule, one row per stage, forward and
    backward boxes labelled by micro-batch. Writes `out` and returns it."""
    try:
        timelines = [simulate_schedules(build_schedules(name, num_stages, num_micro_batches),
                                        forward_time, backward_time) for name in schedules]
    except ValueError as e:
        raise PlotError(str(e)) from None
    plt = _pyplot()
    colours = {"forward": "#9ecae1", "backward": "#fdae6b", "weight": "#a1d99b"}  # weight: split schedules
    makespan = max(t.makespan for t in timelines)
    fig, axes = plt.subplots(len(timelines), 1, figsize=(9, 0.5 + 0.42 * num_stages * len(timelines)),
                             sharex=True, squeeze=False)
    for ax, name, timeline in zip(axes[:, 0], schedules, timelines):
        for stage, spans in enumerate(timeline.stages):
            for span in spans:
                ax.broken_barh([(span.start, span.end - span.start)], (stage - 0.4, 0.8),
                               facecolors=colours[span.op], edgecolors="black", linewidth=0.5)
                ax.text((span.start + span.end) / 2, stage, str(span.micro_batch), ha="center", va="center",
                        fontsize=7)
        held = [peak_in_flight(s) for s in build_schedules(name, num_stages, num_micro_batches)]
        ax.set_title(f"{_TITLES.get(name, name)}: bubble {timeline.bubble_fraction():.0%}, micro-batches held "
                     f"per stage {held}", fontsize=9)
        ax.set_yticks(range(num_stages), [f"stage {s}" for s in range(num_stages)], fontsize=8)
        ax.set_ylim(num_stages - 0.5, -0.5)  # stage 0 on top
        ax.set_xlim(0, makespan)
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel(f"time (forward = {forward_time:g}, backward = {backward_time:g}; "
                           "blue forward, orange backward, green weight gradients, number = micro-batch)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distbp.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a --log-dir of python -m distbp.train")
    parser.add_argument("--out", metavar="FILE.png", help="where to write the figure (default RUN_DIR/curves.png, "
                        "or pipeline_schedules.png with --schedule)")
    parser.add_argument("--schedule", metavar="NAME[,NAME]", help="draw pipeline schedules instead, e.g. gpipe,1f1b")
    parser.add_argument("--stages", type=int, default=4, help="pipeline stages (with --schedule)")
    parser.add_argument("--micro-batches", type=int, default=8, help="micro-batches per step (with --schedule)")
    parser.add_argument("--trace", metavar="DIR", help="a --trace DIR of distbp.train: print where each rank's time "
                        "went and draw its timeline (default DIR/timeline.png)")
    parser.add_argument("--last-steps", type=int, default=3, help="steps drawn with --trace (0: the whole run)")
    args = parser.parse_args(argv)
    if [args.run_dir, args.schedule, args.trace].count(None) != 2:
        parser.error("give one of RUN_DIR, --schedule or --trace")
    try:
        if args.trace:
            return _plot_trace(args.trace, args.out, args.last_steps)
        if args.schedule:
            print(plot_schedules(args.out or "pipeline_schedules.png", args.schedule.split(","), args.stages,
                                 args.micro_batches))
        else:
            print(plot(args.run_dir, args.out))
        return 0
    except (PlotError, trace_view.TraceError) as e:
        print(f"distbp.plot: error: {e}", file=sys.stderr)
        return 2


def _plot_trace(directory: str, out: str | None, last_steps: int) -> int:
    events = trace_view.read_trace(directory)
    print(trace_view.format_summary(events), flush=True)
    print(trace_view.draw(events, out or os.path.join(directory, "timeline.png"), _pyplot(), last_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
