"""`python -m distbp.train`: train a zoo model on a dataset, alone or data parallel under mpirun.

Reads top to bottom: config -> communicator -> resume point -> seed -> data -> model -> optimizer ->
Trainer -> loop (step, log, checkpoint, validate) -> test metrics. Every rank runs the same code and
calls every collective in the same order; only rank 0 prints, shows the bar, writes logs and
checkpoints. Why N ranks train exactly like one process: distbp/training/trainer.py."""
from __future__ import annotations

import contextlib
import math
import sys
import time

import numpy

from . import backend, distributed
from ._env import EnvError
from ._env import check_all as check_environment
from .data import DataError, global_batches, load_dataset, num_batches
from .distributed import trace
from .distributed.agreement import SettingsMismatchError
from .distributed.gpu import DeviceError, last_choice, setup_cuda
from .distributed.pipeline import format_schedules
from .distributed.pipeline.schedule import build_schedules
from .training import rundir
from .training.checkpoint import CheckpointError, load_shared
from .training.config import ConfigError, TrainConfig, parse_config, resume_config, resume_directory
from .training.consistency import check_data_and_model, check_settings
from .training.fingerprint import check_same_dataset, dataset_fingerprint
from .training.memory import check_fits
from .training.metrics import format_confusion_matrix
from .training.run_options import control_for, loss_for
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


def _diverged(trainer: Trainer, log: RunLog, result, last_path: str | None) -> UsageError:
    log.flush(trainer)                       # every rank is here at the same step: collectives are safe
    loss = trainer.mean_losses([result])[0]
    what = f"loss is {loss}" if not math.isfinite(loss) else f"loss is {loss:.4g} but its gradient is not finite"
    kept = f"; the last checkpoint {last_path} is intact" if last_path else ""
    return UsageError(f"{what} at step {trainer.global_step + 1} (epoch {trainer.epoch + 1}): training diverged, "
                      f"stopped before updating the weights{kept}; try a smaller --lr")


def run(cfg: TrainConfig, explicit: set = frozenset(), comm=None, model=None, data=None, history=None,
        loss_fn=None) -> dict:
    """Train as configured; returns the final test metrics (on every rank). `model` and `data` (a
    Dataset) and `loss_fn` replace the configured ones (distbp.fit); `history`, a list, receives every
    log record."""
    comm = comm or distributed.init()
    check_settings(comm, cfg)      # ranks given different flags or DISTBP_* settings: refused here
    ckpt = None
    if "checkpoint_dir" not in explicit and cfg.resume in ("", "latest"):   # checkpoints/run-N, one per run
        cfg.checkpoint_dir = rundir.versioned_directory(cfg.checkpoint_dir, bool(cfg.resume), comm)
    if cfg.resume:
        cfg = resume_directory(cfg, set(explicit))
        ckpt = load_shared(cfg.resume, cfg.checkpoint_dir, comm)
        cfg = resume_config(cfg, set(explicit), ckpt)
    if cfg.device == "cuda":   # GPU path (#14): one GPU per rank by local rank; the GPU communicator
        try:
            comm = setup_cuda(comm)
        except DeviceError as e:
            raise UsageError(str(e)) from None
    backend.set_default_dtype(cfg.dtype)
    backend.manual_seed(cfg.seed)
    if cfg.trace:   # --trace (#16): checked before any work, recorded from here on
        _start_trace(cfg.trace, comm)
    try:
        with trace.span("load dataset"):
            data = data or load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction,
                                        label_column=cfg.label_column or None)
    except ValueError as e:
        raise DataError(str(e)) from None
    if ckpt is not None:   # a resume trains on the data it was saved with, or not at all
        check_same_dataset(ckpt, data, cfg.dataset)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = _splits(data, cfg.dtype)
    model = (model if model is not None else model_for(cfg, data)).to(cfg.device)
    check_data_and_model(comm, data, model, cfg.dataset)
    loss_fn = loss_fn or loss_for(cfg, model, data, Xtr, ytr)
    step_batch = cfg.batch_size * cfg.accumulate   # samples per optimizer step (--accumulate: in N batches)
    per_epoch = num_batches(len(Xtr), step_batch)
    count = sum(p.data.size for p in model.parameters())   # the whole model's size, before any split
    tp_grid = None
    if cfg.tensor_parallel > 1:   # this rank keeps its block of every layer pair
        model, tp_grid = tensor_parallel_for(cfg, model, comm)
    if cfg.pipeline_stages > 1:   # this rank keeps its stage's layers; the rest of the model is dropped
        sizes = {cfg.batch_size, len(Xtr) - (per_epoch - 1) * cfg.batch_size}
        model = pipeline_stage_for(cfg, model, comm, data.task, sizes, grid=tp_grid)
    params = list(model.parameters())
    check_fits(params, cfg.optimizer, distributed.local_size(comm))   # one line, not the kernel's OOM kill
    if cfg.zero and params:   # the optimizer state sharded over the data-parallel ranks (of this stage and shard)
        grid = model.grid if cfg.pipeline_stages > 1 else tp_grid
        optimizer = zero_optimizer_for(cfg, model, grid.dp_comm if grid is not None else comm)
    else:            # a stage of activations only has none
        optimizer = optimizer_for(cfg, params) if params else None
    trainer = Trainer(model, optimizer, comm, data.task, cfg.device, batches_per_epoch=per_epoch,
                      checkpoint_dir=cfg.checkpoint_dir, keep_checkpoints=cfg.keep_checkpoints, config=cfg.to_dict(),
                      micro_batches=cfg.micro_batches, micro_batch_size=cfg.micro_batch_size, tp_grid=tp_grid,
                      deterministic_groups=cfg.deterministic_groups if cfg.deterministic else 0,
                      loss_fn=loss_fn, accumulate=cfg.accumulate, clip_grad_norm=cfg.clip_grad_norm)
    trainer.control = control = control_for(cfg, optimizer, per_epoch)   # before resume: it restores it
    if ckpt is not None:
        trainer.resume(ckpt)
    # the checkpoint folder becomes this run's (locked, checked for room) before any training (#16)
    owner = rundir.claim(cfg.checkpoint_dir, comm, resumed=ckpt.meta if ckpt is not None else None,
                         overwrite=cfg.overwrite_checkpoint_dir,
                         need_bytes=3 * count * numpy.dtype(cfg.dtype).itemsize + (1 << 20))
    trainer.run_meta = {"run_id": owner.run_id, "dataset": dataset_fingerprint(data)}

    total = per_epoch * cfg.epochs if not cfg.steps else min(per_epoch * cfg.epochs, cfg.steps)
    log = RunLog(comm, cfg.log_dir, cfg.progress, total, trainer.global_step, error=UsageError)
    for note in owner.notes:
        log.print(note)
    log.history = history
    if ckpt is not None:
        log.print(f"resumed from {ckpt.path} at step {trainer.global_step} (epoch {trainer.epoch + 1}, "
                  f"batch {trainer.position})")
    grid = trainer.grid
    layout = (f"{comm.size} rank(s) as {grid.num_stages} pipeline stages x {grid.dp_size} replica(s) "
              f"(cut at {_cut_points(trainer.model.bounds)}), schedule {cfg.schedule}" if grid is not None
              else f"{comm.size} rank(s)")
    if tp_grid is not None:   # the tensor axis named too: "... as [P pipeline stages x] T tensor-parallel shards x R"
        stages = f"{tp_grid.num_stages} pipeline stages x " if grid is not None else ""
        layout = (f"{comm.size} rank(s) as {stages}{tp_grid.tp_size} tensor-parallel shards x {tp_grid.dp_size} "
                  f"replica(s)" + (f", schedule {cfg.schedule}" if grid is not None else ""))
    if cfg.zero:
        layout += ", optimizer state sharded (ZeRO-1)"
    if cfg.deterministic:
        layout += f", deterministic ({cfg.deterministic_groups} groups per batch, 1 BLAS thread)"
    if cfg.device == "cuda" and comm.size > 1:   # how GPU gradients cross ranks (#14, docs/gpu.md)
        layout += f", GPU gradients through {last_choice()[0]}"
    log.print(f"{data!r}; model {cfg.model} {count} parameters; {layout}; {total} steps of global batch "
              f"{step_batch}" + (f" ({cfg.accumulate} x {cfg.batch_size})" if cfg.accumulate > 1 else ""))
    last_saved, last_path = (trainer.global_step, ckpt.path) if ckpt is not None else (-1, None)
    if trainer.global_step >= total:
        log.print(f"nothing left to do: the run is at step {trainer.global_step} of its {total}")
    try:
        while trainer.global_step < total and not control.stopped:
            epoch, start = trainer.epoch, trainer.position
            batches = global_batches(len(Xtr), step_batch, cfg.seed, epoch)
            t_epoch, wait_before = time.perf_counter(), trainer.comm_wait_s
            for batch in batches[start:start + total - trainer.global_step]:
                t0 = time.perf_counter()
                with numpy.errstate(all="ignore"), trace.span("step", step=trainer.global_step):
                    result = trainer.step_on(Xtr, ytr, batch)   # a diverging loss is reported below, once
                if not result.updated:
                    raise _diverged(trainer, log, result, last_path)
                log.train_step(trainer, result, len(batch) / max(time.perf_counter() - t0, 1e-9))
                control.after_step()
                if len(Xva) and control.eval_due(trainer.global_step, trainer.position == 0):
                    validate(trainer, control, log, Xva, yva, data, cfg)   # before this step's checkpoint
                if cfg.checkpoint_every and trainer.global_step % cfg.checkpoint_every == 0:
                    log.flush(trainer)       # the log on disk never lags behind a checkpoint
                    with trace.span("checkpoint", step=trainer.global_step):
                        last_path = trainer.save_checkpoint()
                    last_saved = trainer.global_step
                elif trainer.global_step % LOG_EVERY == 0:
                    log.flush(trainer)
                if control.stopped:
                    break
            if control.stopped:
                best = f"{control.best:.4f} at step {control.best_step}"
                log.print(f"early stopping at step {trainer.global_step}: the validation loss has not improved for "
                          f"{control.bad_evals} validations (best {best})")
                break
            if trainer.epoch == epoch:       # stopped by --steps inside the epoch
                continue
            log.flush(trainer)               # the epoch ended: its training loss, then validation
            seconds = max(time.perf_counter() - t_epoch, 1e-9)
            line = f"epoch {trainer.epoch}/{cfg.epochs} step {trainer.global_step} train loss {log.take_epoch_loss():.4f}"
            if len(Xva) and not cfg.eval_every:   # validated at the epoch's last step, above
                line += f" | val {describe(control.last_val, data.task)}"
            if comm.size > 1:                # what communication costs: backward's wait for the allreduces
                what = ("rank 0 waited on its neighbours" if trainer.grid is not None
                        else "ZeRO step (reduce-scatter, update, allgather)" if cfg.zero else "comm wait")
                line += f" | {what} {100 * (trainer.comm_wait_s - wait_before) / seconds:.1f}% of the epoch"
            log.print(f"{line} | {sum(map(len, batches[start:])) / seconds:.0f} samples/s")
        log.flush(trainer)
        if last_saved != trainer.global_step:
            with trace.span("checkpoint", step=trainer.global_step):
                last_path = trainer.save_checkpoint()
        test = trainer.evaluate(Xte, yte, data.num_classes)
        log.record(split="test", step=trainer.global_step, epoch=trainer.epoch, **test)
        if data.task == "classification":
            log.print(f"test accuracy {test['accuracy']:.4f} | macro precision {test['precision']:.4f} "
                      f"recall {test['recall']:.4f} F1 {test['f1']:.4f} ({len(Xte)} samples)")
            log.print("confusion matrix (rows: true class, columns: predicted)\n"
                      + format_confusion_matrix(test["confusion_matrix"], data.classes or None))
        else:
            log.print(f"test {describe(test, data.task)} ({len(Xte)} samples)")
        log.print(f"checkpoint: {last_path}")   # the file written last, or resumed from: one that exists
        if cfg.trace:
            log.print(f"trace: {' '.join(_save_trace(cfg.trace, comm))}")
    finally:
        log.close()
        owner.release()
        with contextlib.suppress(OSError):   # after a failure: this rank's timeline so far (no collective)
            trace.save(cfg.trace, merge=False)
    return test


def _save_trace(directory: str, comm) -> list:
    try:
        return trace.save(directory, comm)
    except OSError as e:
        raise UsageError(f"--trace {directory}: cannot write the timeline ({e.strerror or e})") from None


def _start_trace(directory: str, comm) -> None:
    try:
        trace.check_directory(directory)
    except OSError as e:
        raise UsageError(f"--trace {directory}: cannot write there ({e.strerror or e})") from None
    trace.start(comm.rank)


def validate(trainer: Trainer, control, log: RunLog, Xva, yva, data, cfg) -> None:
    """Collective: validation metrics, logged and fed to the schedule and early stopping."""
    log.flush(trainer)                       # the log's train records come before this val record
    with trace.span("evaluate", step=trainer.global_step):
        val = trainer.evaluate(Xva, yva, data.num_classes)
    log.record(split="val", step=trainer.global_step, epoch=trainer.epoch + (trainer.position > 0), **public(val))
    control.after_eval(val, trainer.global_step)
    if cfg.eval_every:
        lr = control.lr()
        log.print(f"step {trainer.global_step} val {describe(val, data.task)}" + (f" lr {lr:.4g}" if lr is not None else ""))


def _cut_points(bounds) -> str:
    """A pipeline's split points as --partition takes them: layer indices, i:k inside Linear i."""
    return ",".join(f"{p[0]}:{p[1]}" if isinstance(p, tuple) else str(p) for _, p in bounds[:-1])


def show_schedule(cfg: TrainConfig, comm) -> None:
    """Print every stage's timeline of one step for cfg's pipeline (rank 0); no data, no model."""
    stages = cfg.pipeline_stages
    replicas = max(comm.size // (stages * cfg.tensor_parallel), 1)
    micro = micro_batch_count(cfg.batch_size, replicas, stages, cfg.micro_batches, cfg.micro_batch_size)
    if comm.is_root:
        print(f"schedule {cfg.schedule}: {stages} stage(s), {micro} micro-batch(es) per step", flush=True)
        print(format_schedules(build_schedules(cfg.schedule, stages, micro)), flush=True)


def main(argv=None) -> int:
    """Entry point; every user mistake ends as one line on stderr and exit status 2."""
    try:
        check_environment()
        cfg, explicit = parse_config(argv)
        if cfg.show_schedule:
            show_schedule(cfg, distributed.get_comm())
            return 0
        run(cfg, explicit)
        return 0
    except (UsageError, ConfigError, DataError, CheckpointError, EnvError, SettingsMismatchError) as e:
        message = " ".join(str(e).split())   # always one line
        # on one rank or all: the whole job ends with exit status 2 and the line printed once
        return distributed.end_job(2, f"distbp.train: error: {message}")
    except MemoryError as e:   # numpy names the allocation that failed
        return distributed.end_job(2, f"distbp.train: error: out of memory: {e}; use a smaller --hidden or "
                                      f"--batch-size")
    except KeyboardInterrupt:
        return distributed.end_job(130, "distbp.train: interrupted")


if __name__ == "__main__":
    sys.exit(main())
