"""Built-in datasets, the seeded split, and normalisation from the training split only."""
import os

import numpy as np
import pytest

from distbp import data
from distbp.data import DataError, load_dataset, split_indices


def test_digits_is_the_uci_set_of_1797_images_in_10_classes():
    d = load_dataset("digits")
    assert sum(len(s[0]) for s in (d.train, d.val, d.test)) == 1797
    assert d.train[0].shape[1:] == (64,) and d.input_shape == (64,) and d.image_shape == (1, 8, 8)
    assert d.num_classes == 10 and d.task == "classification" and d.name == "digits"
    with np.load(os.path.join(os.path.dirname(data.__file__), "digits.npz")) as f:
        assert f["images"].dtype == np.uint8 and f["images"].max() == 16
        # class counts of the UCI test set as published (sklearn's digits.rst: about 180 per class)
        assert np.bincount(f["target"]).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_split_is_disjoint_complete_and_fixed_by_the_seed():
    tr, va, te = split_indices(100, seed=3, val_fraction=0.1, test_fraction=0.25)
    assert (len(tr), len(va), len(te)) == (65, 10, 25)
    assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(100))
    again = split_indices(100, seed=3, val_fraction=0.1, test_fraction=0.25)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    assert not np.array_equal(tr, split_indices(100, seed=4, val_fraction=0.1, test_fraction=0.25)[0])


def test_normalisation_uses_training_statistics_only():
    d = load_dataset("digits", seed=5)
    with np.load(os.path.join(os.path.dirname(data.__file__), "digits.npz")) as f:
        raw = f["images"].reshape(-1, 64).astype(np.float64)
    tr, va, _ = split_indices(1797, 5, 0.1, 0.2)
    mean, std = raw[tr].mean(), raw[tr].std()   # images: one scalar mean/std over training pixels
    np.testing.assert_allclose(d.val[0], (raw[va] - mean) / std, rtol=1e-6, atol=1e-6)
    assert abs(d.val[0].mean()) > 1e-4   # validation is not re-centred on its own statistics


def test_tabular_features_are_standardised_per_feature_with_constant_features_kept_finite(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("".join(f"{i},7,{i % 2}\n" for i in range(40)))
    d = load_dataset(path, seed=0)
    X = d.train[0]
    np.testing.assert_allclose(X.mean(axis=0), [0, 0], atol=1e-6)
    np.testing.assert_allclose(X.std(axis=0), [1, 0], atol=1e-6)


@pytest.mark.parametrize("name, task, outputs", [("xor", "classification", 2), ("regression", "regression", 1),
                                                  ("sine", "regression", 1)])
def test_synthetic_builtins(name, task, outputs):
    d = load_dataset(name, seed=1)
    assert d.task == task and d.num_outputs == outputs
    assert np.array_equal(d.train[0], load_dataset(name, seed=1).train[0])


def test_xor_labels_follow_the_sign_rule():
    d = load_dataset("xor", seed=0, val_fraction=0.0, test_fraction=0.1)
    X, y = d.train
    # standardising per feature keeps signs only approximately; the raw rule is x0*x1 > 0 (means ~0)
    assert np.mean((X[:, 0] * X[:, 1] > 0) == (y == 1)) > 0.97


def test_unknown_dataset_name_is_one_clear_error():
    with pytest.raises(DataError, match="neither a built-in .*digits.* nor an existing file or folder"):
        load_dataset("no-such-set")
