"""The timeline recorder (distbp/distributed/trace.py) in one process: events, files, the cap."""
import json
import time

from distbp.distributed import SelfComm, trace


def test_spans_nest_and_files_hold_them_in_time_order(tmp_path):
    trace.start(0)
    try:
        with trace.span("step", step=0):
            with trace.span("forward", step=0):
                time.sleep(0.001)
            t0 = time.perf_counter()
            trace.complete("allreduce bucket 0", t0, t0 + 0.002, bytes=8)
    finally:
        paths = trace.save(str(tmp_path), SelfComm())
    assert paths == [str(tmp_path / "trace-rank0.json"), str(tmp_path / "trace.json")]
    data = json.loads((tmp_path / "trace-rank0.json").read_text())
    spans = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert [e["name"] for e in spans] == ["step", "forward", "allreduce bucket 0"]
    step, forward, bucket = spans
    assert step["ts"] <= forward["ts"] and forward["ts"] + forward["dur"] <= step["ts"] + step["dur"]
    assert forward["dur"] >= 1000 and bucket["dur"] == 2000 and bucket["tid"] == trace.COMM_TID
    assert bucket["args"] == {"bytes": 8} and forward["args"] == {"step": 0}
    assert json.loads((tmp_path / "trace.json").read_text())["traceEvents"] == data["traceEvents"]
    assert not trace.enabled()


def test_events_beyond_the_cap_are_counted_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(trace, "MAX_EVENTS", 3)
    trace.start(2)
    for _ in range(5):
        with trace.span("data"):
            pass
    trace.save(str(tmp_path), merge=False)
    data = json.loads((tmp_path / "trace-rank2.json").read_text())
    assert sum(e["ph"] == "X" for e in data["traceEvents"]) == 3
    assert data["otherData"]["dropped_events"] == 2
    assert {e["pid"] for e in data["traceEvents"]} == {2}
