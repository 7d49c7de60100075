"""Reading a `--trace DIR` of distbp.train: where each rank's step time goes, as a table and a picture.

`python -m distbp.plot --trace DIR` prints the table (no matplotlib needed) and draws the last few
steps of every rank, one row for the step's phases and one for its communication (needs matplotlib)."""
from __future__ import annotations

import glob
import json
import os
from collections import defaultdict

COLOURS = {"step": "#eeeeee", "data": "#c7e9c0", "forward": "#9ecae1", "backward": "#fdae6b", "optimizer": "#bcbddc",
           "comm wait": "#fb6a4a", "tree sum": "#fb6a4a", "checkpoint": "#969696", "evaluate": "#fdd0a2",
           "load dataset": "#d9d9d9", "pipeline schedule": "#9ecae1"}
COMM_COLOUR = "#74c476"
OUTSIDE_STEPS = ("step", "checkpoint", "evaluate", "load dataset")   # not a part of the step's time


class TraceError(Exception):
    """A user-facing problem; str(e) is the one line printed."""


def read_trace(directory: str) -> list[dict]:
    """The complete ("X") events of DIR/trace.json, or of DIR/trace-rank*.json when no merged file exists."""
    merged = os.path.join(directory, "trace.json")
    paths = [merged] if os.path.isfile(merged) else sorted(glob.glob(os.path.join(directory, "trace-rank*.json")))
    if not paths:
        raise TraceError(f"no trace.json or trace-rank*.json in {directory} (train with --trace {directory} first)")
    events = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            events += [e for e in data["traceEvents"] if e.get("ph") == "X"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TraceError(f"{path} is not a Chrome trace file ({e})") from None
    if not events:
        raise TraceError(f"the trace in {directory} holds no events")
    return events


def summary(events: list[dict]) -> dict:
    """{rank: {name: (count, total ms)}}."""
    table: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    for e in events:
        cell = table[e["pid"]][e["name"]]
        cell[0] += 1
        cell[1] += e["dur"] / 1000
    return {rank: {name: tuple(v) for name, v in names.items()} for rank, names in sorted(table.items())}


def format_summary(events: list[dict]) -> str:
    """Per rank, each event name's count, total and mean time, and its share of the summed step time."""
    lines = []
    for rank, names in summary(events).items():
        steps = names.get("step", (0, 0.0))[1]
        lines.append(f"rank {rank}: {names.get('step', (0,))[0]} steps, {steps:.1f} ms in steps")
        for name, (count, total) in sorted(names.items(), key=lambda kv: -kv[1][1]):
            share = f"{100 * total / steps:5.1f}% of step time" if steps and name not in OUTSIDE_STEPS else ""
            lines.append(f"  {name:<22} {count:>6} x {total / count:9.3f} ms = {total:10.1f} ms  {share}")
    return "\n".join(lines)


def window(events: list[dict], last_steps: int) -> tuple[float, float]:
    """(start, end) in microseconds: the last `last_steps` steps of the first rank (0: everything)."""
    first = min(e["pid"] for e in events)
    starts = sorted(e["ts"] for e in events if e["name"] == "step" and e["pid"] == first)
    end = max(e["ts"] + e["dur"] for e in events)
    if last_steps <= 0 or not starts:
        return min(e["ts"] for e in events), end
    lo = starts[-min(last_steps, len(starts))]
    step_ends = [e["ts"] + e["dur"] for e in events if e["name"] == "step" and e["ts"] >= lo]
    return lo, max(step_ends)


def draw(events: list[dict], out: str, plt, last_steps: int = 3) -> str:
    """One row per rank for the step's phases (nested ones on top) and one for communication."""
    lo, hi = window(events, last_steps)
    shown = [e for e in events if e["ts"] + e["dur"] >= lo and e["ts"] <= hi]
    ranks = sorted({e["pid"] for e in events})
    fig, ax = plt.subplots(figsize=(11, 0.6 + 0.8 * len(ranks)))
    for e in sorted(shown, key=lambda e: -e["dur"]):   # longer first, so nested phases land on top
        row = ranks.index(e["pid"]) * 2 + (0.9 if e.get("tid") == 1 else 0)
        height = 0.7 if e["name"] != "step" else 0.8
        colour = COMM_COLOUR if e.get("tid") == 1 else COLOURS.get(e["name"], "#cccccc")
        ax.broken_barh([((e["ts"] - lo) / 1000, e["dur"] / 1000)], (row - height / 2, height),
                       facecolors=colour, edgecolors="black", linewidth=0.3)
    ticks = [r * 2 + k for r in range(len(ranks)) for k in (0, 0.9)]
    ax.set_yticks(ticks, [f"rank {rank} {what}" for rank in ranks for what in ("step", "comm")], fontsize=8)
    ax.set_ylim(len(ranks) * 2 - 0.5, -0.6)
    ax.set_xlabel("ms", fontsize=8)
    names = [n for n in COLOURS if any(e["name"] == n for e in shown)]
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=COLOURS[n]) for n in names]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor=COMM_COLOUR))
    ax.legend(handles, [*names, "allreduce bucket"], fontsize=7, ncol=min(len(handles), 6), loc="upper center",
              bbox_to_anchor=(0.5, -0.25 if len(ranks) < 3 else -0.12))
    title = f"last {last_steps} step(s)" if last_steps > 0 else "whole run"
    ax.set_title(f"distbp timeline, {title}, {len(ranks)} rank(s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
