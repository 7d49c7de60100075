"""`python -m distbp.train --trace DIR`: every rank writes a Chrome trace of its steps (valid JSON, pid =
rank, the step's phases and the bucket allreduces, timestamps in order), rank 0 a merged one, and
`python -m distbp.plot --trace DIR` reads them. The 2-rank job is launched by the single-process pass."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distbp import plot, train
from distbp.distributed import trace

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
PHASES = {"step", "data", "forward", "backward", "optimizer", "comm wait", "allreduce bucket 0", "checkpoint",
          "evaluate", "load dataset"}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A 2-rank run of 2 epochs of 6 steps (digits, batch 256) with a checkpoint every 4 steps."""
    if not MPIEXEC.exists():
        pytest.skip("mpiexec not installed next to python")
    tmp = tmp_path_factory.mktemp("traced")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    env.pop("DISTBP_NO_MPI", None)
    proc = subprocess.run(["timeout", "300", str(MPIEXEC), "-n", "2", sys.executable, "-m", "distbp.train",
                           "--no-progress", "--epochs", "2", "--batch-size", "256", "--checkpoint-every", "4",
                           "--checkpoint-dir", str(tmp / "ck"), "--trace", str(tmp / "tr")],
                          check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"trace: {tmp / 'tr' / 'trace-rank0.json'} {tmp / 'tr' / 'trace.json'}" in proc.stdout
    return tmp / "tr"


def _events(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data["traceEvents"]


def _within(inner, outer) -> bool:
    return outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"] + 1e-3


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_writes_its_phases_in_time_order(traced, rank):
    events = _events(traced / f"trace-rank{rank}.json")
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["pid"] for e in events} == {rank}
    assert {e["name"] for e in spans} == PHASES
    counts = {name: sum(e["name"] == name for e in spans) for name in PHASES}
    assert counts["step"] == counts["forward"] == counts["backward"] == counts["optimizer"] == 10   # 2 x 5 steps
    assert counts["allreduce bucket 0"] == counts["comm wait"] == 10 and counts["checkpoint"] == 3   # 4, 8, 10
    stamps = [e["ts"] for e in spans]
    assert stamps == sorted(stamps) and all(e["dur"] >= 0 for e in spans)
    for step in (e for e in spans if e["name"] == "step"):   # each phase inside its step
        inside = [e for e in spans if e.get("args", {}).get("step") == step["args"]["step"]
                  and e["name"] in ("data", "forward", "backward", "optimizer")]
        assert sorted(e["name"] for e in inside) == ["backward", "data", "forward", "optimizer"]
        assert all(_within(e, step) for e in inside)
    for wait in (e for e in spans if e["name"] == "comm wait"):   # the end of a backward (DDP iteration 1, 2, ...)
        assert sum(_within(wait, e) for e in spans if e["name"] == "backward") == 1
    bucket = [e for e in spans if e["name"] == "allreduce bucket 0"]
    assert all(e["tid"] == 1 and e["args"]["bytes"] > 0 for e in bucket)


def test_rank_zero_merges_every_rank(traced):
    events = _events(traced / "trace.json")
    assert {e["pid"] for e in events} == {0, 1}
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"rank 0", "rank 1"}


def test_plot_reads_the_trace(traced, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "timeline.png"
    assert plot.main(["--trace", str(traced), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    text = capsys.readouterr().out
    assert "rank 0: 10 steps" in text and "rank 1: 10 steps" in text and "% of step time" in text


def test_deterministic_run_traces_its_groups_and_tree_sum(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train.main(["--no-progress", "--steps", "2", "--batch-size", "40", "--deterministic", "--deterministic-groups",
                "4", "--trace", "tr"])
    spans = [e for e in _events(tmp_path / "tr" / "trace.json") if e["ph"] == "X"]
    assert sum(e["name"] == "tree sum" for e in spans) == 2
    assert sorted(e["args"]["group"] for e in spans if e["name"] == "backward") == [0, 0, 1, 1, 2, 2, 3, 3]


def test_pipeline_stages_trace_their_schedule_actions(tmp_path):
    if not MPIEXEC.exists():
        pytest.skip("mpiexec not installed next to python")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    env.pop("DISTBP_NO_MPI", None)
    proc = subprocess.run(["timeout", "300", str(MPIEXEC), "-n", "2", sys.executable, "-m", "distbp.train",
                           "--no-progress", "--steps", "2", "--pipeline-stages", "2", "--micro-batches", "3",
                           "--hidden", "16,16", "--checkpoint-dir", str(tmp_path / "ck"), "--trace", str(tmp_path / "tr")],
                          check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    for stage, moves in ((0, {"send_forward", "recv_backward"}), (1, {"recv_forward", "send_backward"})):
        spans = [e for e in _events(tmp_path / "tr" / f"trace-rank{stage}.json") if e["ph"] == "X"]
        assert sum(e["name"] == "pipeline schedule" for e in spans) == 2
        for op in ("forward", "backward", *moves):
            assert sorted(e["args"]["micro_batch"] for e in spans if e["name"] == op) == [0, 0, 1, 1, 2, 2], op


def test_tracing_off_records_nothing():
    assert not trace.enabled()
    assert trace.span("forward") is trace.span("backward")   # one shared no-op
    trace.complete("allreduce bucket 0", 0.0, 1.0)
    assert trace.save("unused") == []


def test_an_unwritable_trace_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert train.main(["--no-progress", "--steps", "1", "--trace", str(tmp_path / "file" / "tr"),
                       "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"distbp.train: error: --trace {tmp_path / 'file' / 'tr'}: cannot")
    assert not (tmp_path / "ck").exists()
