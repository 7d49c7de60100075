"""python -m distbp.train: accuracy of the default run, exact resume, data-parallel step math, and
bad input always ending as one line on stderr with exit status 2."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import distbp as db
from distbp import nn
from distbp.data import global_batches, load_dataset, shard
from distbp.distributed import SelfComm
from distbp.optim import SGD
from distbp.train import main
from distbp.training import checkpoint, registry
from distbp.training.registry import build_model
from distbp.training.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--no-progress", "--epochs", "2"]


def _weights(path):
    return {k: v for k, v in load_file(str(path)).items()}


def test_no_argument_run_reaches_95_percent_test_accuracy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "confusion matrix" in out
    # recompute the accuracy independently from the saved weights and the test split
    path = checkpoint.latest("checkpoints/run-1")   # a run given no --checkpoint-dir: its own folder
    data = load_dataset("digits", seed=0)
    model = build_model("mlp", (64,), 10)
    checkpoint.restore(checkpoint.load(path), model)
    pred = model(db.tensor(data.test[0])).numpy().argmax(axis=1)
    acc = float(np.mean(pred == data.test[1]))
    assert acc >= 0.95
    assert f"test accuracy {acc:.4f}" in out


@pytest.mark.parametrize("opt", [["--optimizer", "sgd"], ["--optimizer", "adam", "--lr", "0.003"],
                                 ["--dropout", "0.3"]])      # dropout: the RNG state must be restored too
def test_resumed_run_ends_with_exactly_the_weights_of_an_unbroken_run(tmp_path, opt):
    # digits: 1258 training samples, batch 64 -> 20 steps per epoch; stop at 27 = mid epoch 2
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(FAST + opt + ["--checkpoint-dir", str(full)]) == 0
    assert main(FAST + opt + ["--checkpoint-dir", str(part), "--steps", "27", "--checkpoint-every", "9"]) == 0
    ck = checkpoint.load(checkpoint.latest(part))
    assert (ck.meta["step"], ck.meta["epoch"], ck.meta["batch"]) == (27, 1, 7)
    # settings come from the checkpoint, --steps too: 0 lifts the cap of the interrupted run
    assert main(["--no-progress", "--checkpoint-dir", str(part), "--resume", "--steps", "0"]) == 0
    a, b = _weights(full / "ckpt-00000040.safetensors"), _weights(part / "ckpt-00000040.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_from_a_checkpoint_at_an_epoch_boundary_is_exact(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(FAST + ["--checkpoint-dir", str(full), "--dataset", "xor", "--batch-size", "100"]) == 0
    assert main(FAST + ["--checkpoint-dir", str(part), "--dataset", "xor", "--batch-size", "100",
                        "--steps", "7"]) == 0     # 700 samples: 7 steps is exactly one epoch
    assert checkpoint.load(checkpoint.latest(part)).meta["epoch"] == 1
    assert main(FAST + ["--checkpoint-dir", str(part), "--resume", str(checkpoint.latest(part)), "--steps", "0"]) == 0
    a, b = _weights(full / "ckpt-00000014.safetensors"), _weights(part / "ckpt-00000014.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("size", [2, 3, 4])
def test_rank_shards_sum_to_the_single_process_step_even_for_a_tiny_last_batch(size):
    """Each rank's step uses sum-of-losses / global batch; with plain SGD at lr=1 a rank's weight change
    is minus its gradient, so the changes of all ranks must add up to the one-process change."""
    db.set_default_dtype(np.float64)
    data = load_dataset("digits", seed=0)
    X, y = data.train[0].astype(np.float64), data.train[1]
    last = global_batches(len(X), 64, seed=0, epoch=0)[-1]      # 1258 = 19*64 + 42
    tiny = last[:size - 1]                                        # fewer samples than ranks: one rank is empty
    db.manual_seed(1)
    base = build_model("mlp", (64,), 10, hidden=[16])
    for batch in (last, tiny):
        def delta(indices, batch=batch):
            model = copy.deepcopy(base)
            Trainer(model, SGD(model.parameters(), lr=1.0), SelfComm()).step(X[indices], y[indices], len(batch))
            return [p.data - q.data for p, q in zip(model.parameters(), base.parameters())]

        whole = delta(batch)
        parts = [delta(shard(batch, r, size)) for r in range(size)]
        assert any(len(shard(batch, r, size)) == 0 for r in range(size)) == (batch is tiny)
        for i, w in enumerate(whole):
            np.testing.assert_allclose(sum(p[i] for p in parts), w, rtol=1e-10, atol=1e-12)


def test_log_dir_gets_json_lines_for_train_val_and_test(tmp_path):
    assert main(FAST + ["--checkpoint-dir", str(tmp_path / "c"), "--log-dir", str(tmp_path / "log")]) == 0
    records = [json.loads(line) for line in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines()]
    splits = [r["split"] for r in records]
    assert splits.count("train") == 40 and splits.count("val") == 2 and splits[-1] == "test"
    assert records[-1]["confusion_matrix"] and 0 <= records[-1]["accuracy"] <= 1


def test_keeps_only_the_newest_checkpoints(tmp_path):
    assert main(FAST + ["--checkpoint-dir", str(tmp_path), "--checkpoint-every", "5", "--keep-checkpoints", "2"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["ckpt-00000035.safetensors", "ckpt-00000040.safetensors",
                                            "distbp-run.lock"]


def test_linear_regression_from_the_command_line(tmp_path, capsys):
    assert main(["--no-progress", "--dataset", "regression", "--model", "linear", "--epochs", "5", "--lr", "0.05",
                 "--checkpoint-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    r2 = float(out.split("r2 ")[-1].split()[0])
    assert r2 > 0.99


def test_a_model_registered_with_one_function_trains_from_the_command_line(tmp_path, capsys):
    @registry.register_model("tiny_test_net")
    def tiny(input_shape, num_outputs, *, hidden=None):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden[0]), nn.Tanh(),
                             nn.Linear(hidden[0], num_outputs))
    try:
        assert main([*FAST, "--model", "tiny_test_net", "--hidden", "12", "--steps", "25",
                     "--checkpoint-dir", str(tmp_path)]) == 0
        assert "model tiny_test_net 910 parameters" in capsys.readouterr().out   # 64*12+12 + 12*10+10
        assert checkpoint.load(checkpoint.latest(tmp_path)).meta["config"]["model"] == "tiny_test_net"
    finally:
        del registry.MODELS["tiny_test_net"]


class _CountingComm(SelfComm):
    """A world of one that counts the blocking allreduces made through it."""

    def __init__(self):
        super().__init__()
        self.allreduces = 0

    def allreduce(self, array, op="sum"):
        self.allreduces += 1
        return super().allreduce(array, op)


def test_trainer_steps_make_no_collective_and_one_allreduce_gives_every_steps_mean_loss():
    db.set_default_dtype(np.float64)
    data = load_dataset("xor", seed=0)
    X, y = data.train
    comm = _CountingComm()
    model = build_model("mlp", (2,), 2, hidden=[8])
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), comm, batches_per_epoch=3)
    results = []
    for batch in global_batches(len(X), 300, seed=0, epoch=0):   # 700 samples: 300, 300, 100
        before = copy.deepcopy(model)
        results.append(trainer.step_on(X, y, batch))
        assert results[-1].updated and results[-1].samples == len(batch)
        # the loss the step reports is that of the weights before its update
        with db.no_grad():
            want = float(nn.functional.cross_entropy(before(db.tensor(X[batch])), y[batch]).item())
        assert results[-1].loss_sum / len(batch) == pytest.approx(want, rel=1e-12)
    assert comm.allreduces == 0 and (trainer.global_step, trainer.epoch, trainer.position) == (3, 1, 0)
    losses = trainer.mean_losses(results)
    assert comm.allreduces == 1
    assert losses == [r.loss_sum / r.global_batch for r in results] == [r.local_loss for r in results]


def test_trainer_does_not_update_the_weights_when_the_loss_is_not_finite():
    db.set_default_dtype(np.float64)
    model = build_model("linear", (3,), 1)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), SelfComm(), task="regression")
    weights = [p.data.copy() for p in model.parameters()]
    X, y = np.ones((4, 3)), np.full((4, 1), np.inf)
    with np.errstate(all="ignore"):
        result = trainer.step(X, y, global_batch=4)
    assert not result.updated and not np.isfinite(result.loss_sum) and trainer.global_step == 0
    assert all(np.array_equal(w, p.data) for w, p in zip(weights, model.parameters()))
    assert all(not np.isfinite(p.grad).any() for p in model.parameters())   # every gradient carries the verdict


# ----- bad input: one line on stderr, exit 2, no traceback (run as a user would) -----
def _cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT, DISTBP_NO_MPI="1")
    return subprocess.run([sys.executable, "-m", "distbp.train", "--no-progress", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120, check=False)


def _one_line_error(result, words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("distbp.train: error: ") and words in lines[0], lines[0]


@pytest.mark.parametrize("args, words", [
    (["--nope"], "unrecognized arguments: --nope"),
    (["--epochs", "many"], "invalid int value: 'many'"),
    (["--dataset", "/no/such/folder"], "neither a built-in"),
    (["--resume"], "--resume: no checkpoint"),
    (["--resume", "/no/ckpt.safetensors"], "checkpoint /no/ckpt.safetensors does not exist"),
    (["--zero", "3"], "invalid zero 3: choose 0 or 1"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, words):
    _one_line_error(_cli("--checkpoint-dir", str(tmp_path / "c"), *args), words)


def test_cli_unknown_config_key_and_missing_idx_folder(tmp_path):
    (tmp_path / "c.toml").write_text("epochz = 3\n")
    _one_line_error(_cli("--config", str(tmp_path / "c.toml")), "unknown key 'epochz'; did you mean 'epochs'?")
    (tmp_path / "mnist").mkdir()
    _one_line_error(_cli("--dataset", str(tmp_path / "mnist")), "has no MNIST IDX files")


def test_cli_corrupt_checkpoint_and_checkpoint_of_another_model(tmp_path):
    ck = tmp_path / "c"
    assert main(FAST + ["--checkpoint-dir", str(ck), "--steps", "3"]) == 0
    _one_line_error(_cli("--checkpoint-dir", str(ck), "--resume", "--model", "linear"),
                    "was written with model='mlp' but this run asks for model='linear'")
    path = checkpoint.latest(ck)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 100)
    _one_line_error(_cli("--checkpoint-dir", str(ck), "--resume"), f"checkpoint {path} is truncated or corrupt")


def test_cli_diverging_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    result = _cli("--checkpoint-dir", str(tmp_path), "--lr", "1e6", "--checkpoint-every", "2")
    _one_line_error(result, "at step")
    step = int(result.stderr.split("at step ")[1].split()[0])
    kept = checkpoint.latest(tmp_path)
    ck = checkpoint.load(kept)                                 # intact and loadable
    assert ck.meta["step"] == (step - 1) // 2 * 2 and "is intact" in result.stderr
    assert all(np.isfinite(v).all() for v in ck.model.values())


MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")  # the mpich wheel puts it beside python
needs_mpi = pytest.mark.skipif(not os.path.exists(MPIEXEC), reason="no mpiexec beside this python")


def _mpi_train(n, *args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    env.pop("DISTBP_NO_MPI", None)
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "distbp.train", *args], check=check,
                          capture_output=True, text=True, env=env, timeout=120)


def _assert_close(dir_a, dir_b):
    a, b = _weights(checkpoint.latest(dir_a)), _weights(checkpoint.latest(dir_b))
    assert a.keys() == b.keys()
    for k in a:   # same math in float64; only the summation order differs across ranks
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-10)


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_n_ranks_match_one_process_in_float64(tmp_path, ranks):
    # 1258 training samples, global batch 50: 26 steps a epoch, the last batch has 8 samples
    args = [*FAST, "--epochs", "2", "--batch-size", "50", "--dtype", "float64"]
    _mpi_train(ranks, *args, "--checkpoint-dir", str(tmp_path / "many"))
    assert main([*args, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    _assert_close(tmp_path / "one", tmp_path / "many")


def _train_losses(log_dir):
    records = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["epoch"], r["loss"]) for r in records if r["split"] == "train"]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_n_ranks_match_one_process_with_dropout_and_log_the_same_losses(tmp_path, ranks):
    # dropout masks are keyed by (step, global sample), so splitting a batch over ranks changes nothing
    args = [*FAST, "--epochs", "2", "--batch-size", "50", "--dtype", "float64", "--dropout", "0.3",
            "--checkpoint-every", "30"]
    _mpi_train(ranks, *args, "--checkpoint-dir", str(tmp_path / "many"), "--log-dir", str(tmp_path / "many"))
    assert main([*args, "--checkpoint-dir", str(tmp_path / "one"), "--log-dir", str(tmp_path / "one")]) == 0
    _assert_close(tmp_path / "one", tmp_path / "many")
    one, many = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "many")
    assert [r[:2] for r in one] == [r[:2] for r in many] and len(one) == 52    # every step, in order
    np.testing.assert_allclose([r[2] for r in many], [r[2] for r in one], rtol=1e-10)


@needs_mpi
def test_a_diverging_loss_stops_every_rank_at_the_same_step_with_one_line(tmp_path):
    args = ["--no-progress", "--lr", "1e6", "--checkpoint-every", "2"]
    result = _mpi_train(3, *args, "--checkpoint-dir", str(tmp_path / "many"), check=False)
    _one_line_error(result, "at step")                       # no rank waits in a collective: no hang
    one = _cli(*args, "--checkpoint-dir", str(tmp_path / "one"))
    _one_line_error(one, "at step")
    assert result.stderr.split("at step ")[1].split()[0] == one.stderr.split("at step ")[1].split()[0]


@needs_mpi
def test_a_run_resumed_on_three_ranks_continues_the_one_rank_run(tmp_path):
    # 1258 samples, global batch 50: 26 steps per epoch; stop mid-epoch at 13, finish on 3 ranks
    args = [*FAST, "--epochs", "1", "--batch-size", "50", "--dtype", "float64"]
    assert main([*args, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    assert main([*args, "--checkpoint-dir", str(tmp_path / "mix"), "--steps", "13"]) == 0
    _mpi_train(3, *args, "--checkpoint-dir", str(tmp_path / "mix"), "--resume", "--steps", "0")
    assert checkpoint.load(checkpoint.latest(tmp_path / "mix")).meta["world_size"] == 3
    _assert_close(tmp_path / "one", tmp_path / "mix")

def test_plot_reads_the_run_log_and_writes_a_png_or_says_matplotlib_is_missing(tmp_path, capsys):
    from distbp import plot
    assert plot.main([str(tmp_path)]) == 2
    assert "no metrics.jsonl in" in capsys.readouterr().err
    assert main(FAST + ["--checkpoint-dir", str(tmp_path / "c"), "--log-dir", str(tmp_path)]) == 0
    series = plot.read_metrics(str(tmp_path))
    assert len(series["train"]) == 40 and len(series["val"]) == 2
    capsys.readouterr()
    code = plot.main([str(tmp_path)])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 2
        assert capsys.readouterr().err.strip() == ("distbp.plot: error: matplotlib is not installed; "
                                                   "pip install 'distbp[plot]'")
    else:
        assert code == 0 and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_keras_mnist_example_learns_its_demo_idx_files():
    env = dict(os.environ, PYTHONPATH=ROOT, DISTBP_NO_MPI="1")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "keras_mnist_mlp.py"), "--demo",
                             "--epochs", "1"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("test accuracy ")[1].split(",")[0])
    assert accuracy > 0.9     # the class is written as one bright row: any working MLP finds it


def test_csv_file_with_named_label_column_trains_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    label = np.where(X[:, 0] + X[:, 2] > 0, "yes", "no")
    rows = "".join(f"{a:.5f},{lab},{b:.5f},{c:.5f}\n" for (a, b, c), lab in zip(X, label))
    (tmp_path / "d.csv").write_text("a,answer,b,c\n" + rows)
    assert main(["--no-progress", "--dataset", str(tmp_path / "d.csv"), "--label-column", "answer", "--model",
                 "linear", "--epochs", "30", "--lr", "0.1", "--checkpoint-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert float(out.split("test accuracy ")[1].split()[0]) >= 0.9     # a linearly separable rule
    header = next(line for line in out.splitlines() if line.startswith("true\\pred"))
    assert header.split()[1:] == ["no", "yes"]                          # class names label the matrix


def test_cli_unwritable_places_and_missing_gpu_are_one_line_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line_error(_cli("--checkpoint-dir", str(blocker / "c"), "--steps", "1"), "cannot write checkpoint")
    _one_line_error(_cli("--checkpoint-dir", str(tmp_path / "c"), "--log-dir", str(blocker / "log"),
                         "--steps", "1"), "cannot write the metrics log")
    if not db.cuda_available():
        _one_line_error(_cli("--checkpoint-dir", str(tmp_path / "c"), "--device", "cuda"), "--device cuda")


def test_float64_training_keeps_float64_weights(tmp_path):
    assert main([*FAST, "--dtype", "float64", "--steps", "3", "--checkpoint-dir", str(tmp_path)]) == 0
    assert all(v.dtype == np.float64 for v in _weights(checkpoint.latest(tmp_path)).values())


# ----- pipeline parallelism: --pipeline-stages P, stages x replicas -----
PIPE = [*FAST, "--epochs", "1", "--batch-size", "50", "--dtype", "float64", "--hidden", "24,16", "--dropout", "0.2",
        "--optimizer", "adam", "--lr", "0.003"]   # mlp of 8 layers; 26 steps, the last batch has 8 samples


@needs_mpi
@pytest.mark.parametrize("ranks, extra", [
    (2, ["--schedule", "gpipe", "--micro-batches", "3"]),       # 25 samples in micro-batches of 9, 8, 8
    (2, ["--micro-batches", "3"]),                              # 1f1b, the default
    (4, ["--schedule", "gpipe", "--micro-batch-size", "7", "--partition", "parameters"]),   # 2 stages x 2
], ids=["2-stages-gpipe", "2-stages-1f1b", "2x2"])
def test_pipeline_stages_match_one_process(tmp_path, ranks, extra):
    many, one = tmp_path / "many", tmp_path / "one"
    result = _mpi_train(ranks, *PIPE, "--pipeline-stages", "2", *extra, "--checkpoint-dir", str(many),
                        "--log-dir", str(many))
    assert f"{ranks} rank(s) as 2 pipeline stages x {ranks // 2} replica(s)" in result.stdout
    assert main([*PIPE, "--checkpoint-dir", str(one), "--log-dir", str(one)]) == 0
    _assert_close(one, many)     # one file, the single-process names, optimizer state included
    assert checkpoint.load(checkpoint.latest(many)).meta["pipeline_stages"] == 2
    a, b = _train_losses(one), _train_losses(many)
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == 26
    np.testing.assert_allclose([r[2] for r in b], [r[2] for r in a], rtol=1e-10)
    val = [json.loads(line) for line in (many / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["confusion_matrix"] for r in val if r["split"] == "test"] == [
        r["confusion_matrix"] for r in ref if r["split"] == "test"]   # evaluation through the stages


@needs_mpi
def test_a_run_resumes_across_grids_and_ends_as_the_unbroken_run(tmp_path):
    # 1 process -> 2 stages -> 2 stages x 2 replicas -> 1 process, 26 steps in all (adam: optimizer state moves)
    assert main([*PIPE, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    mix = str(tmp_path / "mix")
    assert main([*PIPE, "--checkpoint-dir", mix, "--steps", "7"]) == 0
    _mpi_train(2, *PIPE, "--checkpoint-dir", mix, "--resume", "--steps", "14", "--pipeline-stages", "2")
    _mpi_train(4, *PIPE, "--checkpoint-dir", mix, "--resume", "--steps", "20", "--pipeline-stages", "2",
               "--schedule", "gpipe")
    assert checkpoint.load(checkpoint.latest(mix)).meta["world_size"] == 4
    assert main([*PIPE, "--checkpoint-dir", mix, "--resume", "--steps", "0"]) == 0
    assert checkpoint.load(checkpoint.latest(mix)).meta["step"] == 26
    _assert_close(tmp_path / "one", mix)


def test_show_schedule_prints_every_stage_and_exits_without_training(tmp_path):
    from distbp.distributed.pipeline import format_schedules
    from distbp.distributed.pipeline.schedule import build_schedules
    for args, (name, stages, micro) in [(["--pipeline-stages", "2"], ("1f1b", 2, 2)),
                                        (["--pipeline-stages", "3", "--micro-batches", "5", "--schedule", "gpipe"],
                                         ("gpipe", 3, 5)),
                                        (["--pipeline-stages", "2", "--micro-batch-size", "10"], ("1f1b", 2, 7))]:
        result = _cli(*args, "--show-schedule", "--checkpoint-dir", str(tmp_path / "c"), cwd=tmp_path)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"schedule {name}: {stages} stage(s), {micro} micro-batch(es) per step"
        assert "\n".join(lines[1:]) == format_schedules(build_schedules(name, stages, micro))
    assert not (tmp_path / "c").exists()


def test_pipeline_usage_errors_in_one_process(tmp_path):
    _one_line_error(_cli("--pipeline-stages", "2", "--checkpoint-dir", str(tmp_path)),
                    "world size 1 is not a multiple of it; launch 2 ranks")


@needs_mpi
@pytest.mark.parametrize("ranks, args, words", [
    (3, ["--pipeline-stages", "2"], "the world size 3 is not a multiple of it; launch 2 or 4 ranks"),
    (4, ["--pipeline-stages", "4", "--model", "linear"], "cannot split a model of 2 layers into 4 stages"),
    (4, ["--pipeline-stages", "2", "--micro-batches", "40"], "--micro-batches 40: a replica holds only 32 samples"),
    (2, ["--pipeline-stages", "2", "--partition", "9"], "split points [9] must increase strictly and lie in 1..3"),
    (2, ["--pipeline-stages", "2", "--partition", "1,2"], "2 stages need 1 split points, got 2"),
    (2, ["--pipeline-stages", "2", "--partition", "2:5"], "split point 2:5 cuts inside layer 2, which is a ReLU"),
    (2, ["--pipeline-stages", "2", "--partition", "balanced", "--model", "cnn"],
     "partition 'balanced' counts the work of nn.Linear layers only, and layer '1' is a Conv2d"),
    (4, ["--pipeline-stages", "2", "--tensor-parallel", "2", "--partition", "1:64"],
     "--partition 1:64 cuts inside a Linear, which --tensor-parallel 2 already splits"),
])
def test_pipeline_usage_errors_are_one_line_and_exit_2_on_every_rank(tmp_path, ranks, args, words):
    _one_line_error(_mpi_train(ranks, "--no-progress", *args, "--checkpoint-dir", str(tmp_path), check=False),
                    words)
    assert not tmp_path.exists() or not os.listdir(tmp_path)      # no rank trained or saved


TP = [*FAST, "--epochs", "1", "--batch-size", "50", "--dtype", "float64", "--hidden", "24,16", "--dropout", "0.3"]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])     # 4: 2 tensor-parallel shards x 2 replicas
@pytest.mark.parametrize("opt", [["--optimizer", "sgd", "--momentum", "0.9"],
                                 ["--optimizer", "adam", "--lr", "0.003"]], ids=["sgd", "adam"])
def test_tensor_parallel_matches_one_process(tmp_path, ranks, opt):
    many, one = tmp_path / "many", tmp_path / "one"
    result = _mpi_train(ranks, *TP, *opt, "--tensor-parallel", "2", "--checkpoint-dir", str(many),
                        "--log-dir", str(many))
    assert f"{ranks} rank(s) as 2 tensor-parallel shards x {ranks // 2} replica(s)" in result.stdout
    assert main([*TP, *opt, "--checkpoint-dir", str(one), "--log-dir", str(one)]) == 0
    _assert_close(one, many)     # one file, the single-process names and shapes, optimizer state included
    assert checkpoint.load(checkpoint.latest(many)).meta["tensor_parallel"] == 2
    a, b = _train_losses(one), _train_losses(many)
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == 26
    np.testing.assert_allclose([r[2] for r in b], [r[2] for r in a], rtol=1e-10)   # each sample counted once
    test = [json.loads(line) for d in (one, many) for line in (d / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == "test"]
    assert test[0]["confusion_matrix"] == test[1]["confusion_matrix"]


@needs_mpi
def test_a_run_resumes_one_process_to_tensor_parallel_and_back_as_the_unbroken_run(tmp_path):
    # 1 process -> 2 shards -> 2 shards x 2 replicas -> 1 process, 26 steps in all (adam: optimizer state moves)
    opt = ["--optimizer", "adam", "--lr", "0.003"]
    assert main([*TP, *opt, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    mix = str(tmp_path / "mix")
    assert main([*TP, *opt, "--checkpoint-dir", mix, "--steps", "7"]) == 0
    _mpi_train(2, *TP, "--checkpoint-dir", mix, "--resume", "--steps", "14", "--tensor-parallel", "2")
    _mpi_train(4, *TP, "--checkpoint-dir", mix, "--resume", "--steps", "20", "--tensor-parallel", "2")
    assert checkpoint.load(checkpoint.latest(mix)).meta["world_size"] == 4
    assert main([*TP, "--checkpoint-dir", mix, "--resume", "--steps", "0"]) == 0
    assert checkpoint.load(checkpoint.latest(mix)).meta["step"] == 26
    _assert_close(tmp_path / "one", mix)


def test_tensor_parallel_usage_errors_in_one_process(tmp_path):
    _one_line_error(_cli("--tensor-parallel", "2", "--checkpoint-dir", str(tmp_path)),
                    "--tensor-parallel 2: the world size 1 is not a multiple of it; launch 2 ranks")
    _one_line_error(_cli("--tensor-parallel", "2", "--pipeline-stages", "2", "--checkpoint-dir", str(tmp_path)),
                    "--tensor-parallel 2: the world size 1 is not a multiple of --pipeline-stages 2 x 2 = 4; "
                    "launch 4 ranks")
    _one_line_error(_cli("--tensor-parallel", "0", "--checkpoint-dir", str(tmp_path)),
                    "invalid tensor_parallel 0: must be at least 1")
    assert not tmp_path.exists() or not os.listdir(tmp_path)


@needs_mpi
@pytest.mark.parametrize("ranks, args, words", [
    (2, ["--tensor-parallel", "2", "--model", "gru"], "--tensor-parallel 2 supports the models mlp and cnn"),
    (2, ["--tensor-parallel", "2", "--hidden", "15,24"], "the hidden sizes [15] are not divisible by it"),
    (2, ["--tensor-parallel", "2", "--model", "cnn", "--hidden", "9"], "the hidden sizes [9] are not divisible"),
    (3, ["--tensor-parallel", "2"], "the world size 3 is not a multiple of it; launch 2 or 4 ranks"),
    (2, ["--tensor-parallel", "2", "--pipeline-stages", "2"], "not a multiple of --pipeline-stages 2 x 2 = 4"),
    (3, ["--tensor-parallel", "3", "--hidden", "16,24"], "the hidden sizes [16] are not divisible by it"),
    (4, ["--tensor-parallel", "2", "--pipeline-stages", "2", "--micro-batches", "80"],
     "--micro-batches 80: a replica holds only 64 samples"),   # the stage's checks, on the 2x2 grid
])
def test_tensor_parallel_usage_errors_are_one_line_and_exit_2_on_every_rank(tmp_path, ranks, args, words):
    _one_line_error(_mpi_train(ranks, "--no-progress", *args, "--checkpoint-dir", str(tmp_path), check=False),
                    words)
    assert not tmp_path.exists() or not os.listdir(tmp_path)      # no rank trained or saved
