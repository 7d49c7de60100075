"""A user's own model and loss through python -m distbp.train: `file.py:factory` and
`package.module:factory` with --model-args (or a TOML table); data parallel runs equal one process
(float64, 1e-10); checkpoints resume exactly; a wrong factory is one line and exit 2 on every rank."""
import os

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_train import _cli, _mpi_train, _one_line_error, needs_mpi

from distbp.train import main
from distbp.training import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = os.path.join(ROOT, "tests", "user_models", "tiny_net.py")
FAST = ["--no-progress", "--epochs", "2"]


def _weights(directory):
    return load_file(checkpoint.latest(directory))


def _same(dir_a, dir_b, atol=0.0):
    a, b = _weights(dir_a), _weights(dir_b)
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol)
        else:
            assert np.array_equal(a[k], b[k]), k


@pytest.fixture
def folder(tmp_path):
    """A classification set as X.npy/y.npy (read memory-mapped): 700 samples, 12 features, 4 classes."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((700, 12))
    y = (X[:, :4] + 0.5 * rng.standard_normal((700, 4))).argmax(axis=1)
    path = tmp_path / "data"
    path.mkdir()
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y)
    return str(path)


def test_a_user_model_file_trains_and_resumes_mid_epoch_bitwise(tmp_path, folder, capsys):
    # 490 training samples, batch 32: 16 steps per epoch; stop at 21 (mid epoch 2), then resume
    args = [*FAST, "--dataset", folder, "--model", f"{NET}:make", "--model-args", "hidden=10,dropout=0.2",
            "--batch-size", "32", "--optimizer", "adam", "--lr", "0.01"]
    assert main([*args, "--checkpoint-dir", str(tmp_path / "full")]) == 0
    out = capsys.readouterr().out
    assert f"model {NET}:make 222 parameters" in out   # 12*10+10 + 10*4+4 + 12*4 (the skip path)
    assert "test accuracy" in out
    assert main([*args, "--checkpoint-dir", str(tmp_path / "part"), "--steps", "21", "--checkpoint-every", "7"]) == 0
    ck = checkpoint.load(checkpoint.latest(tmp_path / "part"))
    assert (ck.meta["step"], ck.meta["batch"]) == (21, 5) and ck.meta["config"]["model_args"] == {
        "hidden": 10, "dropout": 0.2}
    assert main([*FAST, "--checkpoint-dir", str(tmp_path / "part"), "--resume", "--steps", "0"]) == 0   # the rest from the file
    _same(tmp_path / "full", tmp_path / "part")


def test_module_factory_form_builds_the_zoo_model_bitwise(tmp_path):
    # the zoo's mlp named as package.module:function with its hidden sizes as a model arg is the same run
    assert main([*FAST, "--model", "distbp.training.models:mlp", "--model-args", "hidden=[24, 12]",
                 "--checkpoint-dir", str(tmp_path / "a")]) == 0
    assert main([*FAST, "--model", "mlp", "--hidden", "24,12", "--checkpoint-dir", str(tmp_path / "b")]) == 0
    _same(tmp_path / "a", tmp_path / "b")


def test_model_and_loss_args_from_a_toml_table_equal_the_flags(tmp_path):
    (tmp_path / "run.toml").write_text(f'model = "{NET}:make"\ndataset = "regression"\nloss = "{NET}:summed_l1"\n'
                                       "[model_args]\nhidden = 6\n[loss_args]\nscale = 1.0\n")
    assert main([*FAST, "--config", str(tmp_path / "run.toml"), "--checkpoint-dir", str(tmp_path / "a")]) == 0
    assert main([*FAST, "--model", f"{NET}:make", "--model-args", "hidden=6", "--dataset", "regression",
                 "--loss", "l1", "--checkpoint-dir", str(tmp_path / "b")]) == 0   # the registry's summed L1
    _same(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("args, words", [
    (["--model", f"{NET}:nope"], "has no 'nope' (it defines TinyNet, make"),
    (["--model", "no_such_package.models:make"], "cannot import module 'no_such_package.models'"),
    (["--model", "/no/such/model.py:make"], "file /no/such/model.py not found"),
    (["--model", f"{NET}:not_a_module"], "returned a function; it must return a distbp.nn.Module"),
    (["--model", f"{NET}:wrong_outputs"], ("gives shape (1, 11) for one sample of shape (1, 64); the data needs a "
                                          "tensor of shape (1, 10) (10 classes)")),
    (["--model", f"{NET}:make", "--model-args", "width=3"], "unexpected keyword argument 'width'"),
    (["--model", f"{NET}:make", "--model-args", "hidden"], "expected key=value pairs"),
    (["--model", f"{NET}:make", "--loss", f"{NET}:mean_loss"], "must SUM over the samples"),
    (["--loss", "mse"], "--loss mse does not fit this dataset's classification labels"),
    (["--model", f"{NET}:make", "--tensor-parallel", "2"], "--tensor-parallel 2 supports the models mlp and cnn"),
])
def test_a_wrong_user_model_or_loss_is_one_line_and_exit_2(tmp_path, args, words):
    _one_line_error(_cli("--checkpoint-dir", str(tmp_path / "c"), "--epochs", "1", *args), words)


@needs_mpi
def test_a_user_model_file_on_two_ranks_equals_one_process_in_float64(tmp_path, folder):
    args = [*FAST, "--dataset", folder, "--model", f"{NET}:make", "--model-args", "hidden=10,dropout=0.2",
            "--batch-size", "30", "--dtype", "float64", "--clip-grad-norm", "0.5"]
    _mpi_train(2, *args, "--checkpoint-dir", str(tmp_path / "two"))
    assert main([*args, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    _same(tmp_path / "one", tmp_path / "two", atol=1e-10)
    # and a one-process checkpoint of it resumes on two ranks, to the same end
    assert main([*args, "--checkpoint-dir", str(tmp_path / "mix"), "--steps", "11"]) == 0
    _mpi_train(2, *args, "--checkpoint-dir", str(tmp_path / "mix"), "--resume", "--steps", "0")
    _same(tmp_path / "one", tmp_path / "mix", atol=1e-10)


@needs_mpi
def test_a_sequential_user_model_is_cut_into_pipeline_stages(tmp_path, folder):
    args = [*FAST, "--dataset", folder, "--model", f"{NET}:make_sequential", "--batch-size", "40",
            "--dtype", "float64"]
    _mpi_train(2, *args, "--pipeline-stages", "2", "--micro-batches", "4", "--checkpoint-dir", str(tmp_path / "pp"))
    assert main([*args, "--checkpoint-dir", str(tmp_path / "one")]) == 0
    _same(tmp_path / "one", tmp_path / "pp", atol=1e-10)


@needs_mpi
def test_a_wrong_user_model_stops_every_rank_with_one_line(tmp_path):
    result = _mpi_train(2, "--no-progress", "--model", f"{NET}:wrong_outputs", "--checkpoint-dir",
                        str(tmp_path / "c"), check=False)
    _one_line_error(result, "the data needs a tensor of shape (1, 10)")
