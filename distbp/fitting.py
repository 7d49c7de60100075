"""`distbp.fit(model, data, **settings)`: what `python -m distbp.train` does, for code that already has
a model and its data (a notebook). It runs the command's own `run` -- the same loop, the same data
path, DistributedDataParallel when launched under mpiexec, checkpoints, logs -- with the given model
and data in place of the configured ones, and returns the history.

    import numpy as np, distbp as db
    from distbp import nn
    X = np.random.default_rng(0).standard_normal((1000, 20)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 2))
    history = db.fit(model, (X, y), epochs=5, lr=0.05, checkpoint_dir="runs/ck")
    history["test"]["accuracy"]

Settings are the command's (TrainConfig keys: epochs, batch_size, lr, optimizer, lr_schedule,
accumulate, clip_grad_norm, early_stopping, eval_every, checkpoint_dir, resume, log_dir, seed, ...),
checked the same way. `loss`: a registered name, `module:factory`, or a callable loss(output,
target) that sums over the samples. `dtype` defaults to that of the model's parameters."""
from __future__ import annotations

import os

from . import distributed
from .data import Dataset, load_dataset
from .data.datasets import dataset_from_arrays
from .train import run
from .training import user_code
from .training.config import ConfigError, config_from_dict
from .training.trainer import UsageError


def fit(model, data, **settings) -> dict:
    """Train `model` on `data` ((X, y) arrays, a dataset name or path, or a Dataset) as the command
    does; returns {"train": [per-step records], "val": [per-validation records], "test": metrics}.
    Raises ConfigError, DataError, UsageError or CheckpointError with the command's one-line messages."""
    for key in ("model", "dataset"):
        if key in settings:
            raise ConfigError(f"fit() takes the {key} as an argument, not as the setting {key!r}")
    loss = settings.pop("loss", "")
    if not isinstance(loss, str):   # a callable loss: used as given, checked below
        loss_fn, loss = loss, ""
    else:
        loss_fn = None
    params = list(model.parameters())
    if params and "dtype" not in settings:
        settings["dtype"] = str(params[0].data.dtype)
    name = data if isinstance(data, (str, os.PathLike)) else getattr(data, "name", "arrays")
    cfg = config_from_dict({"progress": False, **settings, "loss": loss,
                            "model": f"python:{type(model).__name__}", "dataset": str(name)})
    dataset = _dataset(data, cfg)
    X = dataset.train[0].astype(cfg.dtype)
    try:
        user_code.check_output(model, X, dataset.num_outputs, dataset.task, type(model).__name__)
        if loss_fn is not None:
            user_code.check_loss(loss_fn, model, X, dataset.train[1], "given to fit()")
    except user_code.UserCodeError as e:
        raise UsageError(str(e)) from None
    history = []
    test = run(cfg, set(settings), distributed.init(), model=model, data=dataset, history=history,
               loss_fn=loss_fn)
    return {"train": [r for r in history if r["split"] == "train"],
            "val": [r for r in history if r["split"] == "val"], "test": test}


def _dataset(data, cfg) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(os.fspath(data), cfg.seed, cfg.val_fraction, cfg.test_fraction,
                            label_column=cfg.label_column or None)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return dataset_from_arrays(data[0], data[1], "arrays", cfg.seed, cfg.val_fraction, cfg.test_fraction)
    raise ConfigError(f"fit() data must be (X, y) arrays, a dataset name or path, or a Dataset; got "
                      f"{type(data).__name__}")
