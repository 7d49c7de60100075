"""The Trainer on a pipeline (stages x replicas) == the Trainer in one process (float64, 1e-10): steps,
losses, the divergence guard, evaluation through the stages, and checkpoints that move bitwise between
grids. Every rank also runs the single-process reference. Tests use the largest grid of their kind the
world allows and skip when it allows none; the last test launches its own mpiexec job."""
import copy
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from distributed_helpers import own_rows

import distbp as db
from distbp import nn
from distbp.data import global_batches
from distbp.distributed import SelfComm
from distbp.optim import Adam
from distbp.training import checkpoint
from distbp.training.registry import build_model
from distbp.training.trainer import Trainer, UsageError, pipeline_stage_for

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TOL = 1e-10


def _cfg(stages, **kw):
    base = {"pipeline_stages": stages, "device": "cpu", "partition": "uniform", "schedule": "1f1b",
            "micro_batches": 3, "micro_batch_size": 0, "batch_size": 40, "model": "mlp"}
    return SimpleNamespace(**{**base, **kw})


def _stages_for(comm, stages):
    if comm.size % stages:
        pytest.skip(f"{stages} pipeline stages need a world that is a multiple of {stages}, not {comm.size}")
    return stages


def _data(task, n=130, seed=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6))
    y = rng.integers(0, 3, n) if task == "classification" else rng.standard_normal((n, 2))
    return X, y


def _make(task):
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    return build_model("mlp", (6,), 3 if task == "classification" else 2, hidden=[16, 8], activation="tanh",
                       dropout=0.2)


def _pair(comm, stages, task, free_after, **kw):
    """(reference Trainer on SelfComm, pipeline Trainer on comm) over copies of the same model; the
    stage and its grid are freed after the test."""
    ref_model = _make(task)
    ref = Trainer(ref_model, Adam(ref_model.parameters(), lr=0.01), SelfComm(), task, batches_per_epoch=4)
    stage = pipeline_stage_for(_cfg(stages, **kw), copy.deepcopy(ref_model), comm, task, [40, 10])
    free_after(stage.grid)
    free_after(stage)
    params = list(stage.parameters())
    mine = Trainer(stage, Adam(params, lr=0.01) if params else None, comm, task, batches_per_epoch=4,
                   micro_batches=kw.get("micro_batches", 3), micro_batch_size=kw.get("micro_batch_size", 0))
    return ref, mine


def _assert_weights(ref, mine, tol=TOL):
    expected = ref.model.state_dict()
    for k, v in mine.model.state_dict().items():
        assert np.max(np.abs(v - own_rows(mine.model, k, expected[k]))) <= tol, k


@pytest.mark.mpi
@pytest.mark.parametrize("partition", ["uniform", "balanced"])
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("stages", [2, "world"])
def test_trainer_on_a_pipeline_equals_one_process(comm, free_after, task, stages, partition):
    # "balanced" cuts inside Linear layers (on 3 and 4 stages, one of them twice)
    stages = _stages_for(comm, comm.size if stages == "world" else stages)
    X, y = _data(task)
    ref, mine = _pair(comm, stages, task, free_after, partition=partition)
    a, b = [], []
    for epoch in range(2):
        for batch in global_batches(len(X), 40, seed=0, epoch=epoch):     # 40, 40, 40, 10
            a.append(ref.step_on(X, y, batch))
            b.append(mine.step_on(X, y, batch))
            assert a[-1].updated and b[-1].updated
    assert (mine.global_step, mine.epoch, mine.position) == (8, 2, 0)
    _assert_weights(ref, mine)
    np.testing.assert_allclose(mine.mean_losses(b), ref.mean_losses(a), rtol=1e-10)
    got, want = mine.evaluate(X, y, 3), ref.evaluate(X, y, 3)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12)


@pytest.mark.mpi
def test_a_non_finite_loss_skips_the_step_on_every_stage_and_replica(comm, free_after):
    stages = _stages_for(comm, comm.size if comm.size > 1 else 2)
    X, y = _data("regression", n=40)
    _, mine = _pair(comm, stages, "regression", free_after)
    y = y.copy()
    y[-1, 0] = np.inf                          # in the last replica's share, seen by the last stage only
    before = mine.model.state_dict()
    with np.errstate(all="ignore"):
        result = mine.step_on(X, y, np.arange(40))
    assert not result.updated and mine.global_step == 0
    after = mine.model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def _shared_dir(comm):
    return comm.bcast_obj(tempfile.mkdtemp(prefix="distbp-pipe-") if comm.is_root else None)


@pytest.mark.mpi
@pytest.mark.parametrize("partition", ["uniform", "balanced"])
def test_checkpoints_move_bitwise_between_one_process_and_a_pipeline(comm, free_after, partition):
    # "balanced": the Linear cut between the stages is written whole, its Adam moments too
    stages = _stages_for(comm, 2)
    X, y = _data("classification")
    ref, mine = _pair(comm, stages, "classification", free_after, partition=partition)
    batches = global_batches(len(X), 40, seed=0, epoch=0)
    for batch in batches[:3]:
        ref.step_on(X, y, batch)
    folder = _shared_dir(comm)
    ref.checkpoint_dir = os.path.join(folder, "one")
    mine.checkpoint_dir = os.path.join(folder, "pipe")
    if comm.is_root:
        ref.save_checkpoint()
    saved = checkpoint.load_shared(checkpoint.latest(os.path.join(folder, "one")) if comm.is_root else None,
                                   folder, comm)
    mine.resume(saved)                        # one process -> pipeline: weights and Adam state by name
    path = mine.save_checkpoint()             # pipeline -> one file in the single-process layout
    if comm.is_root:
        again = checkpoint.load(path)
        assert again.model.keys() == saved.model.keys()
        assert all(np.array_equal(again.model[k], saved.model[k]) for k in saved.model)
        assert again.optimizer["param_groups"] == saved.optimizer["param_groups"]
        assert again.optimizer["state"].keys() == saved.optimizer["state"].keys()
        for i, st in saved.optimizer["state"].items():
            assert all(np.array_equal(np.asarray(again.optimizer["state"][i][k]), np.asarray(v)) for k, v in st.items())
    ref.step_on(X, y, batches[3])             # and both continue alike
    mine.step_on(X, y, batches[3])
    _assert_weights(ref, mine)
    comm.barrier()
    if comm.is_root:
        import shutil
        shutil.rmtree(folder)


def test_models_a_pipeline_cannot_split_are_refused_before_any_communication():
    world = SimpleNamespace(size=2, rank=0)    # never used for communication: the checks come first
    norm = build_model("cnn", (36,), 3, hidden=[8], image_shape=(1, 6, 6), channels=2, batch_norm=True)
    with pytest.raises(UsageError, match="BatchNorm2d"):
        pipeline_stage_for(_cfg(2, model="cnn"), norm, world, "classification", [40])

    class NotSequential(nn.Module):
        def forward(self, x):
            return x
    with pytest.raises(UsageError, match="NotSequential is not one"):
        pipeline_stage_for(_cfg(2), NotSequential(), world, "classification", [40])
    with pytest.raises(UsageError, match="cannot feed 2 pipeline replicas"):
        pipeline_stage_for(_cfg(2), _make("classification"), SimpleNamespace(size=4, rank=0), "classification",
                           [40, 1])


@pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")
def test_a_rank_that_raises_mid_pipeline_ends_the_job_and_is_named(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import sys
        from distbp import nn
        from distbp.training import registry
        from distbp.train import main

        class Boom(nn.Module):
            calls = 0
            def forward(self, x):
                Boom.calls += 1
                if self.training and Boom.calls == 7:
                    raise RuntimeError("broken layer on purpose")
                return x

        @registry.register_model("boom")
        def boom(input_shape, num_outputs):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), Boom(), nn.Linear(8, num_outputs))

        sys.exit(main(["--no-progress", "--model", "boom", "--pipeline-stages", "2", "--micro-batches", "4",
                       "--checkpoint-dir", sys.argv[1]]))
    """))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop("PMI_RANK", None)
    t0 = time.monotonic()
    proc = subprocess.run(["timeout", "60", str(MPIEXEC), "-n", "2", sys.executable, str(script),
                           str(tmp_path / "c")], check=False, capture_output=True, text=True, env=env, cwd=tmp_path)
    took = time.monotonic() - t0
    assert proc.returncode != 0 and took < 30, (proc.returncode, took, proc.stderr[-2000:])
    assert "rank 1: Traceback" in proc.stderr and "RuntimeError: broken layer on purpose" in proc.stderr, proc.stderr
