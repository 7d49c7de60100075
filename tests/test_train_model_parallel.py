"""python -m distbp.train on grids that combine tensor parallelism, pipeline stages and ZeRO-1 (float64):
the cnn's tensor-parallel head and the mlp on 2 stages x 2 tensor ranks equal one process to 1e-10;
--zero 1 on a pipeline or tensor-parallel grid gives bitwise the weights and optimizer state of the
same grid without it (also on 2 stages x 2 tensor ranks x 2 replicas); a run resumes across all these grids and one process and ends as the unbroken
run; a diverging loss stops every rank at one process's step with one line. Each test launches its
own mpiexec jobs (run by the single-process pytest pass)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from distbp.train import main
from distbp.training import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
pytestmark = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="no mpiexec beside this python")

# digits: 1258 training samples, global batch 50: 26 steps an epoch, the last batch of 8 samples
BASE = ["--no-progress", "--epochs", "1", "--batch-size", "50", "--dtype", "float64"]
MLP = [*BASE, "--hidden", "24,16", "--dropout", "0.3", "--optimizer", "adam", "--lr", "0.003"]
CNN = [*BASE, "--model", "cnn", "--hidden", "24", "--steps", "20", "--optimizer", "sgd", "--momentum", "0.9"]


def _mpi_train(n, *args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    env.pop("DISTBP_NO_MPI", None)
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "distbp.train", *args], check=False,
                          capture_output=True, text=True, env=env, timeout=180)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _one_process(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT, DISTBP_NO_MPI="1")
    return subprocess.run([sys.executable, "-m", "distbp.train", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=180, check=False)


def _final(directory):
    return load_file(str(checkpoint.latest(directory)))


def _assert_close(dir_a, dir_b):
    """Weights and optimizer state (every tensor of the file) equal to 1e-10."""
    a, b = _final(dir_a), _final(dir_b)
    assert a.keys() == b.keys() and any(k.startswith("optim") for k in a), sorted(a)
    for k, value in a.items():
        np.testing.assert_allclose(value, b[k], rtol=0, atol=1e-10, err_msg=k)


def _assert_bitwise(dir_a, dir_b):
    a, b = _final(dir_a), _final(dir_b)
    assert a.keys() == b.keys() and any(k.startswith("optim") for k in a), sorted(a)
    for k, value in a.items():
        assert value.dtype == b[k].dtype and np.array_equal(value, b[k]), k


def _records(log_dir, split):
    lines = (log_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.mark.parametrize("ranks", [2, 4])     # 4: 2 tensor ranks x 2 replicas
def test_tensor_parallel_cnn_matches_one_process(tmp_path, ranks):
    many, one = tmp_path / "many", tmp_path / "one"
    out = _mpi_train(ranks, *CNN, "--tensor-parallel", "2", "--checkpoint-dir", str(many), "--log-dir", str(many))
    assert "model cnn" in out.stdout and f"{ranks} rank(s) as 2 tensor-parallel shards x {ranks // 2}" in out.stdout
    assert main([*CNN, "--checkpoint-dir", str(one), "--log-dir", str(one)]) == 0
    _assert_close(one, many)      # the trunk, the gathered head and their momentum, after 20 steps
    a, b = _records(one, "train"), _records(many, "train")
    assert len(a) == len(b) == 20
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-10)
    assert _records(one, "test")[0]["confusion_matrix"] == _records(many, "test")[0]["confusion_matrix"]


def test_tensor_parallel_times_pipeline_matches_one_process(tmp_path):
    many, one = tmp_path / "many", tmp_path / "one"
    out = _mpi_train(4, *MLP, "--tensor-parallel", "2", "--pipeline-stages", "2", "--micro-batches", "3",
                     "--checkpoint-dir", str(many), "--log-dir", str(many))
    assert "4 rank(s) as 2 pipeline stages x 2 tensor-parallel shards x 1 replica(s), schedule 1f1b" in out.stdout
    assert main([*MLP, "--checkpoint-dir", str(one), "--log-dir", str(one)]) == 0
    _assert_close(one, many)      # dropout inside the split pairs and across the stage boundary
    meta = checkpoint.load(checkpoint.latest(many)).meta
    assert (meta["tensor_parallel"], meta["pipeline_stages"], meta["world_size"]) == (2, 2, 4)
    a, b = _records(one, "train"), _records(many, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 26    # each sample counted once
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=1e-10)
    assert _records(one, "test")[0]["confusion_matrix"] == _records(many, "test")[0]["confusion_matrix"]


ZERO_OPTIMIZERS = {"sgd-momentum": ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "1e-3"],
                   "adam": ["--optimizer", "adam", "--lr", "0.003"]}


@pytest.mark.parametrize("grid", [["--pipeline-stages", "2"], ["--pipeline-stages", "2", "--partition", "balanced"],
                                  ["--tensor-parallel", "2"]], ids=["pp2xdp2", "pp2xdp2-cut-linear", "tp2xdp2"])
@pytest.mark.parametrize("opt", ZERO_OPTIMIZERS)
def test_zero_on_a_grid_gives_bitwise_the_same_grid_without_it(tmp_path, grid, opt):
    # 4 ranks: the optimizer state of each stage (or tensor shard) is sharded over its 2 replicas
    args = [*BASE, "--hidden", "24,16", "--dropout", "0.3", *ZERO_OPTIMIZERS[opt], *grid]
    _mpi_train(4, *args, "--checkpoint-dir", str(tmp_path / "plain"))
    out = _mpi_train(4, *args, "--zero", "1", "--checkpoint-dir", str(tmp_path / "zero")).stdout
    assert "x 2 replica(s)" in out and "optimizer state sharded (ZeRO-1)" in out
    _assert_bitwise(tmp_path / "plain", tmp_path / "zero")   # the checkpoint holds the consolidated state


def test_all_three_axes_with_zero_on_eight_ranks(tmp_path):
    # 2 stages x 2 tensor ranks x 2 replicas: ZeRO shards each (stage, shard)'s adam state over its 2
    # replicas; bitwise the same grid without it, and one process's run to 1e-10
    args = [*MLP, "--steps", "10", "--tensor-parallel", "2", "--pipeline-stages", "2"]
    _mpi_train(8, *args, "--checkpoint-dir", str(tmp_path / "plain"))
    out = _mpi_train(8, *args, "--zero", "1", "--checkpoint-dir", str(tmp_path / "zero")).stdout
    assert "8 rank(s) as 2 pipeline stages x 2 tensor-parallel shards x 2 replica(s)" in out
    _assert_bitwise(tmp_path / "plain", tmp_path / "zero")
    assert main([*MLP, "--steps", "10", "--checkpoint-dir", str(tmp_path / "one")]) == 0
    _assert_close(tmp_path / "one", tmp_path / "zero")


def test_a_run_resumes_across_tensor_pipeline_and_zero_grids_as_the_unbroken_run(tmp_path):
    # 1 process -> 2 stages x 2 tensor ranks -> 2 tensor ranks x 2 replicas with ZeRO -> 2 stages x 2
    # replicas with ZeRO -> 1 process: 26 steps in all; adam, so the optimizer state moves too
    assert main([*MLP, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    mix = str(tmp_path / "mix")
    assert main([*MLP, "--checkpoint-dir", mix, "--steps", "7"]) == 0
    _mpi_train(4, *MLP, "--checkpoint-dir", mix, "--resume", "--steps", "12", "--tensor-parallel", "2",
               "--pipeline-stages", "2")
    _mpi_train(4, *MLP, "--checkpoint-dir", mix, "--resume", "--steps", "17", "--tensor-parallel", "2", "--zero", "1")
    meta = checkpoint.load(checkpoint.latest(mix)).meta
    assert (meta["step"], meta["tensor_parallel"], meta["world_size"]) == (17, 2, 4)
    _mpi_train(4, *MLP, "--checkpoint-dir", mix, "--resume", "--steps", "22", "--pipeline-stages", "2", "--zero", "1")
    assert main([*MLP, "--checkpoint-dir", mix, "--resume", "--steps", "0"]) == 0
    assert checkpoint.load(checkpoint.latest(mix)).meta["step"] == 26
    _assert_close(tmp_path / "one", mix)


def test_a_balanced_pipeline_resumes_on_one_process_and_another_cut_as_the_unbroken_run(tmp_path):
    # balanced cuts the mlp's first Linear (64 -> 24) inside; 2 stages x 2 replicas, then 3 stages
    # cutting elsewhere, then one process; adam, so the cut layer's moments move too
    assert main([*MLP, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    mix = str(tmp_path / "mix")
    out = _mpi_train(4, *MLP, "--checkpoint-dir", mix, "--steps", "9", "--pipeline-stages", "2", "--partition",
                     "balanced").stdout
    assert "4 rank(s) as 2 pipeline stages x 2 replica(s) (cut at 1:18)" in out    # 18 of the 24 features
    _mpi_train(3, *MLP, "--checkpoint-dir", mix, "--resume", "--steps", "18", "--pipeline-stages", "3",
               "--partition", "1:10,1:20", "--schedule", "1f1b-split")
    assert main([*MLP, "--checkpoint-dir", mix, "--resume", "--steps", "0"]) == 0
    assert checkpoint.load(checkpoint.latest(mix)).meta["step"] == 26
    _assert_close(tmp_path / "one", mix)


def _diverged_step(result) -> int:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("distbp.train: error: ") and "training diverged" in lines[0], lines[0]
    return int(lines[0].split("at step ")[1].split()[0])


@pytest.mark.parametrize("ranks, grid", [(2, ["--tensor-parallel", "2"]),
                                         (4, ["--tensor-parallel", "2", "--pipeline-stages", "2"])],
                         ids=["tp2", "tp2xpp2"])
def test_a_diverging_loss_under_tensor_parallelism_stops_every_rank_at_one_process_step(tmp_path, ranks, grid):
    args = ["--no-progress", "--lr", "1e6", "--checkpoint-every", "2"]
    many = _mpi_train(ranks, *args, *grid, "--checkpoint-dir", str(tmp_path / "many"), check=False)
    step = _diverged_step(many)                  # every rank left the loop: no rank waits, no hang
    assert step == _diverged_step(_one_process(*args, "--checkpoint-dir", str(tmp_path / "one")))
    kept = checkpoint.load(checkpoint.latest(tmp_path / "many"))       # written before, intact, finite
    assert kept.meta["step"] == (step - 1) // 2 * 2 and "is intact" in many.stderr
    assert all(np.isfinite(v).all() for v in kept.model.values())
