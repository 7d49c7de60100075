"""`python -m distbp.train --zero 1` (ZeRO stage 1: the optimizer state sharded over the ranks) against
the same run without it: bitwise the same weights and the same (consolidated) optimizer state, and
checkpoints that any run resumes from, with or without --zero. Each test launches its own mpiexec
jobs (run by the single-process pytest pass)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from distbp.training import checkpoint

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")

# digits: 1258 training samples, global batch 50: 26 steps an epoch, the last batch of 8 samples
ARGS = ["--no-progress", "--epochs", "1", "--batch-size", "50", "--dtype", "float64", "--hidden", "32"]
OPTIMIZERS = {"sgd-momentum": ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "1e-3"],
              "adam": ["--optimizer", "adam", "--lr", "0.003"]}


def _train(n, *args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    env.pop("DISTBP_NO_MPI", None)
    proc = subprocess.run(["timeout", "120", str(MPIEXEC), "-n", str(n), sys.executable, "-m", "distbp.train",
                           *args], check=False, capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _final(directory):
    return load_file(str(checkpoint.latest(directory)))


def _assert_bitwise(dir_a, dir_b, optimizer_state=True):
    a, b = _final(dir_a), _final(dir_b)
    keys = [k for k in a if optimizer_state or k.startswith("model/")]
    assert keys and set(keys) <= set(b)
    if optimizer_state:
        assert a.keys() == b.keys()
    for k in keys:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("ranks", [2, 3, 4])
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_zero_gives_bitwise_the_weights_and_optimizer_state_of_plain_data_parallelism(tmp_path, ranks, opt):
    args = [*ARGS, *OPTIMIZERS[opt]]
    _train(ranks, *args, "--checkpoint-dir", str(tmp_path / "plain"))
    out = _train(ranks, *args, "--zero", "1", "--checkpoint-dir", str(tmp_path / "zero")).stdout
    assert "optimizer state sharded" in out
    _assert_bitwise(tmp_path / "plain", tmp_path / "zero")   # the checkpoint holds the consolidated state
    ck = checkpoint.load(checkpoint.latest(tmp_path / "zero"))
    assert ck.meta["step"] == 26 and ck.meta["config"]["zero"] == 1


def test_resume_chains_plain_zero_plain_bitwise_on_three_ranks(tmp_path):
    args = [*ARGS, *OPTIMIZERS["adam"]]
    _train(3, *args, "--checkpoint-dir", str(tmp_path / "unbroken"))
    chain = ["--checkpoint-dir", str(tmp_path / "chain")]
    _train(3, *args, *chain, "--steps", "9")
    _train(3, *args, *chain, "--steps", "18", "--zero", "1", "--resume")
    _train(3, *args, *chain, "--resume", "--steps", "0")
    _assert_bitwise(tmp_path / "unbroken", tmp_path / "chain")


def test_a_zero_checkpoint_resumes_on_other_world_sizes_with_or_without_zero(tmp_path):
    # 2 ranks plain -> 4 ranks --zero 1 -> 1 rank plain: the same run as 1 rank throughout, up to the
    # rounding of sums over other numbers of ranks
    args = [*ARGS, *OPTIMIZERS["sgd-momentum"]]
    _train(1, *args, "--checkpoint-dir", str(tmp_path / "one"))
    chain = ["--checkpoint-dir", str(tmp_path / "chain")]
    _train(2, *args, *chain, "--steps", "9")
    _train(4, *args, *chain, "--steps", "18", "--zero", "1", "--resume")
    assert checkpoint.load(checkpoint.latest(tmp_path / "chain")).meta["world_size"] == 4
    _train(1, *args, *chain, "--resume", "--zero", "1", "--steps", "0")   # ZeRO on one rank: the plain optimizer's steps
    a, b = _final(tmp_path / "one"), _final(tmp_path / "chain")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-10, err_msg=k)


def test_a_diverging_loss_under_zero_stops_every_rank_at_the_plain_runs_step(tmp_path):
    args = ["--no-progress", "--lr", "1e6", "--checkpoint-every", "2"]
    steps = []
    for extra, where in (([], "plain"), (["--zero", "1"], "zero")):
        proc = _train(3, *args, *extra, "--checkpoint-dir", str(tmp_path / where), check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "at step" in lines[0], proc.stderr
        steps.append(lines[0].split("at step ")[1].split()[0])
    assert steps[0] == steps[1]
    _assert_bitwise(tmp_path / "plain", tmp_path / "zero")   # the last checkpoints before it


def _bench(n, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    proc = subprocess.run(["timeout", "120", str(MPIEXEC), "-n", str(n), sys.executable, "-m", "distbp.bench",
                           "--sizes", "16,8,4", "--batch-per-rank", "4", "--steps", "2", "--warmup", "1",
                           "--optimizer", "adam", "--json", *args], check=False, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bench_reports_per_rank_bytes_and_zero_shards_the_optimizer_state():
    plain, zero = _bench(3), _bench(3, "--zero", "1")
    params = (16 * 8 + 8 + 8 * 4 + 4) * 4   # float32
    for out in (plain, zero):
        assert out["param_bytes"] == out["grad_bytes"] == [params] * 3
    assert plain["optimizer_state_bytes"] == [2 * params] * 3 and plain["comm_buffer_bytes"] == [0] * 3
    assert zero["zero"] == 1 and zero["optimizer_step_ms"] > 0 and "comm_wait_ms" not in zero
    # Adam's two moments over this rank's slice: 172 elements in balanced slices (57, 57 and 58)
    assert sorted(zero["optimizer_state_bytes"]) == [2 * 4 * k for k in (57, 57, 58)]
