"""`python -m distbp.search`: grid search with k-fold cross-validation, as the seed posts describe.

    python -m distbp.search --grid lr=0.01,0.1 --grid hidden=32,64:32 --folds 3 --epochs 5

Every combination of the grid values is trained on k-1 folds of the training split and scored on
the remaining fold (accuracy, or -MSE for regression), k times; the best mean wins, is retrained on
the whole training split and scored once on the untouched test split. All other flags are those of
`python -m distbp.train`. Runs in one process (the folds are small); `grid_search` is the API."""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys

import numpy

from . import backend
from .data import DataError, global_batches, load_dataset, num_batches
from .distributed import SelfComm
from .training.config import FIELDS, ConfigError, TrainConfig, _check_type, _check_values, parse_config
from .training.trainer import Trainer, UsageError, model_for, optimizer_for

_NOT_SEARCHABLE = ("dataset", "checkpoint_dir", "checkpoint_every", "keep_checkpoints", "resume", "log_dir",
                   "progress", "device", "overwrite_checkpoint_dir")


def kfold_indices(n: int, folds: int, seed: int) -> list:
    """(train, validation) index arrays of k folds of a seeded permutation of range(n)."""
    if not 2 <= folds <= n:
        raise ValueError(f"Invalid number of folds: {folds} (need 2 <= folds <= {n} samples)")
    parts = numpy.array_split(numpy.random.default_rng([int(seed), 0xF01D]).permutation(n), folds)
    return [(numpy.concatenate(parts[:i] + parts[i + 1:]), parts[i]) for i in range(folds)]


def fit(cfg: TrainConfig, data, X, y):
    """Train a fresh model on (X, y) for cfg.epochs (capped by cfg.steps); returns its Trainer, or
    None when the run diverged."""
    backend.manual_seed(cfg.seed)
    model = model_for(cfg, data)
    per_epoch = num_batches(len(X), cfg.batch_size)
    trainer = Trainer(model, optimizer_for(cfg, model.parameters()), SelfComm(), data.task,
                      batches_per_epoch=per_epoch)
    total = per_epoch * cfg.epochs
    total = min(total, cfg.steps) if cfg.steps else total
    while trainer.global_step < total:
        for batch in global_batches(len(X), cfg.batch_size, cfg.seed, trainer.epoch)[:total - trainer.global_step]:
            with numpy.errstate(all="ignore"):
                if not trainer.step_on(X, y, batch).updated:
                    return None   # diverged: this setting scores worst
    return trainer


def score(trainer, data, X, y) -> float:
    """Accuracy for classification, -MSE for regression: higher is better either way."""
    if trainer is None:
        return float("-inf")
    m = trainer.evaluate(X, y, data.num_classes)
    return m["accuracy"] if data.task == "classification" else -m["mse"]


def grid_search(base: TrainConfig, grid: dict, folds: int = 3, data=None) -> list:
    """Mean and std of the k-fold score of every grid combination, best first."""
    for key, values in grid.items():
        if key not in FIELDS or key in _NOT_SEARCHABLE:
            raise ConfigError(f"cannot search over {key!r}; searchable keys: "
                              f"{', '.join(k for k in FIELDS if k not in _NOT_SEARCHABLE)}")
        if not values:
            raise ConfigError(f"grid for {key!r} has no values")
    data = data or load_dataset(base.dataset, base.seed, base.val_fraction, base.test_fraction,
                                label_column=base.label_column or None)
    X, y = data.train
    splits = kfold_indices(len(X), folds, base.seed)
    results = []
    for combo in itertools.product(*grid.values()):
        settings = dict(zip(grid, combo))
        cfg = dataclasses.replace(base, **settings)
        _check_values(cfg)
        scores = [score(fit(cfg, data, X[tr], y[tr]), data, X[va], y[va]) for tr, va in splits]
        results.append({"params": settings, "mean": float(numpy.mean(scores)), "std": float(numpy.std(scores)),
                        "scores": scores})
    return sorted(results, key=lambda r: -r["mean"])


def _parse_grid(items: list) -> dict:
    grid = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not text:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. lr=0.01,0.1)")
        if key not in FIELDS:
            raise ConfigError(f"--grid: unknown key {key!r}")
        kind, values = FIELDS[key].type, []
        for raw in text.split(","):
            try:
                value = {"int": int, "float": float, "str": str,
                         "list": lambda s: [int(v) for v in s.split(":")]}[kind](raw.strip())
            except (ValueError, KeyError):
                raise ConfigError(f"--grid {key}: {raw!r} is not a valid value for {key}") from None
            values.append(_check_type(key, value, f"--grid {key}"))
        grid[key] = values
    return grid


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distbp.search", description=__doc__.splitlines()[0],
                                     epilog="Other flags: those of python -m distbp.train.", allow_abbrev=False)
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="values to try for one setting (repeat for more); hidden sizes as 64:32")
    parser.add_argument("--folds", type=int, default=3, help="k of the k-fold cross-validation (default 3)")
    args, rest = parser.parse_known_args(argv)
    try:
        grid = _parse_grid(args.grid) or {"lr": [0.01, 0.05, 0.1]}
        base, _ = parse_config(rest + ["--no-progress"])
        data = load_dataset(base.dataset, base.seed, base.val_fraction, base.test_fraction,
                            label_column=base.label_column or None)
        results = grid_search(base, grid, args.folds, data)
        name = "accuracy" if data.task == "classification" else "-mse"
        print(f"{args.folds}-fold cross-validation on {len(data.train[0])} training samples ({name}):")
        for r in results:
            print(f"  {name} {r['mean']:.4f} +- {r['std']:.4f}  {r['params']}")
        best = dataclasses.replace(base, **results[0]["params"])
        test = score(fit(best, data, *data.train), data, *data.test)
        print(f"best {results[0]['params']}: test {name} {test:.4f} ({len(data.test[0])} samples)")
        return 0
    except (ConfigError, DataError, UsageError, ValueError) as e:
        print(f"distbp.search: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
