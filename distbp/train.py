"""`python -m distbp.train`: train a zoo model on a dataset, alone or data parallel under mpirun.

Reads top to bottom: config -> communicator -> resume point -> seed -> data -> model -> optimizer ->
Trainer -> loop (step, log, checkpoint, validate) -> test metrics. Every rank runs the same code and
calls every collective in the same order; only rank 0 prints, shows the bar, writes logs and
checkpoints. Why N ranks train exactly like one process: distbp/training/trainer.py."""
from __future__ import annotations

import math
import sys
import time

import numpy

from . import backend, distributed
from .data import DataError, global_batches, load_dataset, num_batches
from .distributed.gpu import DeviceError, last_choice, setup_cuda
from .distributed.pipeline import format_schedules
from .distributed.pipeline.schedule import build_schedules
from .training.checkpoint import CheckpointError, load_shared
from .training.config import ConfigError, TrainConfig, parse_config, resume_config
from .training.metrics import format_confusion_matrix
from .training.runlog import RunLog, describe, public
from .training.trainer import (
    Trainer,
    UsageError,
    micro_batch_count,
    model_for,
    optimizer_for,
    pipeline_stage_for,
    tensor_parallel_for,
    zero_optimizer_for,
)

LOG_EVERY = 100   # steps between log points (also at epoch ends and checkpoints): one allreduce of losses


def _splits(data, dtype: str):
    """(train, val, test) as (X, y) in the compute dtype (regression targets too)."""
    dtype = numpy.dtype(dtype)
    return [(X.astype(dtype), y.astype(dtype) if data.task == "regression" else y)
            for X, y in (data.train, data.val, data.test)]


def _diverged(trainer: Trainer, log: RunLog, result, last_saved: int) -> UsageError:
    log.flush(trainer)                       # every rank is here at the same step: collectives are safe
    loss = trainer.mean_losses([result])[0]
    what = f"loss is {loss}" if not math.isfinite(loss) else f"loss is {loss:.4g} but its gradient is not finite"
    kept = f"; the last checkpoint {trainer.checkpoint_path(last_saved)} is intact" if last_saved >= 0 else ""
    return UsageError(f"{what} at step {trainer.global_step + 1} (epoch {trainer.epoch + 1}): training diverged, "
                      f"stopped before updating the weights{kept}; try a smaller --lr")


def run(cfg: TrainConfig, explicit: set = frozenset(), comm=None) -> dict:
    """Train as configured; returns the final test metrics (on every rank)."""
    comm = comm or distributed.init()
    ckpt = None
    if cfg.resume:
        ckpt = load_shared(cfg.resume, cfg.checkpoint_dir, comm)
        cfg = resume_config(cfg, set(explicit), ckpt)
    if cfg.device == "cuda":   # GPU path (#14): one GPU per rank by local rank; the GPU communicator
        try:
            comm = setup_cuda(comm)
        except DeviceError as e:
            raise UsageError(str(e)) from None
    backend.set_default_dtype(cfg.dtype)
    backend.manual_seed(cfg.seed)
    try:
        data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                            label_column=cfg.label_column or None)
    except ValueError as e:
        raise DataError(str(e)) from None
    (Xtr, ytr), (Xva, yva), (Xte, yte) = _splits(data, cfg.dtype)
    model = model_for(cfg, data).to(cfg.device)
    per_epoch = num_batches(len(Xtr), cfg.batch_size)
    count = sum(p.data.size for p in model.parameters())   # the whole model's size, before any split
    tp_grid = None
    if cfg.tensor_parallel > 1:   # this rank keeps its block of every layer pair
        model, tp_grid = tensor_parallel_for(cfg, model, comm)
    if cfg.pipeline_stages > 1:   # this rank keeps its stage's layers; the rest of the model is dropped
        sizes = {cfg.batch_size, len(Xtr) - (per_epoch - 1) * cfg.batch_size}
        model = pipeline_stage_for(cfg, model, comm, data.task, sizes)
    params = list(model.parameters())
    if cfg.zero:     # the optimizer state sharded over the ranks; the weights those of plain data parallelism
        optimizer = zero_optimizer_for(cfg, model, comm)
    else:            # a stage of activations only has none
        optimizer = optimizer_for(cfg, params) if params else None
    trainer = Trainer(model, optimizer, comm, data.task, cfg.device, batches_per_epoch=per_epoch,
                      checkpoint_dir=cfg.checkpoint_dir, keep_checkpoints=cfg.keep_checkpoints, config=cfg.to_dict(),
                      micro_batches=cfg.micro_batches, micro_batch_size=cfg.micro_batch_size, tp_grid=tp_grid)
    if ckpt is not None:
        trainer.resume(ckpt)

    total = per_epoch * cfg.epochs if not cfg.steps else min(per_epoch * cfg.epochs, cfg.steps)
    log = RunLog(comm, cfg.log_dir, cfg.progress, total, trainer.global_step, error=UsageError)
    if ckpt is not None:
        log.print(f"resumed from {ckpt.path} at step {trainer.global_step} (epoch {trainer.epoch + 1}, "
                  f"batch {trainer.position})")
    grid = trainer.grid
    layout = (f"{comm.size} rank(s) as {grid.num_stages} pipeline stages x {grid.dp_size} replica(s), "
              f"schedule {cfg.schedule}" if grid is not None else f"{comm.size} rank(s)")
    if cfg.zero:
        layout += ", optimizer state sharded (ZeRO-1)"
    if tp_grid is not None:
        layout = (f"{comm.size} rank(s) as {tp_grid.tp_size} tensor-parallel shards x {tp_grid.dp_size} "
                  "replica(s)")
    if cfg.device == "cuda" and comm.size > 1:   # how GPU gradients cross ranks (#14, docs/gpu.md)
        layout += f", GPU gradients through {last_choice()[0]}"
    log.print(f"{data!r}; model {cfg.model} {count} parameters; {layout}; {total} steps of global batch "
              f"{cfg.batch_size}")
    last_saved = trainer.global_step if ckpt is not None else -1
    try:
        while trainer.global_step < total:
            epoch, start = trainer.epoch, trainer.position
            batches = global_batches(len(Xtr), cfg.batch_size, cfg.seed, epoch)
            t_epoch, wait_before = time.perf_counter(), trainer.comm_wait_s
            for batch in batches[start:start + total - trainer.global_step]:
                t0 = time.perf_counter()
                with numpy.errstate(all="ignore"):   # a diverging loss is reported below, once, by step
                    result = trainer.step_on(Xtr, ytr, batch)
                if not result.updated:
                    raise _diverged(trainer, log, result, last_saved)
                log.train_step(trainer, result, len(batch) / max(time.perf_counter() - t0, 1e-9))
                if cfg.checkpoint_every and trainer.global_step % cfg.checkpoint_every == 0:
                    log.flush(trainer)       # the log on disk never lags behind a checkpoint
                    trainer.save_checkpoint()
                    last_saved = trainer.global_step
                elif trainer.global_step % LOG_EVERY == 0:
                    log.flush(trainer)
            if trainer.epoch == epoch:       # stopped by --steps inside the epoch
                continue
            log.flush(trainer)               # the epoch ended: its training loss, then validation
            seconds = max(time.perf_counter() - t_epoch, 1e-9)
            line = f"epoch {trainer.epoch}/{cfg.epochs} step {trainer.global_step} train loss {log.take_epoch_loss():.4f}"
            if len(Xva):
                val = trainer.evaluate(Xva, yva, data.num_classes)
                log.record(split="val", step=trainer.global_step, epoch=trainer.epoch, **public(val))
                line += f" | val {describe(val, data.task)}"
            if comm.size > 1:                # what communication costs: backward's wait for the allreduces
                what = ("rank 0 waited on its neighbours" if trainer.grid is not None
                        else "ZeRO step (reduce-scatter, update, allgather)" if cfg.zero else "comm wait")
                line += f" | {what} {100 * (trainer.comm_wait_s - wait_before) / seconds:.1f}% of the epoch"
            log.print(f"{line} | {sum(map(len, batches[start:])) / seconds:.0f} samples/s")
        log.flush(trainer)
        if last_saved != trainer.global_step:
            trainer.save_checkpoint()
        test = trainer.evaluate(Xte, yte, data.num_classes)
        log.record(split="test", step=trainer.global_step, epoch=trainer.epoch, **test)
        if data.task == "classification":
            log.print(f"test accuracy {test['accuracy']:.4f} | macro precision {test['precision']:.4f} "
                      f"recall {test['recall']:.4f} F1 {test['f1']:.4f} ({len(Xte)} samples)")
            log.print("confusion matrix (rows: true class, columns: predicted)\n"
                      + format_confusion_matrix(test["confusion_matrix"], data.classes or None))
        else:
            log.print(f"test {describe(test, data.task)} ({len(Xte)} samples)")
        log.print(f"checkpoint: {trainer.checkpoint_path()}")
    finally:
        log.close()
    return test


def show_schedule(cfg: TrainConfig, comm) -> None:
    """Print every stage's timeline of one step for cfg's pipeline (rank 0); no data, no model."""
    stages = cfg.pipeline_stages
    micro = micro_batch_count(cfg.batch_size, max(comm.size // stages, 1), stages, cfg.micro_batches,
                              cfg.micro_batch_size)
    if comm.is_root:
        print(f"schedule {cfg.schedule}: {stages} stage(s), {micro} micro-batch(es) per step", flush=True)
        print(format_schedules(build_schedules(cfg.schedule, stages, micro)), flush=True)


def main(argv=None) -> int:
    """Entry point; every user mistake ends as one line on stderr and exit status 2."""
    try:
        cfg, explicit = parse_config(argv)
        if cfg.show_schedule:
            show_schedule(cfg, distributed.get_comm())
            return 0
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
