"""Grid search with k-fold cross-validation."""
import numpy as np
import pytest

from distbp.search import grid_search, kfold_indices, main
from distbp.training.config import ConfigError, TrainConfig


def test_kfold_validation_parts_partition_the_samples_and_never_overlap_training():
    folds = kfold_indices(10, 3, seed=0)
    assert [len(va) for _, va in folds] == [4, 3, 3]
    assert np.array_equal(np.sort(np.concatenate([va for _, va in folds])), np.arange(10))
    for tr, va in folds:
        assert not set(tr) & set(va) and len(tr) + len(va) == 10
    with pytest.raises(ValueError, match="Invalid number of folds: 1"):
        kfold_indices(10, 1, 0)


def test_grid_search_ranks_a_learning_rate_that_cannot_learn_last():
    base = TrainConfig(dataset="digits", hidden=[16], epochs=2, progress=False)
    results = grid_search(base, {"lr": [1e-6, 0.1]}, folds=2)
    assert [r["params"]["lr"] for r in results] == [0.1, 1e-6]
    assert len(results[0]["scores"]) == 2 and results[0]["mean"] > 0.8 and results[1]["mean"] < 0.3
    assert results[0]["mean"] == pytest.approx(np.mean(results[0]["scores"]))


def test_grid_search_rejects_keys_that_are_not_hyperparameters():
    with pytest.raises(ConfigError, match="cannot search over 'checkpoint_dir'"):
        grid_search(TrainConfig(), {"checkpoint_dir": ["a"]})


def test_search_command_prints_results_and_test_score(capsys):
    assert main(["--grid", "hidden=8,16:8", "--folds", "2", "--dataset", "xor", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation" in out and "{'hidden': [16, 8]}" in out and "test accuracy" in out


@pytest.mark.parametrize("argv, words", [
    (["--grid", "lr"], "expected KEY=V1,V2"),
    (["--grid", "lr=fast"], "'fast' is not a valid value for lr"),
    (["--grid", "lr=-1", "--epochs", "1"], "invalid lr -1.0"),
    (["--folds", "1", "--epochs", "1"], "Invalid number of folds: 1"),
    (["--nope"], "unrecognized arguments: --nope"),
])
def test_search_bad_input_is_one_line(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distbp.search: error:") and words in err[0]
