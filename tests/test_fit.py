"""distbp.fit(model, data, **settings): the command's run for a model and arrays a notebook already has.
It is the command's code path (the same weights bitwise as python -m distbp.train on the same data
and model), trains the given model in place, returns the history, resumes, and under mpiexec trains
data parallel (equal to one process, float64, 1e-10)."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_train import MPIEXEC, needs_mpi

import distbp as db
from distbp.train import main
from distbp.training import checkpoint
from distbp.training.config import ConfigError
from distbp.training.trainer import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = os.path.join(ROOT, "tests", "user_models", "tiny_net.py")


def _tiny_net():
    spec = importlib.util.spec_from_file_location("tiny_net_for_fit", NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(n=500, d=8, classes=3):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((n, d))
    return X, (X[:, :classes] + 0.4 * rng.standard_normal((n, classes))).argmax(axis=1)


def _model(**args):
    db.set_default_dtype(np.float64)
    db.manual_seed(0)                 # what the command does before it builds the model
    return _tiny_net().make((8,), 3, **args)


SETTINGS = {"epochs": 2, "batch_size": 25, "lr": 0.05, "optimizer": "adam", "lr_schedule": "cosine",
            "warmup_steps": 3, "eval_every": 5}


def test_fit_is_the_commands_run_bitwise_and_trains_the_model_in_place(tmp_path):
    X, y = _data()
    folder = tmp_path / "data"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    assert main(["--no-progress", "--model", f"{NET}:make", "--model-args", "hidden=12,dropout=0.1", "--dataset",
                 str(folder), "--dtype", "float64", *flags, "--checkpoint-dir", str(tmp_path / "cli")]) == 0
    model = _model(hidden=12, dropout=0.1)
    history = db.fit(model, (X, y), checkpoint_dir=str(tmp_path / "fit"), **SETTINGS)
    a, b = load_file(checkpoint.latest(tmp_path / "cli")), load_file(checkpoint.latest(tmp_path / "fit"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(np.array_equal(v, a[f"model/{k}"]) for k, v in model.state_dict().items())   # trained in place
    assert [r["step"] for r in history["train"]] == list(range(1, 29))     # 350 training samples: 14 a epoch
    assert [r["step"] for r in history["val"]] == [5, 10, 15, 20, 25]
    assert 0.6 < history["test"]["accuracy"] <= 1 and history["test"]["confusion_matrix"]


def test_fit_resumes_from_its_checkpoint_as_the_unbroken_run(tmp_path):
    X, y = _data()
    db.fit(_model(dropout=0.2), (X, y), checkpoint_dir=str(tmp_path / "full"), **SETTINGS)
    db.fit(_model(dropout=0.2), (X, y), checkpoint_dir=str(tmp_path / "part"), steps=17, checkpoint_every=17,
           **SETTINGS)
    history = db.fit(_model(dropout=0.2), (X, y), checkpoint_dir=str(tmp_path / "part"), resume=True, steps=0,
                     **SETTINGS)
    assert [r["step"] for r in history["train"]] == list(range(18, 29))
    a, b = load_file(checkpoint.latest(tmp_path / "full")), load_file(checkpoint.latest(tmp_path / "part"))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_fit_takes_a_callable_loss_and_a_dataset_name(tmp_path):
    db.set_default_dtype(np.float32)
    db.manual_seed(0)
    model = _tiny_net().make((8,), 1)
    history = db.fit(model, "regression", loss=db.nn.L1Loss(reduction="sum"), epochs=3,
                     checkpoint_dir=str(tmp_path / "c"))
    assert history["test"]["r2"] > 0.9 and history["train"][-1]["loss"] < history["train"][0]["loss"]


def test_fit_refuses_bad_settings_and_models_with_one_line(tmp_path):
    X, y = _data()
    with pytest.raises(ConfigError, match="unknown config keys"):
        db.fit(_model(), (X, y), epochz=2)
    with pytest.raises(ConfigError, match="takes the dataset as an argument"):
        db.fit(_model(), (X, y), dataset="digits")
    with pytest.raises(UsageError, match=r"the data needs a tensor of shape \(1, 4\)"):
        db.fit(_model(), (X, np.r_[y[:-1], 3]), checkpoint_dir=str(tmp_path / "c"))
    with pytest.raises(UsageError, match="must SUM over the samples"):
        db.fit(_model(), (X, y), loss=db.nn.CrossEntropyLoss(), checkpoint_dir=str(tmp_path / "c"))


FIT_SCRIPT = """
import sys, numpy as np, distbp as db
sys.path.insert(0, {tests!r})
from test_fit import _data, _model, SETTINGS
X, y = _data()
history = db.fit(_model(dropout=0.2), (X, y), checkpoint_dir=sys.argv[1], clip_grad_norm=0.5, **SETTINGS)
assert len(history["train"]) == 28 and len(history["val"]) == 5, history
"""


@needs_mpi
def test_fit_under_mpiexec_trains_data_parallel_equal_to_one_process(tmp_path):
    X, y = _data()
    db.fit(_model(dropout=0.2), (X, y), checkpoint_dir=str(tmp_path / "one"), clip_grad_norm=0.5, **SETTINGS)
    (tmp_path / "job.py").write_text(FIT_SCRIPT.format(tests=os.path.join(ROOT, "tests")))
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    env.pop("DISTBP_NO_MPI", None)
    subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(tmp_path / "job.py"), str(tmp_path / "two")],
                   check=True, capture_output=True, text=True, env=env, timeout=120)
    ck = checkpoint.load(checkpoint.latest(tmp_path / "two"))
    assert ck.meta["world_size"] == 2
    a, b = load_file(checkpoint.latest(tmp_path / "one")), load_file(ck.path)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-10)
