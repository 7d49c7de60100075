"""python -m distbp.launch: a rank killed by DISTBP_FAULT is restarted from the newest checkpoint and the
run ends with the weights of an uninterrupted run, bitwise (run by the single-process pytest pass: each
test starts its own mpiexec job)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distbp import launch

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
needs_mpiexec = pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")
TRAIN = ["--dataset", "xor", "--steps", "12", "--checkpoint-every", "5", "--dtype", "float64", "--no-progress"]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", **extra)
    for var in ("PMI_RANK", "PMI_SIZE", "DISTBP_FAULT"):
        env.pop(var, None)
    env.update(extra)
    return env


def _launch(args, cwd=None, **env):
    return subprocess.run(["timeout", "240", sys.executable, "-m", "distbp.launch", *args], check=False,
                          capture_output=True, text=True, env=_env(**env), cwd=cwd)


def _final(directory) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(Path(directory) / "ckpt-00000012.safetensors"))


@needs_mpiexec
def test_killed_rank_restarts_from_the_newest_checkpoint_and_ends_bitwise_equal(tmp_path):
    plain = _launch(["--nproc", "2", "--", *TRAIN, "--checkpoint-dir", str(tmp_path / "plain")])
    assert plain.returncode == 0, plain.stderr
    hit = _launch(["--nproc", "2", "--max-restarts", "2", "--", *TRAIN, "--checkpoint-dir", str(tmp_path / "hit")],
                  DISTBP_FAULT="1:7")
    assert hit.returncode == 0, hit.stderr
    assert "DISTBP_FAULT kills rank 1 after step 7" in hit.stderr
    assert "restart 1 of 2 on 2 rank(s) from" in hit.stderr and "ckpt-00000005.safetensors (step 5)" in hit.stderr
    assert hit.stderr.count("DISTBP_FAULT kills") == 1       # fired once: the restart went past step 7
    assert "resumed from" in hit.stdout and "at step 5" in hit.stdout
    want, got = _final(tmp_path / "plain"), _final(tmp_path / "hit")
    assert want.keys() == got.keys() and len(want) > 4
    for key in want:
        assert want[key].tobytes() == got[key].tobytes(), key


@needs_mpiexec
def test_without_a_checkpoint_dir_restarts_continue_the_runs_own_folder(tmp_path):
    (tmp_path / "checkpoints" / "run-1").mkdir(parents=True)   # an earlier run's folder: this run takes run-2
    hit = _launch(["--nproc", "2", "--max-restarts", "1", "--", *TRAIN], cwd=tmp_path, DISTBP_FAULT="1:7")
    assert hit.returncode == 0, hit.stderr
    assert "from checkpoints/run-2/ckpt-00000005.safetensors (step 5)" in hit.stderr
    assert "checkpoint: checkpoints/run-2/ckpt-00000012.safetensors" in hit.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["run-1", "run-2"]


@needs_mpiexec
def test_without_restarts_a_killed_rank_ends_the_launch_with_its_status(tmp_path):
    out = _launch(["--nproc", "2", "--", *TRAIN, "--checkpoint-dir", str(tmp_path / "ck")], DISTBP_FAULT="0:3")
    assert out.returncode != 0
    assert "the job ended with exit status" in out.stderr and "restart" not in out.stderr


def test_a_bad_train_flag_is_one_line_before_any_rank_starts(tmp_path, capsys):
    assert launch.main(["--nproc", "2", "--", "--stepz", "3"]) == 2
    assert capsys.readouterr().err == "distbp.launch: error: unrecognized arguments: --stepz 3\n"
    assert launch.main(["--hostfile", str(tmp_path / "missing"), "--", "--steps", "3"]) == 2
    assert "distbp.launch: error: --hostfile" in capsys.readouterr().err


def test_a_malformed_fault_is_a_usage_error(tmp_path):
    env = _env(DISTBP_FAULT="seven")
    out = subprocess.run([sys.executable, "-m", "distbp.train", "--dataset", "xor", "--steps", "2", "--no-progress",
                          "--checkpoint-dir", str(tmp_path)], check=False, capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["distbp.train: error: DISTBP_FAULT='seven': expected RANK:STEP, e.g. 1:7"]


def test_restarts_drop_any_resume_flag_before_adding_their_own():
    assert launch.without_resume(["--resume", "--steps", "3"]) == ["--steps", "3"]
    assert launch.without_resume(["--resume", "ck/x.safetensors", "--lr", "1"]) == ["--lr", "1"]
    assert launch.without_resume(["--resume=ck/x", "--lr", "1", "--resume"]) == ["--lr", "1"]


def test_hostfile_names_and_the_hosts_that_answer(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("# two machines\nnode-a:2\nnode-b\n\n")
    assert launch.read_hostfile(str(hosts)) == ["node-a", "node-b"]
    probe = tmp_path / "probe"
    probe.write_text('#!/bin/sh\n[ "$1" = node-a ]\n')
    probe.chmod(0o755)
    assert launch.alive_hosts(["node-a", "node-b"], str(probe), timeout=30) == ["node-a"]
    assert launch._step_of("ck/ckpt-00000042.safetensors") == 42
