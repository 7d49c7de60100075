"""Per-rank timelines in Chrome's trace format (chrome://tracing, https://ui.perfetto.dev).

Off by default, and then each instrumented place costs one check of a module global: spans are
recorded at the step and bucket level (forward, backward, each bucket's allreduce, the wait for the
buckets, optimizer, data, checkpoint), never per autograd node.

    trace.start(comm.rank)                       # distbp.train --trace DIR does this
    with trace.span("forward", step=3): ...      # a complete event ("ph": "X") on this rank's row
    trace.complete("allreduce bucket 0", t0, t1, tid=COMM_TID)   # from perf_counter() times
    trace.save(DIR, comm)                        # collective: trace-rank<r>.json each, trace.json merged

Times are taken with `time.perf_counter()` and written as microseconds of wall-clock time (the
wall clock read once at `start`), so the ranks of one machine line up; across machines, as well as
their clocks agree. In a file, pid = rank; tid 0 holds the step's phases (nested: the wait for the
buckets lies inside backward), tid 1 the communication that overlaps them (bucket allreduces).
"""
from __future__ import annotations

import contextlib
import json
import os
import time

COMPUTE_TID, COMM_TID = 0, 1
MAX_EVENTS = 1_000_000   # per rank; beyond it events are counted, not kept (a long run stays bounded)

_tracer = None
_OFF = contextlib.nullcontext()


class Tracer:
    """The events of one rank."""

    def __init__(self, rank: int):
        self.rank = rank
        self.events: list[dict] = []
        self.dropped = 0
        self._perf0, self._wall0_us = time.perf_counter(), time.time() * 1e6

    def us(self, t: float) -> float:
        """A perf_counter() time as wall-clock microseconds."""
        return self._wall0_us + (t - self._perf0) * 1e6

    def complete(self, name: str, start: float, end: float, cat: str, tid: int, args: dict) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return
        # whole microseconds (a float of today's wall clock in us resolves only 0.25 us anyway), both
        # ends rounded alike, so an event inside another stays inside
        ts = round(self.us(start))
        event = {"name": name, "cat": cat, "ph": "X", "ts": ts, "dur": max(round(self.us(end)) - ts, 0),
                 "pid": self.rank, "tid": tid}
        if args:
            event["args"] = args
        self.events.append(event)

    def chrome_events(self) -> list[dict]:
        """This rank's events in time order, after the metadata that names its rows."""
        meta = [{"name": "process_name", "ph": "M", "pid": self.rank, "tid": 0, "args": {"name": f"rank {self.rank}"}},
                {"name": "process_sort_index", "ph": "M", "pid": self.rank, "tid": 0,
                 "args": {"sort_index": self.rank}},
                {"name": "thread_name", "ph": "M", "pid": self.rank, "tid": COMPUTE_TID, "args": {"name": "step"}},
                {"name": "thread_name", "ph": "M", "pid": self.rank, "tid": COMM_TID,
                 "args": {"name": "communication"}}]
        return meta + sorted(self.events, key=lambda e: (e["ts"], -e["dur"]))


class _Span:
    __slots__ = ("args", "cat", "name", "t0", "tid")

    def __init__(self, name, cat, tid, args):
        self.name, self.cat, self.tid, self.args = name, cat, tid, args

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if _tracer is not None:
            _tracer.complete(self.name, self.t0, time.perf_counter(), self.cat, self.tid, self.args)
        return False


def start(rank: int) -> Tracer:
    """Start recording this process's timeline (replacing any earlier one)."""
    global _tracer
    _tracer = Tracer(rank)
    return _tracer


def stop() -> Tracer | None:
    """Stop recording; returns the tracer (None if none ran)."""
    global _tracer
    tracer, _tracer = _tracer, None
    return tracer


def enabled() -> bool:
    return _tracer is not None


def span(name: str, cat: str = "step", tid: int = COMPUTE_TID, **args):
    """A context manager that records its block as one event; a shared no-op when tracing is off."""
    if _tracer is None:
        return _OFF
    return _Span(name, cat, tid, args)


def complete(name: str, start_s: float, end_s: float, cat: str = "comm", tid: int = COMM_TID, **args) -> None:
    """Record an event from two perf_counter() times (for spans that do not nest in a block)."""
    if _tracer is not None:
        _tracer.complete(name, start_s, end_s, cat, tid, args)


def _write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, separators=(",", ":"))
    os.replace(tmp, path)   # a reader never sees half a file


def save(directory: str, comm=None, merge: bool = True) -> list[str]:
    """Stop recording and write `directory/trace-rank<r>.json` on every rank; with `merge` (a
    collective) rank 0 also writes `directory/trace.json` holding every rank. Returns the paths written."""
    tracer = stop()
    if tracer is None:
        return []
    os.makedirs(directory, exist_ok=True)
    mine = tracer.chrome_events()
    other = {"rank": tracer.rank, "dropped_events": tracer.dropped}
    paths = [os.path.join(directory, f"trace-rank{tracer.rank}.json")]
    _write_json(paths[0], {"traceEvents": mine, "displayTimeUnit": "ms", "otherData": other})
    if merge and comm is not None:
        everyone = comm.allgather_obj(mine) if comm.size > 1 else [mine]
        if comm.rank == 0:
            paths.append(os.path.join(directory, "trace.json"))
            _write_json(paths[-1], {"traceEvents": [e for events in everyone for e in events],
                                    "displayTimeUnit": "ms", "otherData": {"ranks": comm.size}})
    return paths


def check_directory(directory: str) -> None:
    """Create `directory` and check it can be written now, before any training (OSError otherwise)."""
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".probe{os.getpid()}")
    with open(probe, "w", encoding="utf-8"):
        pass
    os.remove(probe)
