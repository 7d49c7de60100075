"""Trainer: a model, its optimizer and the communicator, stepped one global batch at a time.

Data parallelism is exact by construction: each rank passes its contiguous slice of a global batch
and its loss is `sum of per-sample losses / global batch size`, so the sum over ranks of the
gradients (DistributedDataParallel with average=False) is the single-process mean gradient, uneven
last batch included. Dropout is keyed by (optimizer step, global sample index) through
`distbp.random.batch`, so its masks do not depend on how the batch is split either.

No collective of its own runs in a step: `step` returns this rank's loss SUM (`StepResult`), and
`mean_losses` reduces the sums of many steps in one allreduce at a log point. The divergence guard
needs none either: a rank whose own loss is not finite backpropagates nan, so the reduced
gradients -- identical on every rank -- are not finite everywhere, and every rank skips the update
of the same step."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy

from .. import backend
from .. import random as distbp_random
from ..autograd import no_grad, tensor
from ..data import shard_bounds
from ..distributed import DistributedDataParallel, get_comm
from . import checkpoint, registry
from .metrics import classification_summary, confusion_matrix, regression_summary, regression_sums

# The loss each task trains on, summed per sample (the division by the global batch is the Trainer's).
TASK_LOSSES = {"classification": "cross_entropy", "regression": "mse"}


class UsageError(Exception):
    """A user mistake or a run that cannot go on; str(e) is the one line printed on stderr."""


@dataclass
class StepResult:
    """One step on this rank. `loss_sum` is NOT reduced over ranks: `Trainer.mean_losses` does that."""
    loss_sum: float      # this rank's sum of per-sample losses (squared errors summed over outputs)
    samples: int         # this rank's samples in the step
    global_batch: int    # samples in the step on all ranks together
    scale: int           # global_batch * values per sample: the global mean loss is sum of loss_sums / scale
    updated: bool        # False: the gradients were not finite (on every rank alike); the weights were kept

    @property
    def local_loss(self) -> float:
        """This rank's mean loss over its own samples (the global mean on one process)."""
        per_sample = self.scale // max(self.global_batch, 1)
        return self.loss_sum / max(self.samples * per_sample, 1)


def _grads_finite(params) -> bool:
    # One number: a sum of sums is nan/inf when any gradient element is (or when it overflows, a
    # diverged step too). It allocates no mask and, on a GPU, syncs once. A deterministic function of
    # gradients that are equal on every rank, so every rank reaches the same verdict.
    total = None
    for p in params:
        if p.grad is not None:
            total = p.grad.sum() if total is None else total + p.grad.sum()
    return total is None or math.isfinite(float(total))


class Trainer:
    """Train `model` with `optimizer` on `comm`'s ranks (a world of one without a launcher).

    Several ranks: `model` is wrapped in DistributedDataParallel (every rank must build the same
    model; rank 0's weights are broadcast). Progress: `global_step` (optimizer steps taken), `epoch`
    and `position` (batches done in the epoch; the epoch rolls over after `batches_per_epoch`).
    Checkpoints go to `checkpoint_dir` (newest `keep_checkpoints` kept) with `config` in their meta."""

    def __init__(self, model, optimizer, comm=None, task: str = "classification", device: str = "cpu", *,
                 batches_per_epoch: int | None = None, checkpoint_dir: str | None = None,
                 keep_checkpoints: int = 3, config: dict | None = None):
        if task not in TASK_LOSSES:
            raise ValueError(f"unknown task {task!r}; expected {' or '.join(TASK_LOSSES)}")
        self.model, self.optimizer, self.task, self.device = model, optimizer, task, device
        self.comm = comm or get_comm()
        self.loss_fn = registry.LOSSES[TASK_LOSSES[task]](reduction="sum")
        # The gradients are summed over ranks in buckets, overlapped with backward; average=False as
        # each rank's loss is already divided by the global batch.
        self.ddp = DistributedDataParallel(model, self.comm, average=False) if self.comm.size > 1 else None
        self.net = self.ddp if self.ddp is not None else model   # train through net; evaluate and save model
        self.batches_per_epoch = batches_per_epoch
        self.checkpoint_dir, self.keep_checkpoints, self.config = checkpoint_dir, keep_checkpoints, config
        self.global_step = self.epoch = self.position = 0
        self.comm_wait_s = 0.0   # time backward waited for the gradient allreduces, summed over steps

    # ----- training -----
    def step(self, X, y, global_batch: int, first_sample: int = 0) -> StepResult:
        """One optimizer step on this rank's slice (X, y) of a global batch of `global_batch` samples,
        whose first sample is number `first_sample` of that batch. The weights are not updated when
        the reduced gradients are not finite (`updated` False; every rank sees the same)."""
        self.net.train()
        self.optimizer.zero_grad()
        with distbp_random.batch(step=self.global_step, first_sample=first_sample):
            out = self.net(tensor(backend.to_device(X, self.device)))
        total = self.loss_fn(out, backend.to_device(y, self.device))
        per_sample = 1 if self.task == "classification" else int(numpy.prod(y.shape[1:]))
        scale = global_batch * per_sample
        loss_sum = float(total.item())
        # nan from a rank's own non-finite loss reaches every gradient, so after the reduction all
        # ranks see non-finite gradients: the verdict is shared without a collective of its own.
        (total / scale if math.isfinite(loss_sum) else total * math.nan).backward()
        if self.ddp is not None:
            self.comm_wait_s += self.ddp.last_comm_wait_s
        updated = _grads_finite(self.model.parameters())
        if updated:
            self.optimizer.step()
            self.global_step += 1
            self.position += 1
            if self.batches_per_epoch and self.position == self.batches_per_epoch:
                self.epoch, self.position = self.epoch + 1, 0
        return StepResult(loss_sum, len(X), global_batch, scale, updated)

    def step_on(self, X, y, batch) -> StepResult:
        """`step` on this rank's contiguous share of the global batch `batch` (indices into X, y)."""
        lo, hi = shard_bounds(len(batch), self.comm.rank, self.comm.size)
        return self.step(X[batch[lo:hi]], y[batch[lo:hi]], len(batch), first_sample=lo)

    def mean_losses(self, results: list) -> list:
        """Collective: the global mean loss of each step in `results`, from one allreduce of the sums."""
        if not results:
            return []
        sums = self.comm.allreduce(numpy.array([r.loss_sum for r in results], dtype=numpy.float64))
        return [float(s) / r.scale for s, r in zip(sums, results)]

    # ----- evaluation -----
    def evaluate(self, X, y, num_classes: int | None = None, chunk: int = 1024) -> dict:
        """Collective: metrics over a whole split. Each rank scores its contiguous shard; the counts
        (confusion matrix, error sums, loss sum) are summed exactly."""
        self.model.eval()
        start, stop = shard_bounds(len(X), self.comm.rank, self.comm.size)
        classify = self.task == "classification"
        cm = numpy.zeros((num_classes, num_classes), numpy.int64) if classify else None
        sums = None if classify else numpy.zeros(5)
        loss = numpy.zeros(1)
        with no_grad():
            for i in range(start, max(start, stop), chunk):
                j = min(i + chunk, stop)
                out = self.model(tensor(backend.to_device(X[i:j], self.device)))
                loss[0] += float(self.loss_fn(out, backend.to_device(y[i:j], self.device)).item())
                pred = backend.to_numpy(out.data)
                if classify:
                    cm += confusion_matrix(y[i:j], pred.argmax(axis=1), num_classes)
                else:
                    sums += regression_sums(y[i:j], pred)
        self.comm.allreduce(loss)
        n = max(len(X), 1)
        if classify:
            self.comm.allreduce(cm)
            return {"loss": float(loss[0]) / n, **classification_summary(cm)}
        self.comm.allreduce(sums)
        return {"loss": float(loss[0]) / (n * max(1, int(numpy.prod(y.shape[1:])))), **regression_summary(sums)}

    # ----- checkpoints -----
    def checkpoint_path(self, step: int | None = None) -> str:
        return checkpoint.checkpoint_path(self.checkpoint_dir, self.global_step if step is None else step)

    def save_checkpoint(self) -> str:
        """Collective: write ckpt-<global_step> (weights, optimizer state, progress, RNG, config) and
        keep the newest `keep_checkpoints`; returns its path."""
        meta = {"step": self.global_step, "epoch": self.epoch, "batch": self.position,
                "rng": backend.get_rng_state(), "config": self.config, "world_size": self.comm.size}
        path = self.checkpoint_path()
        checkpoint.save(path, self.model, self.optimizer, meta, self.comm)
        if self.comm.is_root:
            checkpoint.prune(self.checkpoint_dir, self.keep_checkpoints)
        return path

    def resume(self, ckpt: checkpoint.Checkpoint) -> None:
        """Continue from a checkpoint every rank holds: weights, optimizer state, RNG and progress."""
        checkpoint.restore(ckpt, self.model, self.optimizer)
        backend.set_rng_state(ckpt.meta["rng"])
        self.global_step, self.epoch, self.position = ckpt.meta["step"], ckpt.meta["epoch"], ckpt.meta["batch"]


def model_for(cfg, data):
    """The configured zoo model, sized for the dataset (UsageError names a bad combination)."""
    try:
        return registry.build_model(cfg.model, data.input_shape, data.num_outputs, hidden=cfg.hidden,
                                    activation=cfg.activation, image_shape=data.image_shape, dropout=cfg.dropout)
    except ValueError as e:
        raise UsageError(f"cannot build model {cfg.model!r}: {e}") from None


def optimizer_for(cfg, params):
    """The configured optimizer; it gets those of weight_decay and momentum that it takes."""
    accepted = registry.accepted_options(registry.OPTIMIZERS[cfg.optimizer])
    options = {k: getattr(cfg, k) for k in ("weight_decay", "momentum") if accepted is None or k in accepted}
    return registry.build_optimizer(cfg.optimizer, params, cfg.lr, **options)
