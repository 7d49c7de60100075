"""Bad values in the data and absurd sizes: each is one line naming the value and what is allowed
(exit status 2 from the command), never an extra class, a NaN loss blamed on --lr, a reshape error,
"accuracy 0.0000 (0 samples)" or a MemoryError traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest

from distbp.data import DataError, load_dataset, write_idx
from distbp.training.memory import check_fits
from distbp.training.trainer import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _csv(tmp_path, labels, name="d.csv"):
    rows = "".join(f"{i},{i % 7},{label}\n" for i, label in enumerate(labels))
    path = tmp_path / name
    path.write_text("a,b,label\n" + rows)
    return path


@pytest.mark.parametrize("bad, words", [
    ("", "line 7: the label cell is empty; every row needs a label"),
    ("nan", "line 7: label 'nan' is not a finite number"),
    ("-inf", "line 7: label '-inf' is not a finite number"),
    ("?", "line 7: label '?' is not a number, but the other labels are; fix or remove that row"),
])
def test_csv_label_cells_that_would_become_a_class_or_a_nan_target(tmp_path, bad, words):
    labels = [str(i % 3) for i in range(40)]
    labels[5] = bad                                          # the 6th data row: line 7 after the header
    with pytest.raises(DataError) as e:
        load_dataset(_csv(tmp_path, labels))
    assert str(e.value) == f"{tmp_path / 'd.csv'} {words}"


def test_csv_words_as_labels_are_still_classes(tmp_path):
    d = load_dataset(_csv(tmp_path, ["cat", "dog", "3d"] * 10))
    assert d.num_classes == 3 and d.classes == ["3d", "cat", "dog"]


def _idx(folder, n_train=40, n_test=10, train_labels=None, test_labels=None):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 4, 4), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte",
              (np.arange(n_train) % 3 if train_labels is None else train_labels).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 4, 4), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte",
              (np.arange(n_test) % 3 if test_labels is None else test_labels).astype(np.uint8))
    return folder


def test_idx_label_255_beyond_the_classes_is_named(tmp_path):
    labels = np.arange(40) % 3
    labels[17] = 255
    with pytest.raises(DataError) as e:
        load_dataset(_idx(tmp_path / "m", train_labels=labels))
    assert str(e.value) == (f"{tmp_path / 'm' / 'train-labels-idx1-ubyte'}: label 255 (sample 17) leaves classes "
                            f"3..254 without any training sample; labels must be 0..K-1 with every class present")
    test = np.arange(10) % 3
    test[4] = 255
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: label 255 \(sample 4\) is not one of the "
                                        r"training files' classes 0..2"):
        load_dataset(_idx(tmp_path / "t", test_labels=test))


@pytest.mark.parametrize("which", ["train", "t10k"])
def test_a_zero_image_idx_file_is_named(tmp_path, which):
    folder = _idx(tmp_path / "m", **({"n_train": 0, "train_labels": np.zeros(0)} if which == "train"
                                     else {"n_test": 0, "test_labels": np.zeros(0)}))
    with pytest.raises(DataError) as e:
        load_dataset(folder)
    assert str(e.value) == f"{folder / f'{which}-images-idx3-ubyte'} holds no images (its header says 0)"


def test_empty_validation_or_test_split_is_named_with_its_flag(tmp_path):
    path = _csv(tmp_path, [str(i % 2) for i in range(8)])
    with pytest.raises(DataError, match=r"--val-fraction 0.05 of 8 samples leaves the validation split empty; "
                                        r"give more data or a larger --val-fraction \(or 0 for no validation\)"):
        load_dataset(path, val_fraction=0.05, test_fraction=0.25)
    with pytest.raises(DataError, match="--test-fraction 0.05 of 8 samples leaves the test split empty"):
        load_dataset(path, val_fraction=0.25, test_fraction=0.05)
    assert len(load_dataset(path, val_fraction=0.0, test_fraction=0.25).val[0]) == 0   # 0: no validation, allowed


def _train(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTBP_", "PMI_"))}
    return subprocess.run([sys.executable, "-m", "distbp.train", "--no-progress", *args], capture_output=True,
                          text=True, timeout=120, check=False, env={**env, "PYTHONPATH": ROOT, "DISTBP_NO_MPI": "1"})


@pytest.mark.parametrize("args, line", [
    (["--batch-size", str(10**12)], "invalid batch_size 1000000000000: must be at most 2147483647"),
    (["--hidden", str(10**9)], "invalid hidden [1000000000]: each size must be at most 16777216"),
])
def test_absurd_sizes_are_one_line_and_exit_2(tmp_path, args, line):
    result = _train(*args, "--checkpoint-dir", str(tmp_path))
    assert result.returncode == 2 and result.stderr == f"distbp.train: error: {line}\n", result.stderr


def test_a_nan_label_is_named_by_the_command_not_blamed_on_the_learning_rate(tmp_path):
    labels = [str(i % 3) for i in range(40)]
    labels[2] = "nan"
    result = _train("--dataset", str(_csv(tmp_path, labels)), "--checkpoint-dir", str(tmp_path / "c"))
    assert result.returncode == 2 and "line 4: label 'nan' is not a finite number" in result.stderr
    assert "--lr" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_model_too_big_for_the_memory_is_refused_before_training():
    class P:
        def __init__(self, n):
            self.data = np.zeros(n, np.float32)
    params = [P(1000), P(24)]                                       # 4096 bytes of weights
    check_fits(params, "sgd", available=3 * 4096)                   # weights + grads + momentum
    with pytest.raises(UsageError, match=r"needs at least 0.0 GiB to train .* adam's state\) but 0.0 GiB are "
                                         r"available; use a smaller --hidden"):
        check_fits(params, "adam", available=3 * 4096)
    with pytest.raises(UsageError, match="on each rank"):
        check_fits(params, "sgd", ranks_per_machine=2, available=3 * 4096 * 1.5)
