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
of the same step.

Pipeline parallelism (`model` a PipelineStage): the stage runs its schedule over this replica's
share of the batch, cut into micro-batches; its loss is the same sum / global batch, so the
gradients are the same single-process mean gradient. Only the last stage has the loss: the other
stages report a loss sum of 0, so the same one allreduce at a log point gives the global mean. The
divergence verdict, though, needs one small allreduce per step: a stage without the loss, or
without parameters, cannot see a non-finite loss in gradients it may not have.

ZeRO stage 1 (`optimizer` a ZeroRedundancyOptimizer, see `zero_optimizer_for`): no DDP wrapper;
backward leaves each rank its own gradients and the optimizer's step sums them (reduce-scatter),
updates this rank's slice and all-gathers the weights: bitwise plain data parallelism, as the sum
runs in the same rank order. The gradients it reduces are not visible before the update, so the
divergence verdict is the same one small allreduce per step as in a pipeline. Checkpoints hold the
consolidated, plain optimizer state, so any run resumes from them, with or without ZeRO.

Tensor parallelism (`tp_grid` a ProcessGrid, the model from `tensor_parallel_for`): the T ranks of a
shard group run every forward and backward together on the SAME samples, so the data is split over
the replicas (`grid.dp_comm`), not the world, and DDP sums each shard's gradients over the ranks
that hold that shard. Every rank of a shard group has the whole loss: the loss sums and the
evaluation counts are reduced over `dp_comm` only, or they would count each sample T times. A
shard's gradients may overflow on one rank only, so the divergence verdict is one small allreduce
over the world per step. Checkpoints hold the gathered, single-process model and optimizer state.
With pipeline stages too (the PipelineStage built on the same grid), only tensor rank 0 of the last
stage reports the loss and the evaluation counts. ZeRO on a grid shards over `grid.dp_comm`, the
stage leaving its gradient sum to it (distbp/training/grid_state.py: checkpoints of any grid)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace

import numpy

from .. import backend
from .. import random as distbp_random
from ..autograd import no_grad, tensor
from ..data import shard_bounds
from ..distributed import (
    DistributedDataParallel,
    SelfComm,
    ZeroRedundancyOptimizer,
    broadcast_module,
    clip_grad_norm_,
    get_comm,
    trace,
    verify_same_model,
)
from ..distributed.grid import ProcessGrid
from ..distributed.pipeline import PipelineStage, partition
from ..distributed.tensor_parallel import linear_pairs, parallelize
from . import checkpoint, deterministic, fault, grid_state, registry, user_code
from .config import partition_method
from .metrics import classification_summary, confusion_matrix, regression_summary, regression_sums

# clip_grad_norm_'s view of plain data parallelism: every rank holds the whole, reduced gradients
_LOCAL_GRID = SimpleNamespace(tp_rank=0, tp_comm=SelfComm(), pipe_comm=SelfComm())

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


def micro_batch_count(global_batch: int, replicas: int, stages: int, micro_batches: int = 0,
                      micro_batch_size: int = 0) -> int:
    """Micro-batches per replica for a step on `global_batch` samples: `micro_batches`, or enough of
    `micro_batch_size` samples for the largest replica's share, or one per stage; but at most the
    samples of the smallest replica (an uneven last batch may hold fewer)."""
    if micro_batch_size:
        largest = -(-global_batch // replicas)
        wanted = -(-largest // micro_batch_size)
    else:
        wanted = micro_batches or stages
    return max(1, min(wanted, global_batch // replicas))


class Trainer:
    """Train `model` with `optimizer` on `comm`'s ranks (a world of one without a launcher).

    Several ranks: `model` is wrapped in DistributedDataParallel (every rank must build the same
    model; rank 0's weights are broadcast). Progress: `global_step` (optimizer steps taken), `epoch`
    and `position` (batches done in the epoch; the epoch rolls over after `batches_per_epoch`).
    Checkpoints go to `checkpoint_dir` (newest `keep_checkpoints` kept) with `config` in their meta.

    `model` may be a PipelineStage (see `pipeline_stage_for`): then `optimizer` holds the stage's
    parameters (None for a stage without any), each step cuts the replica's share into
    `micro_batches` micro-batches (or micro-batches of `micro_batch_size` samples; default one per
    stage), and checkpoints hold the whole model, gathered from replica 0's stages."""

    def __init__(self, model, optimizer, comm=None, task: str = "classification", device: str = "cpu", *,
                 batches_per_epoch: int | None = None, checkpoint_dir: str | None = None,
                 keep_checkpoints: int = 3, config: dict | None = None, micro_batches: int = 0,
                 micro_batch_size: int = 0, tp_grid: ProcessGrid | None = None, deterministic_groups: int = 0,
                 loss_fn=None, accumulate: int = 1, clip_grad_norm: float = 0.0):
        if task not in TASK_LOSSES:
            raise ValueError(f"unknown task {task!r}; expected {' or '.join(TASK_LOSSES)}")
        self.model, self.optimizer, self.task, self.device = model, optimizer, task, device
        self.comm = comm or get_comm()
        self.loss_fn = loss_fn or registry.LOSSES[TASK_LOSSES[task]](reduction="sum")
        self.grid = model.grid if isinstance(model, PipelineStage) else None
        self.micro_batches, self.micro_batch_size = micro_batches, micro_batch_size
        self.zero = isinstance(optimizer, ZeroRedundancyOptimizer)
        self.tp_grid = tp_grid
        # the ranks that split the data (each its own samples) and over which losses and counts sum;
        # a pipeline's are the world's (only the last stage's tensor rank 0 counts, see _pipeline_step)
        self.data_comm = tp_grid.dp_comm if tp_grid is not None and self.grid is None else self.comm
        if self.zero and self.grid is not None and model.reducer is not None:
            raise ValueError("a ZeroRedundancyOptimizer reduces the gradients itself: build the PipelineStage "
                             "with reduce_gradients=False")
        # The gradients are summed over ranks in buckets, overlapped with backward; average=False as
        # each rank's loss is already divided by the global batch. A pipeline stage sums its own
        # over its replicas.
        self.ddp = (DistributedDataParallel(model, self.data_comm, average=False)
                    if self.data_comm.size > 1 and self.grid is None and not self.zero and not deterministic_groups
                    else None)
        # --deterministic (#16): groups of each batch summed in a fixed tree, the same on one rank too
        self.deterministic = deterministic_groups > 0
        if self.deterministic:
            if self.grid is not None or self.zero or tp_grid is not None:
                raise ValueError("deterministic mode supports plain data parallelism only")
            self.ddp = deterministic.deterministic_ddp(model, self.data_comm, deterministic_groups)
        self.net = self.ddp if self.ddp is not None else model   # train through net; evaluate and save model
        self.batches_per_epoch = batches_per_epoch
        self.checkpoint_dir, self.keep_checkpoints, self.config = checkpoint_dir, keep_checkpoints, config
        self.run_meta = {}   # saved in every checkpoint's meta: the run id (pruning keeps to its files), data fingerprint
        self.global_step = self.epoch = self.position = 0
        self.comm_wait_s = 0.0   # time backward waited for the gradient allreduces, summed over steps
        # gradient accumulation, clipping and the run's schedule/early stopping (training/control.py)
        self.accumulate, self.clip_grad_norm, self.control = accumulate, clip_grad_norm, None

    # ----- training -----
    def step(self, X, y, global_batch: int, first_sample: int = 0) -> StepResult:
        """One optimizer step on this rank's slice (X, y) of a global batch of `global_batch` samples,
        whose first sample is number `first_sample` of that batch. The weights are not updated when
        the reduced gradients are not finite (`updated` False; every rank sees the same)."""
        if self.grid is not None:
            return self._pipeline_step(X, y, global_batch)
        if self.deterministic:
            raise RuntimeError("deterministic mode steps with step_on(X, y, batch): each rank takes whole groups")
        self.net.train()
        self.optimizer.zero_grad()
        loss_sum, scale = self._forward_backward(X, y, global_batch, first_sample)
        return self._finish_step(loss_sum, len(X), global_batch, scale)

    def _forward_backward(self, X, y, global_batch: int, first_sample: int) -> tuple:
        """Forward and backward of this rank's slice; gradients add to .grad. (loss sum, scale)."""
        if self.zero and self.data_comm.size > 1:   # as DDP's broadcast_buffers: every rank evaluates rank 0's
            for b in self.model.buffers():
                if backend.is_array(b):
                    self.data_comm.bcast(b)
        with trace.span("forward", step=self.global_step):
            with distbp_random.batch(step=self.global_step, first_sample=first_sample):
                out = self.net(tensor(backend.to_device(X, self.device)))
            total = self.loss_fn(out, backend.to_device(y, self.device))
        per_sample = 1 if self.task == "classification" else int(numpy.prod(y.shape[1:]))
        scale = global_batch * per_sample
        loss_sum = float(total.item())
        # nan from a rank's own non-finite loss reaches every gradient, so after the reduction all
        # ranks see non-finite gradients: the verdict is shared without a collective of its own.
        with trace.span("backward", step=self.global_step):
            (total / scale if math.isfinite(loss_sum) else total * math.nan).backward()
        return loss_sum, scale

    def _finish_step(self, loss_sum: float, samples: int, global_batch: int, scale: int) -> StepResult:
        """After the step's (last) backward: the shared finite verdict, clipping, the update."""
        if self.ddp is not None:
            self.comm_wait_s += self.ddp.last_comm_wait_s
        updated = _grads_finite(self.model.parameters())
        if (self.zero or self.tp_grid is not None) and self.comm.size > 1:   # one number makes the verdict shared
            updated = float(self.comm.allreduce(numpy.array([0.0 if updated else 1.0]))[0]) == 0.0
        if updated:
            self._clip()
            t0 = time.perf_counter()
            self._update()
            if self.zero:   # its reduce-scatter and allgather are this mode's communication
                self.comm_wait_s += time.perf_counter() - t0
        return StepResult(loss_sum, samples, global_batch, scale, updated)

    def _accumulated_step(self, X, y, batch) -> StepResult:
        """One optimizer step on the global batch `batch` in `accumulate` consecutive micro-batches,
        each split over the ranks like a batch. Every micro-batch's loss is divided by the whole step's
        batch, so the summed gradients are those of the one large batch; DDP reduces once, in the
        last backward (the others run under no_sync and accumulate locally)."""
        self.net.train()
        self.optimizer.zero_grad()
        rank, size = self.data_comm.rank, self.data_comm.size
        loss_sum, samples, scale = 0.0, 0, 1
        for k in range(self.accumulate):
            a, b = shard_bounds(len(batch), k, self.accumulate)
            lo, hi = shard_bounds(b - a, rank, size)
            part = batch[a + lo:a + hi]
            last = k == self.accumulate - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                s, scale = self._forward_backward(X[part], y[part], len(batch), first_sample=a + lo)
            loss_sum, samples = loss_sum + s, samples + len(part)
        return self._finish_step(loss_sum, samples, len(batch), scale)

    def _clip(self) -> None:
        """--clip-grad-norm: the whole model's gradient norm, whatever grid holds it (a collective over
        the shards and stages; data-parallel replicas already hold the same reduced gradients)."""
        if self.clip_grad_norm:
            grid = self.tp_grid or self.grid or _LOCAL_GRID
            clip_grad_norm_(self.model.parameters(), self.clip_grad_norm, grid)

    def _update(self) -> None:
        if self.optimizer is not None:
            with trace.span("optimizer", step=self.global_step):
                self.optimizer.step()
        self.global_step += 1
        self.position += 1
        if self.batches_per_epoch and self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        fault.after_step(self.comm.rank, self.global_step)   # DISTBP_FAULT (restart tests)

    def num_micro_batches(self, global_batch: int) -> int:
        return micro_batch_count(global_batch, self.grid.dp_size, self.grid.num_stages, self.micro_batches,
                                 self.micro_batch_size)

    def _pipeline_step(self, X, y, global_batch: int) -> StepResult:
        grid, stage = self.grid, self.model
        stage.train()
        if self.optimizer is not None:
            self.optimizer.zero_grad()
        with trace.span("pipeline schedule", step=self.global_step):
            result = stage.train_step(X, y, global_batch, self.num_micro_batches(global_batch), step=self.global_step)
        self.comm_wait_s += stage.last_stats.recv_wait_s
        per_sample = 1 if self.task == "classification" else int(numpy.prod(y.shape[1:]))
        loss_sum = result.loss_sum * per_sample if grid.is_last_stage else 0.0
        mine = _grads_finite(stage.parameters()) and math.isfinite(loss_sum)
        if grid.tp_rank != 0:   # the last stage's T tensor ranks all hold the loss: count it once
            loss_sum = 0.0
        # One number over the world: every stage of every replica skips the same step (see the module doc).
        updated = float(self.comm.allreduce(numpy.array([0.0 if mine else 1.0]))[0]) == 0.0
        if updated:
            self._clip()
            self._update()
        return StepResult(loss_sum, len(X) if grid.is_last_stage and grid.tp_rank == 0 else 0, global_batch,
                          global_batch * per_sample, updated)

    def step_on(self, X, y, batch) -> StepResult:
        """`step` on this rank's contiguous share of the global batch `batch` (indices into X, y); in a
        pipeline, the share of this rank's replica."""
        if self.deterministic:   # one forward and backward per group of the batch, then the tree's sum
            self.optimizer.zero_grad()
            per_sample = deterministic.per_sample_values(self.task, y)
            loss_sum, samples = deterministic.group_forward_backward(self.ddp, self.loss_fn, X, y, batch,
                                                                     self.global_step, self.device, per_sample)
            self.comm_wait_s += self.ddp.last_comm_wait_s
            updated = _grads_finite(self.model.parameters())
            if updated:
                self._clip()
                self._update()
            return StepResult(loss_sum, samples, len(batch), len(batch) * per_sample, updated)
        if self.accumulate > 1:
            return self._accumulated_step(X, y, batch)
        rank, size = (self.grid.replica, self.grid.dp_size) if self.grid is not None else (self.data_comm.rank,
                                                                                          self.data_comm.size)
        lo, hi = shard_bounds(len(batch), rank, size)
        with trace.span("data", step=self.global_step):
            Xs, ys = X[batch[lo:hi]], y[batch[lo:hi]]
        return self.step(Xs, ys, len(batch), first_sample=lo)

    def mean_losses(self, results: list) -> list:
        """Collective: the global mean loss of each step in `results`, from one allreduce of the sums."""
        if not results:
            return []
        sums = self.data_comm.allreduce(numpy.array([r.loss_sum for r in results], dtype=numpy.float64))
        return [float(s) / r.scale for s, r in zip(sums, results)]

    # ----- evaluation -----
    def evaluate(self, X, y, num_classes: int | None = None, chunk: int = 1024) -> dict:
        """Collective: metrics over a whole split. Each rank scores its contiguous shard; the counts
        (confusion matrix, error sums, loss sum) are summed exactly."""
        self.model.eval()
        classify = self.task == "classification"
        cm = numpy.zeros((num_classes, num_classes), numpy.int64) if classify else None
        sums = None if classify else numpy.zeros(5)
        loss = numpy.zeros(1)
        with no_grad():
            for i, j, out in self._eval_outputs(X, chunk):
                loss[0] += float(self.loss_fn(out, backend.to_device(y[i:j], self.device)).item())
                pred = backend.to_numpy(out.data)
                if classify:
                    cm += confusion_matrix(y[i:j], pred.argmax(axis=1), num_classes)
                else:
                    sums += regression_sums(y[i:j], pred)
        self.data_comm.allreduce(loss)
        n = max(len(X), 1)
        if classify:
            self.data_comm.allreduce(cm)
            return {"loss": float(loss[0]) / n, **classification_summary(cm)}
        self.data_comm.allreduce(sums)
        return {"loss": float(loss[0]) / (n * max(1, int(numpy.prod(y.shape[1:])))), **regression_summary(sums)}

    def _eval_outputs(self, X, chunk: int):
        """(start, stop, output) for the chunks of X this rank scores: its shard of X, or in a pipeline
        (on the last stage; nothing elsewhere) its replica's shard run through every stage."""
        if self.grid is not None:
            start, stop = shard_bounds(len(X), self.grid.replica, self.grid.dp_size)
            outs = self.model.forward_only(X[start:stop], stop - start, chunk)
            if self.grid.tp_rank != 0:   # the same outputs as tensor rank 0's: count them once
                return []
            return [(start + i, start + j, tensor(out)) for i, j, out in outs]
        start, stop = shard_bounds(len(X), self.data_comm.rank, self.data_comm.size)
        return ((i, min(i + chunk, stop), self.model(tensor(backend.to_device(X[i:min(i + chunk, stop)],
                                                                             self.device))))
                for i in range(start, max(start, stop), chunk))

    # ----- checkpoints -----
    def checkpoint_path(self, step: int | None = None) -> str:
        return checkpoint.checkpoint_path(self.checkpoint_dir, self.global_step if step is None else step)

    def save_checkpoint(self) -> str:
        """Collective: write ckpt-<global_step> (weights, optimizer state, progress, RNG, config,
        `run_meta`) and keep the newest `keep_checkpoints` of this run; returns its path."""
        meta = {"step": self.global_step, "epoch": self.epoch, "batch": self.position,
                "rng": backend.get_rng_state(), "config": self.config, "world_size": self.comm.size,
                **self.run_meta}
        if self.control is not None:   # schedule and early-stopping state: a resume continues them
            meta["control"] = self.control.state_dict()
        path = self.checkpoint_path()
        if self.grid is not None or self.tp_grid is not None:   # gathered: any grid, or one process, resumes
            grid = self.grid or self.tp_grid
            meta.update({"pipeline_stages": grid.num_stages} if self.grid is not None else {})
            meta.update({"tensor_parallel": grid.tp_size} if grid.tp_size > 1 else {})
            state = grid_state.gather_state(self.model, self.optimizer, grid, zero=self.zero,
                                            pipeline=self.grid is not None)
            checkpoint.save(path, None, None, meta, self.comm, state=state if self.comm.is_root else None)
        elif self.zero:   # the plain optimizer's state, gathered on rank 0: any run resumes from it
            full = self.optimizer.consolidate_state_dict(to=0)
            state = (self.model.state_dict(), full) if self.comm.is_root else None
            checkpoint.save(path, None, None, meta, self.comm, state=state)
        else:
            checkpoint.save(path, self.model, self.optimizer, meta, self.comm)
        if self.comm.is_root:
            checkpoint.prune(self.checkpoint_dir, self.keep_checkpoints, self.run_meta.get("run_id"), self.global_step)
        return path

    def resume(self, ckpt: checkpoint.Checkpoint) -> None:
        """Continue from a checkpoint every rank holds: weights, optimizer state, RNG and progress."""
        if self.grid is not None or self.tp_grid is not None:
            grid_state.restore(ckpt, self.model, self.optimizer, self.grid or self.tp_grid,
                               pipeline=self.grid is not None)
        else:
            checkpoint.restore(ckpt, self.model, self.optimizer)
        backend.set_rng_state(ckpt.meta["rng"])
        if self.control is not None and ckpt.meta.get("control") is not None:
            self.control.load_state_dict(ckpt.meta["control"])
        self.global_step, self.epoch, self.position = ckpt.meta["step"], ckpt.meta["epoch"], ckpt.meta["batch"]


def pipeline_stage_for(cfg, model, comm, task: str, batch_sizes, grid: ProcessGrid | None = None) -> PipelineStage:
    """This rank's PipelineStage of `model` for cfg's --pipeline-stages, --partition and --schedule.

    Every check is a function of the settings and the model alone, so a wrong combination raises the
    same UsageError on every rank before any rank waits on another. `batch_sizes`: the global batch
    sizes the run steps on (a replica needs a sample for each micro-batch). `grid`: the grid the
    model was split on by `tensor_parallel_for` (default: stages x replicas, built here after the
    checks; a given grid's splits came before them, but every rank passed those alike). Under
    --zero 1 the stage leaves the gradient sum to the ZeroRedundancyOptimizer."""
    stages = cfg.pipeline_stages
    if grid is None and comm.size % stages:
        lower = comm.size // stages * stages
        use = " or ".join(str(n) for n in (lower, lower + stages) if n > 0)
        raise UsageError(f"--pipeline-stages {stages}: the world size {comm.size} is not a multiple of it; "
                         f"launch {use} ranks")
    if cfg.device != "cpu":
        raise UsageError(f"--pipeline-stages {stages} runs on --device cpu only")
    dp = grid.dp_size if grid is not None else comm.size // stages
    method = partition_method(cfg.partition)
    inside_a_linear = method == "balanced" or (isinstance(method, list) and any(isinstance(p, tuple) for p in method))
    if grid is not None and grid.tp_size > 1 and inside_a_linear:
        raise UsageError(f"--partition {cfg.partition} cuts inside a Linear, which --tensor-parallel "
                         f"{grid.tp_size} already splits over its ranks; cut at layer boundaries (uniform, "
                         "parameters or layer indices)")
    try:
        bounds = partition(model, stages, method)
    except (TypeError, ValueError) as e:
        raise UsageError(f"--pipeline-stages {stages} --partition {cfg.partition} with model {cfg.model!r}: "
                         f"{e}") from None
    fewest = min(batch_sizes) // dp
    if fewest < 1:
        raise UsageError(f"a global batch of {min(batch_sizes)} samples cannot feed {dp} pipeline replicas; "
                         "use a larger --batch-size or fewer ranks")
    most = cfg.batch_size // dp
    if cfg.micro_batches > most or (not cfg.micro_batches and not cfg.micro_batch_size and stages > most):
        wanted = cfg.micro_batches or stages
        raise UsageError(f"--micro-batches {wanted}: a replica holds only {most} samples of the global batch of "
                         f"{cfg.batch_size} ({dp} replicas); every micro-batch needs a sample")
    if task == "classification":
        loss = "cross_entropy"
    else:
        mse = registry.LOSSES[TASK_LOSSES[task]](reduction="sum")

        def loss(out, y):   # the stage divides by the global batch; the Trainer scales by values per sample
            return mse(out, y) / int(numpy.prod(y.shape[1:]))
    return PipelineStage(model, grid if grid is not None else ProcessGrid(comm, stages), bounds, cfg.schedule,
                         loss=loss, reduce_gradients=not getattr(cfg, "zero", 0))


# --tensor-parallel T: models whose Linear -> activation -> Linear runs split (the mlp's layers, the
# cnn's classifier head; the rest stays whole on every rank), see distbp.distributed.tensor_parallel
TENSOR_PARALLEL_MODELS = ("mlp", "cnn")


def tensor_parallel_for(cfg, model, comm) -> tuple:
    """(the tensor-parallel form of `model`, its ProcessGrid of --pipeline-stages x --tensor-parallel
    ranks, data parallelism taking the rest) for cfg's --tensor-parallel.

    Every check is a function of the settings, the model and the world size, so a wrong combination
    raises the same UsageError on every rank before any rank waits on another (the grid's splits)."""
    tp, stages = cfg.tensor_parallel, getattr(cfg, "pipeline_stages", 1)
    if cfg.model not in TENSOR_PARALLEL_MODELS:
        raise UsageError(f"--tensor-parallel {tp} supports the models {' and '.join(TENSOR_PARALLEL_MODELS)} "
                         f"(their Linear pairs split), not {cfg.model!r}")
    pairs = linear_pairs(model)
    odd = [model._modules[column].out_features for column, _ in pairs
           if model._modules[column].out_features % tp]
    if odd:
        raise UsageError(f"--tensor-parallel {tp}: the hidden sizes {odd} are not divisible by it")
    group = tp * stages
    if comm.size % group:
        lower = comm.size // group * group
        use = " or ".join(str(n) for n in (lower, lower + group) if n > 0)
        what = "it" if stages == 1 else f"--pipeline-stages {stages} x {tp} = {group}"
        raise UsageError(f"--tensor-parallel {tp}: the world size {comm.size} is not a multiple of {what}; "
                         f"launch {use} ranks")
    grid = ProcessGrid(comm, stages, tp)
    return parallelize(model, grid.tp_comm), grid


def model_for(cfg, data):
    """The configured zoo model (or the user's `module:factory`), sized for the dataset (UsageError
    names a bad combination)."""
    if user_code.is_reference(cfg.model):
        try:
            model = user_code.build_user_model(cfg.model, data.input_shape, data.num_outputs, cfg.model_args)
            user_code.check_output(model, data.train[0].astype(cfg.dtype), data.num_outputs, data.task, cfg.model)
        except user_code.UserCodeError as e:
            raise UsageError(str(e)) from None
        return model
    try:
        return registry.build_model(cfg.model, data.input_shape, data.num_outputs, hidden=cfg.hidden,
                                    activation=cfg.activation, image_shape=data.image_shape, dropout=cfg.dropout)
    except ValueError as e:
        raise UsageError(f"cannot build model {cfg.model!r}: {e}") from None


def _optimizer_options(cfg) -> dict:
    """Those of weight_decay and momentum that the configured optimizer takes."""
    accepted = registry.accepted_options(registry.OPTIMIZERS[cfg.optimizer])
    return {k: getattr(cfg, k) for k in ("weight_decay", "momentum") if accepted is None or k in accepted}


def optimizer_for(cfg, params):
    """The configured optimizer; it gets those of weight_decay and momentum that it takes."""
    return registry.build_optimizer(cfg.optimizer, params, cfg.lr, **_optimizer_options(cfg))


def zero_optimizer_for(cfg, model, comm):
    """--zero 1: the configured optimizer sharded over `comm`'s ranks (ZeroRedundancyOptimizer, a SUM
    of the gradients, as each rank's loss is already divided by the global batch). Collective: the
    model is first checked to be the same on every rank (before the sharded layout, which assumes
    it) and rank 0's weights and buffers are broadcast, as DistributedDataParallel does. On a grid,
    `comm` is its dp_comm: the ranks holding the same stage and tensor shard."""
    verify_same_model(model, comm)
    broadcast_module(model, comm)
    return ZeroRedundancyOptimizer(model.parameters(), registry.OPTIMIZERS[cfg.optimizer], comm=comm,
                                   average=False, lr=cfg.lr, **_optimizer_options(cfg))
