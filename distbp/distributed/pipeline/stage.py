"""One rank's stage of a pipeline: its consecutive layers of the model, run micro-batch by micro-batch.

    grid = ProcessGrid(comm, pipeline_stages=2)
    stage = PipelineStage(model, grid, partition(model, 2), schedule="1f1b")
    opt = SGD(stage.parameters(), lr=0.1)
    opt.zero_grad()
    result = stage.train_step(X, y, global_batch=len(batch), num_micro_batches=4)
    opt.step()

Exact by construction, as the data-parallel Trainer is: replica r holds the contiguous shard
`shard_bounds(global_batch, r, dp_size)` of each global batch (X on the first stage, y on the last),
cut into contiguous micro-batches; the last stage's loss for a micro-batch is the sum of its
per-sample losses / global_batch, so the gradients summed over micro-batches and replicas are the
single-process mean gradient, uneven sizes included. Each micro-batch's forward runs in
`distbp.random.batch(step, first_sample)` with the draw count of the stages before it, so a dropout
layer's masks are the ones it draws in one process's forward of the whole batch.

Sync points: the constructor (the gradient reducer duplicates dp_comm when there are replicas);
each train_step (point-to-point with the neighbouring stages, the first one also a shape exchange
over pipe_comm, then the gradient sum over dp_comm); `free()`, collective over dp_comm, which
releases that reducer (the grid belongs to the caller: free it after its stages)."""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy

from ... import autograd, random
from ...autograd import Tensor, WeightGradStash, defer_weight_grads, no_grad
from ...data import shard_bounds
from ...nn import Module, functional
from .. import p2p, trace
from ..reducer import Reducer, bucket_cap_bytes
from ..releasing import Releasable
from .partition import check_bounds, check_pipeline_model, stage_layers
from .schedule import build_schedule, build_schedules, check_schedules, is_split

LOSSES = {"cross_entropy": lambda out, y: functional.cross_entropy(out, y, reduction="sum")}


@dataclass
class PipelineStepResult:
    """One train_step on this rank. `loss_sum` (the last stage only, else None) is this replica's sum of
    per-sample losses, not reduced over replicas; the global mean loss is their sum / global_batch."""
    loss_sum: float | None
    samples: int          # this replica's samples in the step
    global_batch: int
    num_micro_batches: int


@dataclass
class PipelineStats:
    """What one train_step cost this rank (`PipelineStage.last_stats`; always kept, it is a few
    counters). `recv_wait_s` is the time blocked in receives, the stage waiting on its neighbours:
    the bubble is its share of `step_s`. `activation_bytes[m]` is what micro-batch m holds for its
    backward from its forward to its backward (the arrays its autograd graph saved, the received
    input included, parameters not); on a split schedule `weight_stash_bytes[m]` is what it then
    holds from its backward to its weight action (each Linear's input and output gradient);
    `peak_activation_bytes` is the most held at once, both kinds counted. Messages and bytes count
    the sent activations and gradients (each message also carries a 128-byte shape-and-dtype header)."""
    step_s: float = 0.0
    recv_wait_s: float = 0.0
    messages_sent: int = 0
    bytes_sent: int = 0
    peak_activation_bytes: int = 0
    activation_bytes: dict = field(default_factory=dict)
    weight_stash_bytes: dict = field(default_factory=dict)

    @property
    def bubble(self) -> float:
        return self.recv_wait_s / self.step_s if self.step_s > 0 else 0.0


def _saved_bytes(out, exclude: set) -> int:
    """Bytes of the distinct arrays that `out`'s autograd graph keeps for backward: what each node
    saved and its inputs' data. An array and its views of the same extent count once; views of an
    array in `exclude` (ids of the parameters' data, e.g. a saved transposed weight) not at all. A
    view counts its own bytes, not its base's: the first stage's input is a slice of the batch."""
    seen, total, nodes, stack = set(), 0, set(), [out]

    def count(a):
        nonlocal total
        if not isinstance(a, numpy.ndarray):
            return
        base = a
        while base.base is not None and isinstance(base.base, numpy.ndarray):
            base = base.base
        key = (a.__array_interface__["data"][0], a.nbytes)
        if id(base) not in exclude and key not in seen:
            seen.add(key)
            total += a.nbytes

    while stack:
        t = stack.pop()
        count(getattr(t, "data", None))
        node = getattr(t, "_ctx", None)
        if node is None or id(node) in nodes:
            continue
        nodes.add(id(node))
        fn = getattr(node, "fn", node)  # a multi-output Function's hidden node holds the Function
        for value in vars(fn).values() if hasattr(fn, "__dict__") else ():
            for v in value if isinstance(value, (tuple, list)) else (value,):
                count(v)
        stack.extend(p for p in getattr(node, "parents", ()) or () if p is not None)
    return total


class PipelineStage(Releasable, Module):
    """The layers `bounds[grid.stage]` of `model` (an nn.Sequential), trained as one pipeline stage.

    Every rank builds the same full model (same seed) and passes it whole; the stage keeps only its
    own layers, registered under the full model's names, so `named_parameters()` and `state_dict()`
    give the single-process keys of this stage's part. `full_parameter_names` and
    `full_state_keys` list those of the whole model, in its order (for checkpoints). The stage holds
    no reference to the rest of the model: drop the model once the stage is built to free it.

    Args:
        model: an nn.Sequential (see `partition`); BatchNorm is refused.
        grid: a ProcessGrid; this rank runs stage `grid.stage` of replica `grid.replica`.
        bounds: one (start, end) layer range per stage (`partition(model, grid.num_stages, ...)`); an
            end may be a (layer, output feature) pair that cuts a Linear between two stages.
        schedule: a name in SCHEDULES: "1f1b", "gpipe", "1f1b-slack" or "1f1b-split" (build_schedule).
        loss: "cross_entropy" or a callable (output, target) -> the SUM of per-sample losses.
        reduce_gradients: sum the gradients over the replicas (grid.dp_comm) at the end of each
            train_step; False leaves each replica its own, for a ZeroRedundancyOptimizer over
            grid.dp_comm, which sums them in its step.
    """

    def __init__(self, model, grid, bounds, schedule: str = "1f1b", loss="cross_entropy",
                 reduce_gradients: bool = True):
        super().__init__()
        check_pipeline_model(model)
        bounds = check_bounds(model, bounds, grid.num_stages)
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"unknown pipeline loss {loss!r}; expected {' or '.join(LOSSES)} or a callable")
            loss = LOSSES[loss]
        build_schedule(schedule, grid.num_stages, 1, grid.stage)  # an unknown schedule fails here, not mid-step
        object.__setattr__(self, "grid", grid)
        self.schedule, self.bounds = schedule, bounds
        self.loss_fn = loss
        self.full_parameter_names = [n for n, _ in model.named_parameters()]
        self.full_state_keys = list(model.state_dict().keys())
        for name, layer in stage_layers(model, bounds, grid.stage):
            setattr(self, name, layer)
        self.steps = 0  # train_steps taken: the `step` of the dropout keys unless train_step is given one
        self._checked = set()  # micro-batch counts whose schedules every stage has verified
        self._io = None  # per-sample input shape/dtype, output shape/dtype and dropout draws before this stage
        self.last_stats = PipelineStats()  # of the latest train_step
        object.__setattr__(self, "reducer", Reducer(self.named_parameters(), grid.dp_comm, bucket_cap_bytes(25),
                                                    average=False) if grid.dp_size > 1 and reduce_gradients else None)

    def _release(self) -> None:
        if self.reducer is not None:
            self.reducer.free()

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    # ----- shapes and dropout draws of the stages before this one, exchanged once -----
    def _dry_run(self, sample_shape, dtype) -> tuple:
        """(output sample shape, output dtype, dropout draws) of this stage's forward of one zero sample."""
        with no_grad(), random.batch(0) as b:  # keyed draws: the process-wide draw count is not touched
            out = self.forward(Tensor(numpy.zeros((1, *sample_shape), dtype=dtype)))
        return tuple(out.shape[1:]), out.dtype, b.draws

    def _exchange_shapes(self, X):
        grid, comm = self.grid, self.grid.pipe_comm
        info = None
        if grid.is_first_stage:
            sample, dtype = tuple(numpy.shape(X)[1:]), numpy.asarray(X).dtype
            info = (sample, dtype, 0)
        # Stage s learns what stage s-1 sends it and how many dropout draws come before it; it runs
        # its layers on one sample to tell stage s+1 the same. One broadcast per stage boundary.
        mine = info
        for s in range(grid.num_stages - 1):
            if grid.stage == s:
                out_shape, out_dtype, draws = self._dry_run(mine[0], mine[1])
                info = (out_shape, out_dtype, mine[2] + draws)
            info = comm.bcast_obj(info if grid.stage == s else None, root=s)
            if grid.stage == s + 1:
                mine = info
        self._io = mine

    # ----- one training step -----
    def train_step(self, X, y, global_batch: int, num_micro_batches: int, step: int | None = None):
        """Run this stage's schedule over this replica's shard of a global batch, then sum the gradients
        over the replicas. X (this replica's inputs) is used on the first stage, y (its targets) on the
        last; the gradients add into `.grad` (zero them before, step the optimizer after). `step` keys
        the dropout masks (default: the number of train_steps taken)."""
        self._check_not_freed()
        grid = self.grid
        started = time.perf_counter()
        lo, hi = shard_bounds(int(global_batch), grid.replica, grid.dp_size)
        rows = hi - lo
        m_count = int(num_micro_batches)
        if m_count < 1:
            raise ValueError(f"Invalid number of micro-batches: {num_micro_batches} (expected a positive integer)")
        fewest = global_batch // grid.dp_size
        if m_count > fewest:
            raise ValueError(f"{m_count} micro-batches but a replica holds as few as {fewest} samples of the "
                             f"global batch of {global_batch} ({grid.dp_size} replicas); every micro-batch needs "
                             f"a sample: use at most {fewest} micro-batches or a larger batch")
        for what, data, on in (("X", X, grid.is_first_stage), ("y", y, grid.is_last_stage)):
            if on and len(data) != rows:
                raise ValueError(f"{what} has {len(data)} samples, but replica {grid.replica} of {grid.dp_size} "
                                 f"holds rows {lo}..{hi} ({rows}) of the global batch of {global_batch}")
        if self._io is None:
            self._exchange_shapes(X)
        if m_count not in self._checked:
            # Every rank simulates all stages' action lists before running its own, so a schedule whose
            # sends and receives do not match fails here, on every rank alike, instead of hanging.
            check_schedules(build_schedules(self.schedule, grid.num_stages, m_count))
            self._checked.add(m_count)
        step = self.steps if step is None else int(step)
        edges = [lo + a for a in numpy.cumsum([0] + [len(c) for c in numpy.array_split(range(rows), m_count)])]
        actions = build_schedule(self.schedule, grid.num_stages, m_count, grid.stage)
        run = _Run(self, X, y, edges, lo, step, int(global_batch), is_split(actions))
        for op, group in itertools.groupby(actions, key=lambda a: a.op):
            if op == "weight":  # consecutive weight actions: one product per weight for all of them
                micro_batches = [a.micro_batch for a in group]
                with trace.span("weight", step=step, micro_batch=micro_batches[0]):   # a no-op unless --trace
                    run.weight(micro_batches)
                continue
            for action in group:
                with trace.span(op, step=step, micro_batch=action.micro_batch):
                    getattr(run, op)(action.micro_batch)
        run.finish()
        if self.reducer is not None:
            self.reducer.reduce_gradients()
        self.steps += 1
        run.stats.step_s = time.perf_counter() - started
        self.last_stats = run.stats
        return PipelineStepResult(run.loss_sum if grid.is_last_stage else None, rows, int(global_batch), m_count)

    # ----- inference -----
    def forward_only(self, X, num_samples: int, chunk: int = 1024) -> list:
        """Run the whole model on `num_samples` samples, `chunk` at a time, without autograd: the first
        stage reads X (the others pass None), each stage sends its chunk's output to the next. Returns,
        on the last stage, [(start, stop, output array)] in order; elsewhere []. Point-to-point with
        the neighbouring stages of this replica only (each replica scores its own samples); evaluation
        mode (dropout off) is the caller's to set."""
        grid = self.grid
        if self._io is None:
            self._exchange_shapes(X)
        sample, dtype, _ = self._io
        results, sends = [], []
        with no_grad():
            for c, i in enumerate(range(0, int(num_samples), int(chunk))):
                j = min(i + int(chunk), int(num_samples))
                if grid.is_first_stage:
                    x = numpy.asarray(X[i:j])
                else:
                    x = p2p.recv_array(grid.pipe_comm, (j - i, *sample), dtype, grid.prev_rank,
                                       p2p.tag(c, "forward"),
                                       what=f"evaluation chunk {c} from stage {grid.stage - 1}").wait()
                out = numpy.ascontiguousarray(self.forward(Tensor(x)).data)
                if grid.is_last_stage:
                    results.append((i, j, out))
                else:  # the array lives in `sends` until its send completes
                    sends.append((p2p.send_array(grid.pipe_comm, out, grid.next_rank, p2p.tag(c, "forward"),
                                                 what=f"evaluation chunk {c} to stage {grid.stage + 1}"), out))
        for request, _ in sends:
            request.wait()
        return results


class _Run:
    """The state of one train_step: what each micro-batch's backward needs, and the sends in flight."""

    def __init__(self, stage, X, y, edges, lo, step, global_batch, split=False):
        self.stage, self.grid, self.comm = stage, stage.grid, stage.grid.pipe_comm
        self.split = split  # backward computes input gradients only; `weight` the deferred rest
        self.stashes = {}  # micro-batch -> its WeightGradStash, from its backward to its weight action
        self.X, self.y, self.edges, self.lo = X, y, edges, lo
        self.step, self.global_batch = step, global_batch
        self.inputs, self.outputs, self.grads = {}, {}, {}
        self.sends = []  # requests of the sends in flight (each holds its message until it completes)
        self.loss_sum = 0.0
        self.stats, self.held = PipelineStats(), 0
        self.param_ids = {id(p.data) for p in stage.parameters()}

    def _rows(self, m) -> slice:  # micro-batch m's rows within this replica's shard
        return slice(self.edges[m] - self.lo, self.edges[m + 1] - self.lo)

    def recv_forward(self, m):
        sample, dtype, _ = self.stage._io
        shape = (self.edges[m + 1] - self.edges[m], *sample)
        waited = time.perf_counter()
        data = p2p.recv_array(self.comm, shape, dtype, self.grid.prev_rank, p2p.tag(m, "forward"),
                              what=f"activation of micro-batch {m} from stage {self.grid.stage - 1}").wait()
        self.stats.recv_wait_s += time.perf_counter() - waited
        self.inputs[m] = Tensor(data, requires_grad=True)  # a leaf: its .grad is what stage - 1 needs

    def forward(self, m):
        x = self.inputs[m] if m in self.inputs else Tensor(self.X[self._rows(m)])
        with random.batch(self.step, first_sample=self.edges[m]) as b:
            b.draws = self.stage._io[2]  # the draws one process's forward makes in the earlier stages
            out = self.stage(x)
        if self.grid.is_last_stage:
            total = self.stage.loss_fn(out, self.y[self._rows(m)])
            self.loss_sum += float(total.item())
            out = total / self.global_batch
        self.outputs[m] = out
        self.stats.activation_bytes[m] = _saved_bytes(out, self.param_ids)
        self.held += self.stats.activation_bytes[m]
        self.stats.peak_activation_bytes = max(self.stats.peak_activation_bytes, self.held)

    def send_forward(self, m):
        self._send(self.outputs[m].data, self.grid.next_rank, p2p.tag(m, "forward"),
                   f"activation of micro-batch {m} to stage {self.grid.stage + 1}")

    def recv_backward(self, m):
        out = self.outputs[m]
        waited = time.perf_counter()
        self.grads[m] = p2p.recv_array(self.comm, tuple(out.shape), out.dtype, self.grid.next_rank,
                                       p2p.tag(m, "backward"),
                                       what=f"gradient of micro-batch {m} from stage {self.grid.stage + 1}").wait()
        self.stats.recv_wait_s += time.perf_counter() - waited

    def backward(self, m):
        out = self.outputs.pop(m)
        grads = None if self.grid.is_last_stage else [self.grads.pop(m)]
        self.held -= self.stats.activation_bytes[m]
        # A first stage without parameters (a reshape, say) has nothing to differentiate: its
        # input is the data, so its output does not require grad.
        if not self.split:
            if out.requires_grad:
                autograd.backward([out], grads)
            return
        stash = self.stashes[m] = WeightGradStash()
        if out.requires_grad:
            with defer_weight_grads(stash):
                autograd.backward([out], grads)
        # the graph is freed; what the weight gradients need (Linear inputs and output gradients) stays
        self.stats.weight_stash_bytes[m] = stash.nbytes
        self.held += stash.nbytes
        self.stats.peak_activation_bytes = max(self.stats.peak_activation_bytes, self.held)

    def weight(self, micro_batches):
        """The deferred weight gradients of `micro_batches`, one product per weight over all their rows
        (in micro-batch order, so the result does not depend on where the schedule put them)."""
        merged = WeightGradStash()
        for m in sorted(micro_batches):
            merged.extend(self.stashes.pop(m))
            self.held -= self.stats.weight_stash_bytes[m]
        merged.flush()

    def send_backward(self, m):
        x = self.inputs.pop(m)
        grad = numpy.zeros(x.shape, x.dtype) if x.grad is None else x.grad
        self._send(grad, self.grid.prev_rank, p2p.tag(m, "backward"),
                   f"gradient of micro-batch {m} to stage {self.grid.stage - 1}")

    def _send(self, data, dest, tag, what):
        self.sends = [r for r in self.sends if not r.test()]  # let finished sends free their messages
        self.sends.append(p2p.send_array(self.comm, data, dest, tag, what=what))  # data is copied: free now
        self.stats.messages_sent += 1
        self.stats.bytes_sent += data.nbytes

    def finish(self):
        for request in self.sends:
            request.wait()
        self.sends = []
        if self.outputs or self.inputs or self.grads or self.stashes:
            raise RuntimeError(f"stage {self.grid.stage}: the schedule left micro-batches "
                               f"{sorted(set(self.outputs) | set(self.inputs) | set(self.grads) | set(self.stashes))} "
                               "without a backward or weight action")
