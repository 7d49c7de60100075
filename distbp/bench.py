"""Time data-, pipeline- or tensor-parallel training steps on synthetic data; alone or under mpiexec.

    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python -m distbp.bench --model mlp --batch-per-rank 256 --json
    python -m distbp.bench --model cnn --steps 10           # world of one, no launcher
    mpiexec -n 2 python -m distbp.bench --pipeline-stages 2 --micro-batches 8 --schedule 1f1b
    mpiexec -n 2 python -m distbp.bench --pipeline-stages 2 --schedule 1f1b-split --partition balanced
    mpiexec -n 2 python -m distbp.bench --tensor-parallel 2 --sizes 784,4096,4096,10 --threads 1

Prints a table (or one JSON object with --json) with world_size, samples_per_sec (all ranks),
step_ms, comm_wait_ms (median over steps of the longest time any rank waits for its allreduces
after backward; comm_wait_last_rank_ms: of the rank that finished backward last, the exposed
communication without load imbalance),
bytes_reduced_per_step, and with --compare-bare a bare mpi4py Allreduce of the same bytes next to
DDP's fused-bucket allreduces (bucket_*: the collectives through distbp's seam) and DDP's whole
reduction (ddp_reduce_*: also copying every gradient into its bucket, a memory pass torch does too).
Timings on a shared machine vary up to 2x run to run: compare figures from one run.

Memory, per rank (lists in rank order): param_bytes, grad_bytes (the gradients the parameters hold;
under DDP views of its buckets), optimizer_state_bytes (the optimizer's state arrays) and
comm_buffer_bytes (what the reduction keeps beside them: 0 under DDP, whose buckets are the
gradients; under --zero 1 the flat buffer it reduce-scatters into and this rank's parameter slice).
With --zero 1 (ZeroRedundancyOptimizer, no DDP) the optimizer state is sharded over the ranks and
optimizer_step_ms (median) times its step: reduce-scatter, update, allgather.

With --pipeline-stages P (world = P stages x world/P data-parallel replicas; --batch-per-rank then
counts the samples of one replica, the global batch is that times the replicas) it reports
samples_per_sec, step_ms and, per stage (summed over the timed steps of replica 0's ranks):
bubble_pct, the share of the step the stage spends blocked in receives, waiting on its neighbours,
next to bubble_ideal_pct = (P-1)/(M+P-1), the simulated schedule's idle share;
peak_activation_bytes, the most bytes held for backward at once (arrays saved between a
micro-batch's forward and its backward, the largest over the steps); messages_per_step and
bytes_sent_per_step (activations and gradients to the neighbours).

With --tensor-parallel T (the mlp, or the cnn whose head splits; world = T tensor ranks x world/T
data-parallel replicas; --batch-per-rank then counts the samples of one replica, which its T ranks
all see) the zoo model's Linear pairs are split by `parallelize` over the grid's tp_comm (the cnn's
trunk stays whole on every rank) and DDP sums each shard's gradients over dp_comm.
It reports samples_per_sec (global batch: that times the replicas), step_ms and the per-rank
param_bytes, grad_bytes and optimizer_state_bytes (the split layers hold 1/T of their weights).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy

import distbp as db
from distbp import backend, nn
from distbp.distributed import (
    DistributedDataParallel,
    ZeroRedundancyOptimizer,
    broadcast_module,
    get_comm,
    init,
    verify_same_model,
)
from distbp.distributed.comm import SelfComm
from distbp.distributed.gpu import setup_cuda
from distbp.distributed.grid import ProcessGrid
from distbp.distributed.pipeline import PipelineStage, partition
from distbp.distributed.pipeline.schedule import SCHEDULES
from distbp.optim import SGD
from distbp.training import registry
from distbp.training.config import partition_method
from distbp.training.trainer import UsageError, tensor_parallel_for

# Input shape of one sample and options of each zoo model here (mlp: from --sizes); a model
# registered elsewhere gets 28x28 one-channel images, given flat.
_SHAPES = {
    "cnn": ((1, 28, 28), {"batch_norm": True}),
    "gru": ((16, 32), {"hidden": [128], "image_shape": (1, 16, 32)}),   # 16 steps of 32 features
}
_DEFAULT = ((784,), {"image_shape": (1, 28, 28)})
CLASSES = 10


def build_model(name: str, sizes: list[int], pipeline: bool = False):
    """The zoo model, and the shape of one input sample and the number of classes. A pipeline's cnn
    has no batch norm (a stage sees one micro-batch at a time, so PipelineStage refuses it)."""
    if name == "mlp":   # --sizes: inputs, hidden layers..., classes
        return registry.build_model("mlp", (sizes[0],), sizes[-1], hidden=sizes[1:-1]), (sizes[0],), sizes[-1]
    in_shape, options = _SHAPES.get(name, _DEFAULT)
    if pipeline and name == "cnn":
        options = {**options, "batch_norm": False}
    return registry.build_model(name, in_shape, CLASSES, **options), in_shape, CLASSES


def compare_reductions(ddp, comm, dtype, reps: int = 30) -> dict:
    """Median seconds of three ways to reduce the same bytes, interleaved rep by rep so that load
    from other processes hits all three alike:
      bare:   mpi4py Allreduce(IN_PLACE) of one buffer, no distbp in between;
      bucket: DDP's fused buckets' allreduces through distbp's seam (Iallreduce + watched Test loop);
      whole:  DDP's whole reduction (gradients copied into buckets, allreduced, handed back)."""
    from mpi4py import MPI
    buf = numpy.ones(ddp.bytes_per_sync // numpy.dtype(dtype).itemsize, dtype=dtype)

    def bare():
        comm.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def bucket():
        for r in [ddp.reducer.comm.iallreduce(b.buffer) for b in ddp.reducer.buckets]:
            r.wait()

    times = {"bare": [], "bucket": [], "whole": []}
    for _ in range(reps + 3):
        for name, fn in (("bare", bare), ("bucket", bucket), ("whole", ddp.reduce_gradients)):
            comm.barrier()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v[3:]) for k, v in times.items()}


def bus_gbps(nbytes: int, seconds: float, n: int) -> float:
    """Allreduce bus bandwidth: each byte crosses the ring 2(n-1)/n times (nccl-tests' definition)."""
    return 2 * (n - 1) / n * nbytes / seconds / 1e9 if n > 1 and seconds > 0 else float("nan")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m distbp.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp", choices=list(registry.MODELS), help="zoo model to train")
    p.add_argument("--sizes", default="784,1024,1024,10", help="MLP layer sizes, comma separated")
    p.add_argument("--batch-per-rank", type=int, default=256, help="samples per rank per step")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads per rank (default cores/ranks)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="compute precision")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda runs on CuPy")
    p.add_argument("--bucket-mb", type=float, default=25, help="gradient bucket size in MB")
    p.add_argument("--optimizer", default="sgd", choices=list(registry.OPTIMIZERS),
                   help="optimizer, lr 0.01 and its defaults")
    p.add_argument("--zero", type=int, default=0, choices=[0, 1],
                   help="1: shard the optimizer state over the ranks (ZeroRedundancyOptimizer) instead of DDP")
    p.add_argument("--compare-bare", action="store_true", help="also time a bare mpi4py Allreduce")
    p.add_argument("--scaling", type=int, metavar="BLOCKS", default=0,
                   help="weak scaling under mpiexec: BLOCKS rounds of three blocks of --steps steps: rank 0 "
                        "alone (the others sleep), every rank alone at once, and all ranks data-parallel")
    p.add_argument("--pipeline-stages", type=int, default=None, metavar="P",
                   help="pipeline-parallel: P stages x world/P data-parallel replicas")
    p.add_argument("--micro-batches", type=int, default=4, metavar="M", help="micro-batches per step (pipeline)")
    p.add_argument("--schedule", default="1f1b", choices=list(SCHEDULES), help="pipeline schedule")
    p.add_argument("--partition", default="uniform", metavar="uniform|parameters|balanced|i,j,...",
                   help="where to cut the model into stages: equal layer counts, balanced parameters, "
                        "equal work (cutting inside a Linear), or split points in the model's layer list "
                        "(i:k: inside layer i at output feature k)")
    p.add_argument("--tensor-parallel", type=int, default=None, metavar="T",
                   help="tensor-parallel mlp or cnn head: T tensor ranks x world/T data-parallel replicas")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    for name in ("batch_per_rank", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.scaling < 0:
        p.error(f"--warmup and --scaling must be >= 0, got {args.warmup} and {args.scaling}")
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes must be comma-separated integers such as 784,1024,1024,10, got {args.sizes!r}")
    if len(args.sizes) < 2 or min(args.sizes) < 1:
        p.error(f"--sizes needs at least two positive sizes, got {args.sizes}")
    if args.zero and (args.pipeline_stages is not None or args.scaling or args.compare_bare):
        p.error("--zero 1 runs without --pipeline-stages, --scaling or --compare-bare")
    if args.tensor_parallel is not None:
        if args.tensor_parallel < 1:
            p.error(f"--tensor-parallel must be at least 1, got {args.tensor_parallel}")
        if (args.zero or args.pipeline_stages is not None or args.scaling or args.compare_bare
                or args.device != "cpu"):
            p.error("--tensor-parallel runs on the cpu, without --zero, --pipeline-stages, --scaling "
                    "or --compare-bare")
    if args.pipeline_stages is not None:
        if args.pipeline_stages < 1 or args.micro_batches < 1:
            p.error(f"--pipeline-stages and --micro-batches must be at least 1, got {args.pipeline_stages} "
                    f"and {args.micro_batches}")
        if args.micro_batches > args.batch_per_rank:
            p.error(f"--micro-batches {args.micro_batches} exceeds --batch-per-rank {args.batch_per_rank}: "
                    "every micro-batch needs a sample")
        if args.device != "cpu" or args.scaling or args.compare_bare:
            p.error("--pipeline-stages runs on the cpu, without --scaling or --compare-bare")
        try:
            args.partition = partition_method(args.partition)
        except ValueError as e:
            p.error(f"--partition {args.partition!r}: {e}")
    return args


def make_step(args, comm, stats=None):
    """A training step of the chosen model on synthetic data: wrapped in DDP over `comm`, or with
    --zero 1 stepped by a ZeroRedundancyOptimizer over it (averaging, as DDP does here); and the DDP
    (None under --zero 1). `stats`, if given, gets `model` and `opt` and, with --zero 1, each step's
    optimizer time appended to stats["opt_s"]."""
    db.manual_seed(0)
    model, in_shape, classes = build_model(args.model, args.sizes)
    if args.device == "cuda":
        model.to("cuda")
    cls = registry.OPTIMIZERS[getattr(args, "optimizer", "sgd")]
    if getattr(args, "zero", 0):
        verify_same_model(model, comm)
        broadcast_module(model, comm)
        ddp, net = None, model
        opt = ZeroRedundancyOptimizer(model.parameters(), cls, comm=comm, average=True, lr=0.01)
    else:
        ddp = net = DistributedDataParallel(model, comm, bucket_cap_mb=args.bucket_mb)
        opt = cls(ddp.parameters(), lr=0.01)
    rng = numpy.random.default_rng(get_comm().rank)
    x = db.tensor(rng.standard_normal((args.batch_per_rank,) + in_shape).astype(args.dtype), device=args.device)
    y = rng.integers(0, classes, args.batch_per_rank)
    if stats is not None:
        stats.update(model=model, opt=opt, opt_s=[])

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        t0 = time.perf_counter()
        opt.step()
        if stats is not None and ddp is None:
            stats["opt_s"].append(time.perf_counter() - t0)
    return step, ddp


def _array_bytes(values) -> int:
    return sum(int(v.nbytes) for v in values if backend.is_array(v))


def memory_bytes(model, opt) -> dict:
    """This rank's bytes of parameters, gradients, optimizer state and reduction buffers (see the doc)."""
    params = list(model.parameters())
    zero = isinstance(opt, ZeroRedundancyOptimizer)
    state = (opt.optim if zero else opt).state
    return {"param_bytes": _array_bytes(p.data for p in params),
            "grad_bytes": _array_bytes(p.grad for p in params if p.grad is not None),
            "optimizer_state_bytes": _array_bytes(v for st in state.values() for v in st.values()),
            "comm_buffer_bytes": (_array_bytes(opt._buffers.values()) + _array_bytes(opt._shards.values())
                                  if zero else 0)}


def run_scaling(args, comm) -> dict:
    """Weak scaling with the noise of a shared machine taken out as far as timing can. Three kinds
    of block take turns, so a disturbance hits all alike, and each keeps its best and median block:
    `solo`, rank 0 alone (a world of one, the other ranks asleep); `alone`, every rank training its
    own world of one at the same time (what the machine gives N busy cores, with no communication);
    and the data-parallel job on all ranks. solo/alone is the ceiling the hardware sets;
    alone/all is what data parallelism itself costs (communication and waiting for the slowest)."""
    if comm.size < 2:
        raise ValueError("--scaling compares one rank with all of them; run it under mpiexec -n 2 or more")
    step_all, _ = make_step(args, comm)
    step_alone = make_step(args, SelfComm())[0]
    for _ in range(args.warmup):
        step_all()
        step_alone()

    def block(step) -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        return (time.perf_counter() - t0) / args.steps

    def sleep_until_all_arrive() -> None:  # a rank waiting here sleeps, leaving the cores to the others
        release = comm.comm.Ibarrier()
        while not release.Test():
            time.sleep(0.0005)

    solo, alone, full = [], [], []
    for _ in range(args.scaling):
        if comm.rank == 0:
            solo.append(block(step_alone))
        sleep_until_all_arrive()
        comm.barrier()
        alone.append(block(step_alone))
        sleep_until_all_arrive()
        comm.barrier()
        full.append(block(step_all))
    # a block of all ranks lasts as long as its slowest rank
    alone, full = (numpy.max(comm.allgather(numpy.array(xs)), axis=0) for xs in (alone, full))
    solo = comm.bcast_obj(solo)  # rank 0's
    out = {"model": args.model, "world_size": comm.size, "batch_per_rank": args.batch_per_rank,
           "dtype": args.dtype, "blocks": args.scaling, "steps_per_block": args.steps}
    for stat, pick in (("best", min), ("median", statistics.median)):
        t_solo, t_alone, t_all = pick(solo), pick(alone), pick(full)
        out.update({f"solo_step_ms_{stat}": 1e3 * t_solo, f"alone_step_ms_{stat}": 1e3 * t_alone,
                    f"step_ms_{stat}": 1e3 * t_all, f"weak_scaling_{stat}": t_solo / t_all,
                    f"machine_scaling_{stat}": t_solo / t_alone, f"ddp_vs_alone_{stat}": t_alone / t_all})
    return out


def run_pipeline(args, comm) -> dict:
    """Time pipeline-parallel steps (SGD, lr 0.01) and gather each stage's PipelineStage.last_stats."""
    grid = ProcessGrid(comm, pipeline_stages=args.pipeline_stages)
    db.manual_seed(0)
    model, in_shape, classes = build_model(args.model, args.sizes, pipeline=True)
    bounds = partition(model, grid.num_stages, args.partition)
    stage = PipelineStage(model, grid, bounds, args.schedule)
    del model  # the stage keeps its own layers only
    params = list(stage.parameters())
    opt = SGD(params, lr=0.01) if params else None
    rng = numpy.random.default_rng(grid.replica)
    n, global_batch = args.batch_per_rank, args.batch_per_rank * grid.dp_size
    x = rng.standard_normal((n,) + in_shape).astype(args.dtype)
    y = rng.integers(0, classes, n)

    def step():
        if opt:
            opt.zero_grad()
        stage.train_step(x, y, global_batch, args.micro_batches)
        if opt:
            opt.step()
        return stage.last_stats

    for _ in range(args.warmup):
        step()
    stats = []
    comm.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        stats.append(step())
    comm.barrier()
    total = time.perf_counter() - t0
    mine = {"stage": grid.stage, "replica": grid.replica,
            "bubble_pct": 100 * sum(s.recv_wait_s for s in stats) / sum(s.step_s for s in stats),
            "peak": max(s.peak_activation_bytes for s in stats),
            "messages": stats[-1].messages_sent, "bytes": stats[-1].bytes_sent}
    ranks = sorted((r for r in comm.allgather_obj(mine) if r["replica"] == 0), key=lambda r: r["stage"])
    p, m = grid.num_stages, args.micro_batches
    return {
        "model": args.model, "world_size": comm.size, "pipeline_stages": p, "dp_size": grid.dp_size,
        "schedule": args.schedule, "micro_batches": m, "partition": [list(b) for b in bounds],
        "batch_per_rank": n, "global_batch": global_batch, "dtype": args.dtype, "threads": args.threads,
        "samples_per_sec": global_batch * args.steps / total, "step_ms": 1e3 * total / args.steps,
        "bubble_pct": [round(r["bubble_pct"], 2) for r in ranks],
        "bubble_ideal_pct": 100 * (p - 1) / (m + p - 1),
        "peak_activation_bytes": [r["peak"] for r in ranks],
        "messages_per_step": [r["messages"] for r in ranks],
        "bytes_sent_per_step": [r["bytes"] for r in ranks],
    }


def run_tensor_parallel(args, comm) -> dict:
    """Time tensor-parallel steps of the mlp or cnn (SGD, lr 0.01); the world/T replicas each draw their
    own samples, the same on the T ranks of a replica, which compute one forward together."""
    # the trainer's checks: the same one-line UsageError on every rank before any collective
    cfg = argparse.Namespace(model=args.model, tensor_parallel=args.tensor_parallel, pipeline_stages=1,
                             hidden=args.sizes[1:-1])
    db.manual_seed(0)
    model, in_shape, classes = build_model(args.model, args.sizes)
    model, grid = tensor_parallel_for(cfg, model, comm)
    ddp = DistributedDataParallel(model, grid.dp_comm, bucket_cap_mb=args.bucket_mb) if grid.dp_size > 1 else None
    net = ddp if ddp is not None else model
    opt = SGD(model.parameters(), lr=0.01)
    rng = numpy.random.default_rng(grid.replica)
    n, global_batch = args.batch_per_rank, args.batch_per_rank * grid.dp_size
    x = db.tensor(rng.standard_normal((n,) + in_shape).astype(args.dtype))
    y = rng.integers(0, classes, n)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    comm.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    comm.barrier()
    total = time.perf_counter() - t0
    out = {"model": args.model, "world_size": comm.size, "tensor_parallel": grid.tp_size, "dp_size": grid.dp_size,
           "batch_per_rank": n, "global_batch": global_batch, "dtype": args.dtype, "threads": args.threads,
           "samples_per_sec": global_batch * args.steps / total, "step_ms": 1e3 * total / args.steps}
    everyone = comm.allgather_obj(memory_bytes(model, opt))
    out.update({k: [r[k] for r in everyone] for k in ("param_bytes", "grad_bytes", "optimizer_state_bytes")})
    return out


def run(args) -> dict:
    comm = init(threads=args.threads)
    if args.device == "cuda":  # GPU path (#14): one GPU per rank by local rank; the GPU communicator
        comm = setup_cuda(comm)
    db.set_default_dtype(numpy.dtype(args.dtype))
    if args.pipeline_stages is not None:
        return run_pipeline(args, comm)
    if args.tensor_parallel is not None:
        return run_tensor_parallel(args, comm)
    if args.scaling:
        return run_scaling(args, comm)
    stats = {}
    step, ddp = make_step(args, comm, stats)
    for _ in range(args.warmup):
        step()
    waits = []
    stats["opt_s"].clear()
    backend.synchronize()  # on a GPU: time the kernels, not their launches
    comm.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
        if ddp is not None:
            waits.append(ddp.last_comm_wait_s)
    backend.synchronize()
    comm.barrier()
    total = time.perf_counter() - t0
    out = {
        "model": args.model, "world_size": comm.size, "batch_per_rank": args.batch_per_rank,
        "dtype": args.dtype, "device": args.device, "threads": args.threads, "optimizer": args.optimizer,
        "zero": args.zero, "buckets": len(ddp.reducer.buckets) if ddp is not None else 0,
        "samples_per_sec": comm.size * args.batch_per_rank * args.steps / total,
        "step_ms": 1e3 * total / args.steps,
    }
    if ddp is not None:
        waits = comm.allgather(numpy.array(waits))  # (ranks, steps)
        # the longest wait of any rank (also waiting for a slower rank's backward), and the wait of
        # the rank that arrived last (the communication alone)
        out.update(comm_wait_ms=1e3 * float(numpy.median(waits.max(axis=0))),
                   comm_wait_last_rank_ms=1e3 * float(numpy.median(waits.min(axis=0))),
                   bytes_reduced_per_step=ddp.bytes_per_sync)
        out["comm_wait_pct"] = 100 * out["comm_wait_ms"] / out["step_ms"]
        out["bucket_paths"] = sorted({path for _, _, path in ddp.reducer.bucket_paths()})
    else:
        out["optimizer_step_ms"] = 1e3 * float(numpy.median(comm.allgather(numpy.array(stats["opt_s"])).max(axis=0)))
    mine = memory_bytes(stats["model"], stats["opt"])
    everyone = comm.allgather_obj(mine)
    out.update({k: [r[k] for r in everyone] for k in mine})
    if args.compare_bare and comm.size > 1:
        t = compare_reductions(ddp, comm, args.dtype)
        bare, fused, whole = t["bare"], t["bucket"], t["whole"]
        nbytes = ddp.bytes_per_sync
        out.update(bare_allreduce_ms=1e3 * bare, bucket_allreduce_ms=1e3 * fused, ddp_reduce_ms=1e3 * whole,
                   bare_bus_gbps=bus_gbps(nbytes, bare, comm.size),
                   bucket_bus_gbps=bus_gbps(nbytes, fused, comm.size),
                   bucket_vs_bare=bare / fused, ddp_reduce_vs_bare=bare / whole)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        out = run(args)
    except (ValueError, RuntimeError, TypeError, UsageError) as e:  # bad model/device/grid: one clear line, no traceback
        print(f"distbp.bench: error: {e}", file=sys.stderr)
        return 2
    if get_comm().rank == 0:
        if args.json:
            print(json.dumps(out))
        else:
            width = max(map(len, out))
            for k, v in out.items():
                print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
