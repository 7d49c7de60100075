"""Training options of python -m distbp.train: --accumulate N equals the N-times-larger batch (float64,
1e-10, on one process and on two ranks); --lr-schedule (with --warmup-steps), --clip-grad-norm,
--early-stopping and --eval-every survive a mid-epoch resume bitwise; the schedules give the closed-form
learning rates; clipping bounds the update."""
import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_train import _mpi_train, needs_mpi

import distbp as db
from distbp.distributed import SelfComm
from distbp.optim import SGD
from distbp.train import main
from distbp.training import checkpoint
from distbp.training.registry import build_model
from distbp.training.trainer import Trainer

FAST = ["--no-progress", "--epochs", "2"]    # digits: 1258 training samples, batch 64: 20 steps per epoch


def _weights(directory):
    return load_file(checkpoint.latest(directory))


def _same(dir_a, dir_b):
    a, b = _weights(dir_a), _weights(dir_b)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _close(dir_a, dir_b):
    a, b = _weights(dir_a), _weights(dir_b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-10)


def _train_losses(log_dir):
    return [(r["step"], r["loss"]) for r in map(json.loads, (log_dir / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "train"]


def test_accumulating_n_batches_equals_one_batch_n_times_larger(tmp_path):
    # 1258 samples: 19 steps of 64 and a last one of 42 (micro-batches 11, 11, 10, 10)
    base = [*FAST, "--dtype", "float64", "--dropout", "0.2"]
    assert main([*base, "--batch-size", "16", "--accumulate", "4", "--checkpoint-dir", str(tmp_path / "acc"),
                 "--log-dir", str(tmp_path / "acc")]) == 0
    assert main([*base, "--batch-size", "64", "--checkpoint-dir", str(tmp_path / "big"),
                 "--log-dir", str(tmp_path / "big")]) == 0
    _close(tmp_path / "acc", tmp_path / "big")
    acc, big = _train_losses(tmp_path / "acc"), _train_losses(tmp_path / "big")
    assert [s for s, _ in acc] == [s for s, _ in big] == list(range(1, 41))
    np.testing.assert_allclose([v for _, v in acc], [v for _, v in big], rtol=1e-10)
    # and it is not the run with 16-sample steps
    assert main([*base, "--batch-size", "16", "--steps", "40", "--checkpoint-dir", str(tmp_path / "small")]) == 0
    small, big = _weights(tmp_path / "small"), _weights(tmp_path / "big")
    assert any(not np.allclose(small[k], big[k]) for k in big)


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_accumulation_on_several_ranks_equals_the_larger_batch_on_one_process(tmp_path, ranks):
    base = [*FAST, "--dtype", "float64", "--dropout", "0.2", "--clip-grad-norm", "1.0"]
    _mpi_train(ranks, *base, "--batch-size", "16", "--accumulate", "4", "--checkpoint-dir", str(tmp_path / "acc"))
    assert main([*base, "--batch-size", "64", "--checkpoint-dir", str(tmp_path / "big")]) == 0
    _close(tmp_path / "acc", tmp_path / "big")


# name: (the option's flags, the flags of the same run without it)
OPTIONS = {
    "cosine": (["--lr-schedule", "cosine", "--warmup-steps", "5"], []),
    "step": (["--lr-schedule", "step", "--lr-step-size", "7", "--lr-gamma", "0.5"], []),
    "onecycle": (["--lr-schedule", "onecycle", "--warmup-steps", "10", "--optimizer", "adam", "--lr", "0.01"],
                 ["--optimizer", "adam", "--lr", "0.01"]),
    "plateau": (["--lr-schedule", "plateau", "--eval-every", "4", "--lr-patience", "0", "--lr-gamma", "0.5",
                 "--warmup-steps", "3", "--lr", "0.5"], ["--lr", "0.5", "--eval-every", "4"]),
    "clip": (["--clip-grad-norm", "0.05"], []),
    "accumulate": (["--accumulate", "3", "--batch-size", "21"], ["--batch-size", "21"]),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_an_option_survives_a_mid_epoch_resume_bitwise(tmp_path, name):
    opt, plain = OPTIONS[name]
    assert main([*FAST, *opt, "--checkpoint-dir", str(tmp_path / "full")]) == 0
    assert main([*FAST, *opt, "--checkpoint-dir", str(tmp_path / "part"), "--steps", "27",
                 "--checkpoint-every", "9"]) == 0
    assert checkpoint.load(checkpoint.latest(tmp_path / "part")).meta["batch"] == 7     # mid epoch 2
    assert main([*FAST, "--checkpoint-dir", str(tmp_path / "part"), "--resume", "--steps", "0"]) == 0   # the rest from the file
    _same(tmp_path / "full", tmp_path / "part")
    # the option did something: the unbroken run differs from the same run without it
    assert main([*FAST, *plain, "--checkpoint-dir", str(tmp_path / "plain")]) == 0
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "plain")
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_early_stopping_stops_at_the_same_step_after_a_resume(tmp_path, capsys):
    opt = ["--early-stopping", "2", "--eval-every", "3", "--lr", "0.5", "--epochs", "3", "--log-dir"]
    assert main(["--no-progress", *opt, str(tmp_path / "full"), "--checkpoint-dir", str(tmp_path / "full")]) == 0
    out = capsys.readouterr().out
    assert "early stopping at step 12: the validation loss has not improved for 2 validations" in out
    vals = [r for r in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())
            if r["split"] == "val"]
    assert [r["step"] for r in vals] == [3, 6, 9, 12]
    assert vals[2]["loss"] >= vals[1]["loss"] and vals[3]["loss"] >= vals[1]["loss"]   # two evaluations worse
    # stop after step 10: the checkpoint holds one bad evaluation (step 9); the resumed run stops at 12 too
    assert main(["--no-progress", *opt, str(tmp_path / "part"), "--checkpoint-dir", str(tmp_path / "part"),
                 "--steps", "10", "--checkpoint-every", "5"]) == 0
    ck = checkpoint.load(checkpoint.latest(tmp_path / "part"))
    assert ck.meta["control"]["bad_evals"] == 1 and ck.meta["control"]["best_step"] == 6
    assert main(["--no-progress", "--checkpoint-dir", str(tmp_path / "part"), "--resume", "--steps", "0"]) == 0
    assert "early stopping at step 12" in capsys.readouterr().out
    _same(tmp_path / "full", tmp_path / "part")
    # resuming a run that stopped early does not train on
    assert main(["--no-progress", "--checkpoint-dir", str(tmp_path / "part"), "--resume", "--steps", "0"]) == 0
    assert checkpoint.load(checkpoint.latest(tmp_path / "part")).meta["step"] == 12


def _lr_after(tmp_path, steps, *opt):
    directory = tmp_path / f"lr{steps}{'_'.join(opt)}"
    assert main([*FAST, *opt, "--steps", str(steps), "--checkpoint-dir", str(directory)]) == 0
    return checkpoint.load(checkpoint.latest(directory)).optimizer["param_groups"][0]["lr"]


def test_schedules_give_the_closed_form_learning_rates(tmp_path):
    lr, warm, horizon = 0.05, 5, 40
    cosine = ("--lr-schedule", "cosine", "--warmup-steps", str(warm))
    assert _lr_after(tmp_path, 3, *cosine) == pytest.approx(lr * (1 / 6 + (5 / 6) * 3 / 5), rel=1e-12)
    want = lr * (1 + math.cos(math.pi * (20 - warm) / (horizon - warm))) / 2
    assert _lr_after(tmp_path, 20, *cosine) == pytest.approx(want, rel=1e-9)
    assert _lr_after(tmp_path, 20, "--lr-schedule", "step", "--lr-step-size", "7", "--lr-gamma", "0.5") == \
        pytest.approx(lr * 0.25, rel=1e-12)
    assert _lr_after(tmp_path, 20, "--lr-schedule", "step") == pytest.approx(lr * 0.1, rel=1e-12)  # once an epoch
    # onecycle: up from lr/25 to lr at step W, then cosine down to lr/25/1e4 at the horizon
    one = ("--lr-schedule", "onecycle", "--warmup-steps", "10")
    assert _lr_after(tmp_path, 9, *one) == pytest.approx(lr, rel=1e-12)
    top, low, pct = lr, lr / 25 / 1e4, (30 - 9) / (39 - 9)
    assert _lr_after(tmp_path, 30, *one) == pytest.approx(low + (top - low) / 2 * (math.cos(math.pi * pct) + 1),
                                                          rel=1e-12)


def test_clipping_scales_the_update_to_the_norm_bound():
    db.set_default_dtype(np.float64)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 6)), rng.integers(0, 3, 32)
    deltas = {}
    for clip in (0.0, 0.01):
        db.manual_seed(0)
        model = build_model("mlp", (6,), 3, hidden=[8])
        before = [p.data.copy() for p in model.parameters()]
        Trainer(model, SGD(model.parameters(), lr=1.0), SelfComm(), clip_grad_norm=clip).step(X, y, 32)
        deltas[clip] = np.concatenate([(b - p.data).ravel() for b, p in zip(before, model.parameters())])
    raw = np.linalg.norm(deltas[0.0])
    assert raw > 0.01
    np.testing.assert_allclose(np.linalg.norm(deltas[0.01]), 0.01 * raw / (raw + 1e-6), rtol=1e-12)  # torch's +1e-6
    np.testing.assert_allclose(deltas[0.01] / np.linalg.norm(deltas[0.01]), deltas[0.0] / raw, rtol=1e-9)


@pytest.mark.parametrize("args, words", [
    (["--lr-schedule", "linear"], "invalid lr_schedule 'linear': choose one of none, cosine, step"),
    (["--accumulate", "0"], "invalid accumulate 0: must be at least 1"),
    (["--early-stopping", "2", "--val-fraction", "0"], "watches the validation loss, but --val-fraction is 0"),
    (["--clip-grad-norm", "1", "--zero", "1"], "--clip-grad-norm with --zero 1"),
    (["--warmup-steps", "500"], "--warmup-steps 500 is not shorter than the run"),
    (["--accumulate", "2", "--pipeline-stages", "2"], "--accumulate 2 with --pipeline-stages 2"),
])
def test_bad_training_options_are_one_line_and_exit_2(tmp_path, args, words):
    from test_train import _cli, _one_line_error
    _one_line_error(_cli("--checkpoint-dir", str(tmp_path / "c"), "--epochs", "2", *args), words)


@needs_mpi
@pytest.mark.parametrize("grid", [["--tensor-parallel", "2"], ["--pipeline-stages", "2", "--micro-batches", "4"],
                                  []])
def test_clipping_under_model_parallelism_equals_one_process(tmp_path, grid):
    # the norm is the whole model's: summed over tensor-parallel shards and pipeline stages
    base = [*FAST, "--dtype", "float64", "--hidden", "32,16", "--clip-grad-norm", "0.3", "--lr-schedule", "cosine",
            "--warmup-steps", "4"]
    _mpi_train(2, *base, *grid, "--checkpoint-dir", str(tmp_path / "two"))
    assert main([*base, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    _close(tmp_path / "one", tmp_path / "two")


@needs_mpi
def test_a_schedule_with_the_sharded_optimizer_resumes_as_the_unbroken_run(tmp_path):
    base = [*FAST, "--dtype", "float64", "--optimizer", "adam", "--lr", "0.01", "--lr-schedule", "onecycle"]
    _mpi_train(2, *base, "--zero", "1", "--checkpoint-dir", str(tmp_path / "zero"))
    assert main([*base, "--checkpoint-dir", str(tmp_path / "one"), "--steps", "27"]) == 0
    _mpi_train(2, *FAST, "--zero", "1", "--checkpoint-dir", str(tmp_path / "one"), "--resume", "--steps", "0")
    _close(tmp_path / "zero", tmp_path / "one")
