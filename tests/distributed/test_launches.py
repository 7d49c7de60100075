"""Commands that launch their own mpiexec job (run by the single-process pytest pass)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")


def test_bench_scaling_times_rank0_alone_every_rank_alone_and_all_ranks_in_turn():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    proc = subprocess.run(["timeout", "120", str(MPIEXEC), "-n", "2", sys.executable, "-m", "distbp.bench",
                           "--sizes", "16,8,4", "--batch-per-rank", "4", "--steps", "2", "--warmup", "1",
                           "--scaling", "3", "--json"], check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["world_size"] == 2 and out["blocks"] == 3 and out["steps_per_block"] == 2
    for stat in ("best", "median"):
        solo, alone, full = (out[f"{kind}step_ms_{stat}"] for kind in ("solo_", "alone_", ""))
        assert out[f"weak_scaling_{stat}"] == pytest.approx(solo / full)
        assert out[f"machine_scaling_{stat}"] == pytest.approx(solo / alone)
        assert out[f"ddp_vs_alone_{stat}"] == pytest.approx(alone / full)
    for kind in ("solo_", "alone_", ""):
        assert 0 < out[f"{kind}step_ms_best"] <= out[f"{kind}step_ms_median"]


def test_doctor_under_mpiexec_checks_collectives_between_ranks():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PMI_RANK", None)
    proc = subprocess.run(["timeout", "120", str(MPIEXEC), "-n", "2", sys.executable, "-m", "distbp.doctor",
                           "--json"], check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["world_size"] == 2 and report["ranks"][0]["pid"] != report["ranks"][1]["pid"]
    assert report["bucket_path"] == "shared memory" and report["allreduce_16mb_ms"] > 0
    assert [line[:4] for line in report["checks"][:3]] == ["OK  "] * 3


LAUNCH = ROOT / "launch" / "hostfile.sh"


def _hostfile_run(tmp_path, **env_extra):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("localhost:2\n")
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT), **env_extra)
    env.pop("PMI_RANK", None)
    return subprocess.run(["timeout", "120", "bash", str(LAUNCH), str(hosts), "-ppn", "2", "--dataset", "xor",
                           "--epochs", "1", "--no-progress", "--checkpoint-dir", str(tmp_path / "ck")],
                          check=False, capture_output=True, text=True, env=env, cwd=tmp_path)


def test_hostfile_launch_checks_every_rank_with_the_doctor_then_trains(tmp_path):
    proc = _hostfile_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 rank(s)" in proc.stdout and "test accuracy" in proc.stdout


def test_hostfile_launch_stops_before_training_when_the_preflight_fails(tmp_path):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\necho 'cannot reach host' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = _hostfile_run(tmp_path, MPIEXEC=str(fake))
    assert proc.returncode == 1
    assert "cannot reach host" in proc.stderr and "distbp.doctor found a problem" in proc.stderr
    assert not (tmp_path / "ck").exists()


def test_equivalence_command_with_dropout_matches_one_process_on_three_ranks():
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    proc = subprocess.run(["timeout", "120", str(MPIEXEC), "-n", "3", sys.executable, "-m", "distbp.equivalence",
                           "--model", "mlp", "--dropout", "0.3", "--accumulate", "2", "--steps", "8"],
                          check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mlp (dropout 0.3): 3 ranks vs 1 process after 8 steps") and "(OK," in proc.stdout


def test_equivalence_command_refuses_dropout_for_a_model_without_it(capsys):
    from distbp import equivalence
    with pytest.raises(SystemExit) as e:
        equivalence.main(["--model", "cnn", "--dropout", "0.3"])
    assert e.value.code == 2 and "model 'cnn' has no dropout" in capsys.readouterr().err
