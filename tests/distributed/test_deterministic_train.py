"""`python -m distbp.train --deterministic`: the final checkpoint's tensors (weights and optimizer
state) are bit for bit the same on 1, 2, 3 and 4 ranks, and after resuming mid-epoch on another
number of ranks. Each test launches its own mpiexec jobs (run by the single-process pytest pass)."""
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
# (8 groups of one sample: at 3 ranks, groups 3, 3 and 2)
ARGS = ["--no-progress", "--epochs", "1", "--batch-size", "50", "--deterministic", "--momentum", "0.9"]
RUNS = {   # model options, dtype, the rank counts compared
    "mlp-dropout-float32": (["--model", "mlp", "--hidden", "32,16", "--dropout", "0.2"], "float32", [1, 2, 3, 4]),
    "mlp-dropout-float64": (["--model", "mlp", "--hidden", "32", "--dropout", "0.3"], "float64", [1, 4]),
    "cnn-float32": (["--model", "cnn", "--hidden", "16"], "float32", [1, 2, 3]),
    "gru-float64": (["--model", "gru", "--hidden", "12"], "float64", [1, 3]),
    "gru-float32": (["--model", "gru", "--hidden", "12"], "float32", [2, 4]),
}


def _train(n, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PMI_RANK", None)
    env.pop("DISTBP_NO_MPI", None)
    env.pop("OPENBLAS_NUM_THREADS", None)   # deterministic mode sets one BLAS thread itself
    proc = subprocess.run(["timeout", "300", str(MPIEXEC), "-n", str(n), sys.executable, "-m", "distbp.train",
                           *args], check=False, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _final(directory):
    return load_file(str(checkpoint.latest(directory)))


def _differing(dir_a, dir_b) -> list:
    a, b = _final(dir_a), _final(dir_b)
    assert a.keys() == b.keys() and any(k.startswith("model/") for k in a)
    return [k for k in a if a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]


@pytest.mark.parametrize("run", RUNS)
def test_the_same_bits_on_every_number_of_ranks(tmp_path, run):
    options, dtype, counts = RUNS[run]
    for n in counts:
        out = _train(n, *ARGS, *options, "--dtype", dtype, "--checkpoint-dir", str(tmp_path / str(n)))
        assert "deterministic (8 groups per batch" in out
    for n in counts[1:]:
        assert _differing(tmp_path / str(counts[0]), tmp_path / str(n)) == [], f"{n} ranks vs {counts[0]}"


def test_resumes_mid_epoch_on_other_rank_counts_end_with_the_same_bits(tmp_path):
    options = [*ARGS, "--model", "mlp", "--hidden", "32", "--dropout", "0.2"]
    groups = ["--deterministic-groups", "6"]   # given at the start only: a resume takes it from the checkpoint
    _train(2, *options, *groups, "--checkpoint-dir", str(tmp_path / "whole"))
    chain = tmp_path / "chain"
    _train(1, *options, *groups, "--steps", "9", "--checkpoint-dir", str(chain))           # stops mid-epoch
    _train(3, *options, "--steps", "17", "--resume", "--checkpoint-dir", str(chain))
    out = _train(4, *options, "--resume", "--steps", "0", "--checkpoint-dir", str(chain))   # to the end
    assert "resumed from" in out and "at step 17" in out and "deterministic (6 groups per batch" in out
    assert _differing(tmp_path / "whole", chain) == []


def test_deterministic_with_pipeline_stages_is_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "distbp.train", "--deterministic", "--pipeline-stages", "2"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        ("distbp.train: error: --deterministic with --pipeline-stages 2: deterministic mode is for plain data "
         "parallelism only; use one or the other")]
