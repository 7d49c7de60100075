"""Datasets from numpy files: .npz (X, y) and folders of X.npy/y.npy, read by rows memory-mapped.
The rows a split hands out equal the in-memory arrays indexed the same way; the file is unmapped
after every read (so resident memory does not grow as an epoch touches the file); training on the
mapped files equals training on the same arrays in memory bit for bit; bad files are one line."""
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from distbp.data import DataError, load_dataset
from distbp.data.arrays import Rows, open_npz
from distbp.data.datasets import dataset_from_arrays
from distbp.train import main
from distbp.training import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(n=600, d=10, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X[:, :classes] + 0.3 * rng.standard_normal((n, classes))).argmax(axis=1)
    return X, y


def _save_all(tmp_path, X, y):
    """The same arrays as a folder of .npy, a stored .npz and a compressed .npz."""
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    np.savez(tmp_path / "stored.npz", X=X, y=y)
    np.savez_compressed(tmp_path / "packed.npz", X=X, y=y)
    return {"folder": str(folder), "stored": str(tmp_path / "stored.npz"), "packed": str(tmp_path / "packed.npz")}


@pytest.mark.parametrize("kind", ["folder", "stored", "packed"])
def test_split_rows_equal_the_in_memory_arrays_indexed_the_same_way(tmp_path, kind):
    X, y = _arrays()
    X = np.asfortranarray(X) if kind == "folder" else X.astype(np.float32)   # column-major files map too
    data = load_dataset(_save_all(tmp_path, X, y)[kind], seed=3)
    assert data.task == "classification" and data.num_classes == 3 and data.input_shape == (10,)
    assert ("loaded into memory" in data.storage) == (kind == "packed")
    Xtr, ytr = data.train
    batch = np.array([7, 0, 300, 7, 12, 1])        # unsorted, with a repeat
    np.testing.assert_array_equal(Xtr[batch], X[Xtr.rows[batch]])
    np.testing.assert_array_equal(ytr[batch], y[Xtr.rows[batch]])
    np.testing.assert_array_equal(Xtr.astype(np.float64)[5:9], X[Xtr.rows[5:9]].astype(np.float64))
    assert Xtr[batch].dtype == X.dtype and ytr[batch].dtype == np.int64
    rows = np.concatenate([s[0].rows for s in (data.train, data.val, data.test)])
    assert sorted(rows) == list(range(len(X)))     # the three splits cover the file once


def test_regression_targets_of_shape_n_read_as_a_column(tmp_path):
    X, _ = _arrays()
    y = X[:, 0] * 2.0
    data = dataset_from_arrays(X, y, "r")
    assert data.task == "regression" and data.num_outputs == 1 and data.train[1].shape == (len(data.train[1]), 1)
    np.testing.assert_array_equal(data.train[1][[3, 1]][:, 0], y[data.train[1].rows[[3, 1]]])


def _mapped(path):
    with open("/proc/self/maps") as f:
        return any(os.path.realpath(path) in line for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_the_file_is_unmapped_after_every_read(tmp_path):
    # a long-lived mapping would keep every page an epoch touched in the process's resident memory
    X, y = _arrays()
    paths = _save_all(tmp_path, X, y)
    data = load_dataset(paths["folder"])
    batch = data.train[0][np.arange(50)]
    assert batch.shape == (50, 10) and not _mapped(os.path.join(paths["folder"], "X.npy"))
    X_src, _, note = open_npz(paths["stored"])
    assert note == "memory-mapped" and X_src.offset > 0
    Rows(X_src, np.arange(5))[np.arange(5)]
    assert not _mapped(paths["stored"])


def _weights(directory):
    return load_file(checkpoint.latest(directory))


@pytest.mark.parametrize("other", ["stored", "packed"])
def test_training_on_the_mapped_folder_equals_training_in_memory_bitwise(tmp_path, other):
    X, y = _arrays(n=900)
    paths = _save_all(tmp_path, X, y)
    args = ["--no-progress", "--epochs", "2", "--batch-size", "40", "--dropout", "0.2", "--hidden", "16"]
    assert main([*args, "--dataset", paths["folder"], "--checkpoint-dir", str(tmp_path / "a")]) == 0
    assert main([*args, "--dataset", paths[other], "--checkpoint-dir", str(tmp_path / "b")]) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, DISTBP_NO_MPI="1")
    return subprocess.run([sys.executable, "-m", "distbp.train", "--no-progress", "--epochs", "1", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_a_compressed_npz_is_loaded_and_the_run_says_so(tmp_path):
    X, y = _arrays()
    result = _cli("--dataset", _save_all(tmp_path, X, y)["packed"], "--checkpoint-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert "a compressed .npz cannot be memory-mapped" in result.stdout


def _bad(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("arrays, words", [
    ({"X": np.zeros((10, 3)), "y": np.zeros(9, np.int64)}, "has 9 labels but X has 10 samples"),
    ({"X": np.zeros((10, 3)), "y": np.r_[np.zeros(9), np.nan]}, "non-finite label (nan or inf) at row 9"),
    ({"X": np.zeros(10), "y": np.arange(10) % 2}, "at least 2 dimensions"),
    ({"X": np.zeros((10, 3)), "y": np.arange(10) - 1}, "has the label -1"),
    ({"X": np.zeros((10, 3)), "y": np.zeros(10, np.int64)}, "single class"),
    ({"X": np.array([["a", "b"]] * 10), "y": np.arange(10) % 2}, "features must be numbers"),
    ({"X": np.zeros((10, 3))}, "has no array 'y' (it has X)"),
    ({"X": np.zeros((10, 3)), "y": np.zeros((10, 2, 2))}, "labels must be (N,) classes or (N, outputs)"),
])
def test_bad_arrays_are_one_clear_line(tmp_path, arrays, words):
    path = _bad(tmp_path, "bad.npz", **arrays)
    with pytest.raises(DataError, match=None) as e:
        load_dataset(path)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_files_from_the_command_line_are_one_line_and_exit_2(tmp_path):
    path = _bad(tmp_path, "bad.npz", X=np.zeros((10, 3)), y=np.full(10, np.nan))
    folder = tmp_path / "half"
    folder.mkdir()
    np.save(folder / "X.npy", np.zeros((10, 3)))
    truncated = tmp_path / "cut"
    truncated.mkdir()
    np.save(truncated / "X.npy", np.zeros((1000, 3)))
    np.save(truncated / "y.npy", np.zeros(1000, np.int64))
    with open(truncated / "X.npy", "r+b") as f:
        f.truncate(5000)
    for dataset, words in ((path, "non-finite label"), (str(folder), "not y.npy"), (str(truncated), "is truncated")):
        result = _cli("--dataset", dataset, "--checkpoint-dir", str(tmp_path / "c"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr


SPARSE_RUN = """
import sys
from distbp.train import main
code = main(sys.argv[1:])
with open("/proc/self/status") as f:
    print("VmHWM_MB", int(f.read().split("VmHWM:")[1].split()[0]) // 1024)
sys.exit(code)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_a_3_gb_sparse_dataset_trains_with_flat_memory(tmp_path):
    # X.npy: 3M x 256 float32 = 3 GB, a sparse file (zeros, no disk blocks); the run reads rows of it
    # for 20 steps, then evaluates 60k rows. The peak resident memory stays far below the file.
    folder = tmp_path / "big"
    folder.mkdir()
    n = 3 * 2**20
    np.lib.format.open_memmap(folder / "X.npy", mode="w+", dtype=np.float32, shape=(n, 256)).flush()
    np.save(folder / "y.npy", np.arange(n) % 2)
    assert os.path.getsize(folder / "X.npy") > 3 * 2**30
    (tmp_path / "run.py").write_text(SPARSE_RUN)
    env = dict(os.environ, PYTHONPATH=ROOT, DISTBP_NO_MPI="1", OPENBLAS_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), "--no-progress", "--dataset", str(folder),
                             "--steps", "20", "--batch-size", "512", "--val-fraction", "0.01", "--test-fraction",
                             "0.02", "--checkpoint-dir", str(tmp_path / "c")], capture_output=True, text=True,
                            env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "memory-mapped" in result.stdout
    peak = int(result.stdout.split("VmHWM_MB ")[1].split()[0])
    assert peak < 300, f"peak resident memory {peak} MB on a 3 GB dataset"
