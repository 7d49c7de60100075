"""MNIST IDX reader: round trips, gzip by content, and one clear error per kind of malformed file."""
import gzip

import numpy as np
import pytest

from distbp.data import DataError, load_dataset, read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip_keeps_values_shape_and_dtype(tmp_path, dtype, name):
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    write_idx(tmp_path / name, a)
    b = read_idx(tmp_path / name)
    assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)


def test_idx_header_bytes_follow_the_mnist_spec(tmp_path):
    write_idx(tmp_path / "x", np.array([[1, 2, 3]], np.uint8))
    # magic 0x00000802 (ubyte, 2 dims), dims 1 and 3 big-endian, then the bytes
    assert (tmp_path / "x").read_bytes() == bytes.fromhex("00000802" "00000001" "00000003" "010203")


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    write_idx(tmp_path / "plain-name", np.ones((2, 2), np.uint8), compress=True)
    assert read_idx(tmp_path / "plain-name").sum() == 4


@pytest.mark.parametrize("raw, words", [
    (b"", "bad magic"),
    (bytes.fromhex("12340801"), "bad magic"),
    (bytes.fromhex("00000803" "00000002"), "truncated: its header"),
    (bytes.fromhex("00000801" "00000004" "0102"), "truncated: shape (4,) needs 4 data bytes, found 2"),
    (bytes.fromhex("00000801" "00000001" "0102"), "longer than its header says"),
])
def test_idx_malformed_file_names_file_and_problem(tmp_path, raw, words):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_idx_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(bytes.fromhex("00000801" "00000003" "010203"))[:-6])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        read_idx(path)


def _mnist_folder(folder, n_train=30, n_test=10, gz=True):
    rng = np.random.default_rng(1)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if n:
            write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
            write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", (np.arange(n) % 3).astype(np.uint8))
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_folder_uses_the_t10k_files_as_test_set(tmp_path, gz):
    d = load_dataset(_mnist_folder(tmp_path, gz=gz), seed=0, val_fraction=0.2)
    assert d.task == "classification" and d.num_classes == 3 and d.image_shape == (1, 4, 4)
    assert [len(s[0]) for s in (d.train, d.val, d.test)] == [24, 6, 10]
    assert d.train[0].shape == (24, 16) and d.train[0].dtype == np.float32
    assert np.array_equal(d.test[1], np.arange(10) % 3)   # test order kept as in the file


def test_mnist_folder_without_test_files_splits_the_training_files(tmp_path):
    d = load_dataset(_mnist_folder(tmp_path, n_train=50, n_test=0), val_fraction=0.1, test_fraction=0.2)
    assert [len(s[0]) for s in (d.train, d.val, d.test)] == [35, 5, 10]


def test_mnist_folder_errors_name_the_missing_or_inconsistent_file(tmp_path):
    with pytest.raises(DataError, match="has no MNIST IDX files"):
        load_dataset(tmp_path)
    _mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*missing"):
        load_dataset(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
    with pytest.raises(DataError, match="10 images but .* has 7 labels"):
        load_dataset(tmp_path)
