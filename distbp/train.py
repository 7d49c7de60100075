"""`python -m distbp.train`: train a zoo model on a dataset, alone or data parallel under mpirun.

Reads top to bottom: config -> communicator -> resume point -> seed -> data -> model -> optimizer ->
loop (step, log, checkpoint, validate) -> test metrics. Every rank runs the same code and calls every
collective in the same order; only rank 0 prints, shows the bar, writes logs and checkpoints.

Data parallelism is exact by construction: the global batches depend on (seed, epoch, batch size)
only; each rank takes a contiguous slice and its loss is `sum of per-sample losses / global batch
size`, so the sum over ranks of the gradients is the single-process mean gradient, uneven last batch
included (PAINS.md #3, #8)."""
from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy

from . import backend, distributed, optim
from .autograd import no_grad, tensor
from .checkpoint import CheckpointError, checkpoint_path, latest, load, prune, restore, save
from .config import RESUME_KEYS, ConfigError, TrainConfig, config_from_dict, parse_config
from .data import DataError, global_batches, load_dataset, num_batches, shard, shard_bounds
from .metrics import (
    classification_summary,
    confusion_matrix,
    format_confusion_matrix,
    regression_summary,
    regression_sums,
)
from .models import build_model
from .nn import functional as F


class UsageError(Exception):
    """A user mistake or a run that cannot go on; str(e) is the one line printed on stderr."""


_OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


# ----- pieces of the loop (also used by distbp.search) -----
def make_optimizer(cfg: TrainConfig, params):
    cls = getattr(optim, _OPTIMIZERS[cfg.optimizer], None)
    if cls is None:
        raise UsageError(f"optimizer {cfg.optimizer!r} is not available in this build of distbp.optim; "
                         f"use --optimizer sgd")
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer in ("sgd", "rmsprop"):
        kwargs["momentum"] = cfg.momentum
    return cls(params, **kwargs)


def make_model(cfg: TrainConfig, data):
    try:
        return build_model(cfg.model, data.input_shape, data.num_outputs, hidden=cfg.hidden,
                           activation=cfg.activation, image_shape=data.image_shape, dropout=cfg.dropout)
    except ValueError as e:
        raise UsageError(f"cannot build model {cfg.model!r}: {e}") from None


def loss_sum(output, target, task: str):
    """Sum of per-sample losses (cross entropy, or squared error summed over the outputs)."""
    if task == "classification":
        return F.cross_entropy(output, target, reduction="sum")
    return F.mse_loss(output, target, reduction="sum")


def train_step(model, optimizer, X, y, global_batch: int, task: str, comm, device: str = "cpu") -> float:
    """One optimizer step on this rank's slice (X, y) of a global batch; returns the global mean loss.

    `model` is the DistributedDataParallel wrapper when there are several ranks: its backward sums
    the gradients over ranks (average=False), which with the loss divided by the GLOBAL batch size
    gives exactly the single-process mean gradient. The optimizer is not stepped when the loss is
    not finite (the caller stops the run)."""
    model.train()
    optimizer.zero_grad()
    out = model(tensor(backend.to_device(X, device)))
    target = backend.to_device(y, device)
    total = loss_sum(out, target, task)
    per_sample = 1 if task == "classification" else int(numpy.prod(y.shape[1:]))
    (total / (global_batch * per_sample)).backward()
    loss = comm.allreduce(numpy.array([float(total.item())]))[0] / (global_batch * per_sample)
    if not math.isfinite(loss):
        return loss
    optimizer.step()
    return loss


def evaluate(model, X, y, task: str, num_classes, comm, device: str = "cpu", chunk: int = 1024) -> dict:
    """Metrics over a whole split: each rank scores its contiguous shard, counts are summed exactly."""
    model.eval()
    start, stop = shard_bounds(len(X), comm.rank, comm.size)
    cm = numpy.zeros((num_classes, num_classes), numpy.int64) if task == "classification" else None
    sums = numpy.zeros(5) if task == "regression" else None
    loss = numpy.zeros(1)
    with no_grad():
        for i in range(start, max(start, stop), chunk):
            j = min(i + chunk, stop)
            out = model(tensor(backend.to_device(X[i:j], device)))
            loss[0] += float(loss_sum(out, backend.to_device(y[i:j], device), task).item())
            pred = backend.to_numpy(out.data)
            if cm is not None:
                cm += confusion_matrix(y[i:j], pred.argmax(axis=1), num_classes)
            else:
                sums += regression_sums(y[i:j], pred)
    comm.allreduce(loss)
    n = max(len(X), 1)
    if cm is not None:
        comm.allreduce(cm)
        return {"loss": float(loss[0]) / n, **classification_summary(cm)}
    comm.allreduce(sums)
    return {"loss": float(loss[0]) / (n * max(1, int(numpy.prod(y.shape[1:])))), **regression_summary(sums)}


# ----- resume -----
def _read_checkpoint(cfg: TrainConfig, comm):
    """Rank 0 reads the checkpoint and broadcasts it (or its error, so every rank stops together)."""
    payload = None
    if comm.is_root:
        path = latest(cfg.checkpoint_dir) if cfg.resume == "latest" else cfg.resume
        try:
            if path is None:
                raise CheckpointError(f"--resume: no checkpoint (ckpt-*.safetensors) in {cfg.checkpoint_dir}; "
                                      f"give --checkpoint-dir or --resume PATH")
            payload = ("ok", load(path))
        except CheckpointError as e:
            payload = ("error", str(e))
    status, value = comm.bcast_obj(payload)
    if status == "error":
        raise CheckpointError(value)
    return value


def _resume_config(cfg: TrainConfig, explicit: set, ckpt) -> TrainConfig:
    """The run's settings with the checkpoint's values for keys that decide the result.

    A key the user set explicitly to another value is an error: silently continuing with other
    hyperparameters would not be the run that was saved."""
    try:
        saved = config_from_dict(ckpt.meta["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} has no usable config ({e})") from None
    for key in RESUME_KEYS:
        mine, theirs = getattr(cfg, key), getattr(saved, key)
        if mine != theirs:
            if key in explicit:
                raise CheckpointError(f"checkpoint {ckpt.path} was written with {key}={theirs!r} but this run "
                                      f"asks for {key}={mine!r}; resume with the same {key}, or start a new run "
                                      f"in another --checkpoint-dir")
            setattr(cfg, key, theirs)
    return cfg


# ----- output (rank 0) -----
class _Log:
    def __init__(self, comm, cfg: TrainConfig, total: int, start: int):
        self.root = comm.is_root
        self.file = None
        failure = None
        if self.root and cfg.log_dir:
            try:
                os.makedirs(cfg.log_dir, exist_ok=True)
                # kept open for the whole run, closed in close()
                self.file = open(os.path.join(cfg.log_dir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                failure = f"cannot write the metrics log in --log-dir {cfg.log_dir}: {e.strerror or e}"
        failure = comm.bcast_obj(failure)   # every rank stops together, none waits in a collective
        if failure:
            raise UsageError(failure)
        self.bar = None
        if self.root and cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=False)

    def record(self, **fields):
        if self.file is not None:
            self.file.write(json.dumps(fields) + "\n")
            self.file.flush()

    def print(self, text: str):
        if not self.root:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def _describe(metrics: dict, task: str) -> str:
    if task == "classification":
        return f"loss {metrics['loss']:.4f} acc {metrics['accuracy']:.4f}"
    return f"mse {metrics['mse']:.4g} mae {metrics['mae']:.4g} r2 {metrics['r2']:.4f}"


def _public(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "confusion_matrix"}


# ----- the run -----
def run(cfg: TrainConfig, explicit: set = frozenset(), comm=None) -> dict:
    """Train as configured; returns the final test metrics (on every rank)."""
    comm = comm or distributed.init()
    ckpt = None
    if cfg.resume:
        ckpt = _read_checkpoint(cfg, comm)
        cfg = _resume_config(cfg, set(explicit), ckpt)
    if cfg.device == "cuda" and not backend.cuda_available():
        raise UsageError("--device cuda: no usable GPU or cupy here; install distbp[cuda] or use --device cpu")
    backend.set_default_dtype(cfg.dtype)
    backend.manual_seed(cfg.seed)
    try:
        data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                            label_column=cfg.label_column or None)
    except ValueError as e:
        raise DataError(str(e)) from None
    dtype = numpy.dtype(cfg.dtype)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = [
        (X.astype(dtype), y.astype(dtype) if data.task == "regression" else y)
        for X, y in (data.train, data.val, data.test)]
    model = make_model(cfg, data).to(cfg.device)
    optimizer = make_optimizer(cfg, model.parameters())
    step, epoch, position = 0, 0, 0
    if ckpt is not None:
        restore(ckpt, model, optimizer)
        backend.set_rng_state(ckpt.meta["rng"])
        step, epoch, position = ckpt.meta["step"], ckpt.meta["epoch"], ckpt.meta["batch"]
    # Several ranks: gradients are summed over ranks in buckets, overlapped with backward. The
    # constructor checks every rank built the same model and broadcasts rank 0's weights.
    ddp = distributed.DistributedDataParallel(model, comm, average=False) if comm.size > 1 else None
    net = ddp if ddp is not None else model   # train through `net`; save and evaluate `model`

    per_epoch = num_batches(len(Xtr), cfg.batch_size)
    total = per_epoch * cfg.epochs if not cfg.steps else min(per_epoch * cfg.epochs, cfg.steps)
    log = _Log(comm, cfg, total, step)
    if ckpt is not None:
        log.print(f"resumed from {ckpt.path} at step {step} (epoch {epoch + 1}, batch {position})")
    log.print(f"{data!r}; model {cfg.model} {sum(p.data.size for p in model.parameters())} parameters; "
              f"{comm.size} rank(s); {total} steps of global batch {cfg.batch_size}")

    def save_checkpoint():
        meta = {"step": step, "epoch": epoch, "batch": position, "rng": backend.get_rng_state(),
                "config": cfg.to_dict(), "world_size": comm.size}
        save(checkpoint_path(cfg.checkpoint_dir, step), model, optimizer, meta, comm)
        if comm.is_root:
            prune(cfg.checkpoint_dir, cfg.keep_checkpoints)

    last_saved = step if ckpt is not None else -1
    try:
        while step < total:
            batches = global_batches(len(Xtr), cfg.batch_size, cfg.seed, epoch)
            t_epoch, seen, loss_sum_epoch, comm_wait = time.perf_counter(), 0, 0.0, 0.0
            while position < len(batches) and step < total:
                batch = batches[position]
                mine = shard(batch, comm.rank, comm.size)
                t0 = time.perf_counter()
                with numpy.errstate(all="ignore"):  # a diverging loss is reported below, once, by step
                    loss = train_step(net, optimizer, Xtr[mine], ytr[mine], len(batch), data.task, comm,
                                      cfg.device)
                if ddp is not None:
                    comm_wait += ddp.last_comm_wait_s
                if not math.isfinite(loss):
                    kept = (f"; the last checkpoint {checkpoint_path(cfg.checkpoint_dir, last_saved)} is intact"
                            if last_saved >= 0 else "")
                    raise UsageError(f"loss is {loss} at step {step + 1} (epoch {epoch + 1}): training diverged, "
                                     f"stopped before updating the weights{kept}; try a smaller --lr")
                step, position = step + 1, position + 1
                seen += len(batch)
                loss_sum_epoch += loss * len(batch)
                rate = len(batch) / max(time.perf_counter() - t0, 1e-9)
                log.record(split="train", step=step, epoch=epoch + 1, loss=loss, samples_per_s=rate)
                if log.bar is not None:
                    log.bar.update(1)
                    log.bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.0f}")
                if position == len(batches):
                    epoch, position = epoch + 1, 0
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save_checkpoint()
                    last_saved = step
                if position == 0:
                    break
            if position == 0 and seen:   # an epoch just ended: validate
                rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
                line = f"epoch {epoch}/{cfg.epochs} step {step} train loss {loss_sum_epoch / seen:.4f}"
                if len(Xva):
                    val = evaluate(model, Xva, yva, data.task, data.num_classes, comm, cfg.device)
                    log.record(split="val", step=step, epoch=epoch, **_public(val))
                    line += f" | val {_describe(val, data.task)}"
                if ddp is not None:  # PAINS.md #10: show what communication costs
                    share = comm_wait / max(time.perf_counter() - t_epoch, 1e-9)
                    line += f" | comm wait {100 * share:.1f}% of the epoch"
                log.print(f"{line} | {rate:.0f} samples/s")
        if last_saved != step:
            save_checkpoint()
        test = evaluate(model, Xte, yte, data.task, data.num_classes, comm, cfg.device)
        log.record(split="test", step=step, epoch=epoch, **test)
        if data.task == "classification":
            log.print(f"test accuracy {test['accuracy']:.4f} | macro precision {test['precision']:.4f} "
                      f"recall {test['recall']:.4f} F1 {test['f1']:.4f} ({len(Xte)} samples)")
            log.print("confusion matrix (rows: true class, columns: predicted)\n"
                      + format_confusion_matrix(test["confusion_matrix"], data.classes or None))
        else:
            log.print(f"test {_describe(test, data.task)} ({len(Xte)} samples)")
        log.print(f"checkpoint: {checkpoint_path(cfg.checkpoint_dir, step)}")
    finally:
        log.close()
    return test


def main(argv=None) -> int:
    """Entry point; every user mistake ends as one line on stderr and exit status 2."""
    try:
        cfg, explicit = parse_config(argv)
        run(cfg, explicit)
        return 0
    except (UsageError, ConfigError, DataError, CheckpointError) as e:
        if distributed.get_comm().is_root:
            message = " ".join(str(e).split())   # always one line
            print(f"distbp.train: error: {message}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        if distributed.get_comm().is_root:
            print("distbp.train: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
