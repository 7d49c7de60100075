"""Where a pipeline stage's step goes: every action of the real run, timed, per stage.

    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/pipeline_profile.py \
        [--sizes 1536,1024,1024,1024,1024] [--batch 256] [--micro-batches 16] [--schedule 1f1b] [--steps 20]

Runs `PipelineStage.train_step` on 2 stages (float32, SGD, uniform partition) as
benchmarks/pipeline.py's bubble figure does, and wraps each action of the runtime with two clocks:
wall time (perf_counter) and this process's CPU time (process_time, which a shared machine's other
programs inflate less). Rank 0 prints, per stage and per step (the mean over the timed steps):

* every op's wall and CPU time and count, the activation-bytes count inside the forwards, the time
  outside the actions (the runtime's bookkeeping) and the compute (forward + backward CPU) per
  micro-batch;
* the wait the schedule itself implies for these compute times: every stage's action list run in
  simulated time with its measured mean forward and backward CPU times and free, instant messages
  (benchmarks/pipeline_estimate.py's simulator). With equal stages that is 1/(m+1); a stage whose
  micro-batches take longer than its neighbour's makes the neighbour wait m times the difference,
  whatever the schedule. Measured minus simulated is what messages, the step boundary and uneven
  action times add;
* message latency: for each receive posted before its send ended, the time from the send's end on
  one rank to the receive's end on the other (perf_counter is the system's monotonic clock, shared
  by both ranks);
* the same two stages' forward + backward timed in one process, alternated (the stages' balance
  without a second process sharing the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import distbp as db
from distbp import autograd, nn
from distbp.autograd import Tensor
from distbp.bench import build_model
from distbp.distributed import init
from distbp.distributed.grid import ProcessGrid
from distbp.distributed.pipeline import PipelineStage, partition
from distbp.distributed.pipeline import stage as stage_module
from distbp.distributed.pipeline.schedule import OPS
from distbp.nn import functional
from distbp.optim import SGD

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline_estimate import _makespan  # a sibling script, not a package


def _wrap(totals, events, op):
    original = getattr(stage_module._Run, op)

    def timed(self, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        out = original(self, *args)
        events.append((op, args[0] if args else None, wall, time.perf_counter()))
        t = totals.setdefault(op, [0.0, 0.0, 0])
        t[0] += time.perf_counter() - wall
        t[1] += time.process_time() - cpu
        t[2] += 1
        return out
    setattr(stage_module._Run, op, timed)


def _latencies(logs) -> str:
    """From the send's end on one rank to the end of the matching receive on the other, for the
    receives that were already waiting when the send was made: how long a waiting stage takes to
    get a message once its neighbour has sent it."""
    out = []
    for sender, receiver, send_op, recv_op in ((0, 1, "send_forward", "recv_forward"),
                                               (1, 0, "send_backward", "recv_backward")):
        sends = [e for e in logs[sender] if e[0] == send_op]
        recvs = [e for e in logs[receiver] if e[0] == recv_op]
        lat = sorted(r[3] - s[3] for s, r in zip(sends, recvs) if r[2] < s[3])  # receive posted before the send ended
        if lat:
            out.append(f"{recv_op} on stage {receiver}: {len(lat)} of {len(recvs)} waited past the send; send end -> "
                       f"receive end median {1e3 * lat[len(lat) // 2]:.3f} ms, 90th pct {1e3 * lat[9 * len(lat) // 10]:.3f} ms")
    return "\n".join(out)


def _solo_balance(sizes, batch, m, rounds=30) -> str:
    """Both stages' forward + backward of one micro-batch in this process, alternated, CPU time."""
    db.manual_seed(0)
    model, in_shape, classes = build_model("mlp", sizes, pipeline=True)
    layers = [nn.Sequential(*list(model._modules.values())[a:b]) for a, b in partition(model, 2, "uniform")]
    rng = numpy.random.default_rng(0)
    rows = batch // m
    x0 = rng.standard_normal((rows,) + in_shape).astype("float32")
    with db.no_grad():
        x1 = layers[0](Tensor(x0)).data
    y = rng.integers(0, classes, rows)
    seed = numpy.ones(x1.shape, dtype=x1.dtype)

    def first():
        autograd.backward([layers[0](Tensor(x0))], [seed])

    def last():
        loss = functional.cross_entropy(layers[1](Tensor(x1, requires_grad=True)), y, reduction="sum")
        float(loss.item())
        autograd.backward([loss / batch])

    times = ([], [])
    for _ in range(rounds):
        for s, fn in enumerate((first, last)):
            cpu = time.process_time()
            for _ in range(5):
                fn()
            times[s].append((time.process_time() - cpu) / 5)
    a, b = (statistics.median(t) for t in times)
    return (f"one process, alternated: forward+backward CPU per micro-batch stage 0 {1e3 * a:.3f} ms, stage 1 "
            f"{1e3 * b:.3f} ms (stage 1 / stage 0 = {b / a:.3f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1536,1024,1024,1024,1024")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--micro-batches", type=int, default=16)
    p.add_argument("--schedule", default="1f1b", choices=("gpipe", "1f1b", "1f1b-slack"),
                   help="the simulation knows no split backward, so not 1f1b-split")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    comm = init(threads=1)
    db.set_default_dtype(numpy.dtype("float32"))
    grid = ProcessGrid(comm, pipeline_stages=2)
    db.manual_seed(0)
    model, in_shape, classes = build_model("mlp", [int(v) for v in args.sizes.split(",")], pipeline=True)
    stage = PipelineStage(model, grid, partition(model, 2, "uniform"), args.schedule)
    opt = SGD(list(stage.parameters()), lr=0.01)
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((args.batch,) + in_shape).astype("float32")
    y = rng.integers(0, classes, args.batch)
    totals, events = {}, []
    for op in OPS:
        if hasattr(stage_module._Run, op):
            _wrap(totals, events, op)
    counted = stage_module._saved_bytes

    def saved_bytes(*a):  # the activation-bytes count, part of each forward action
        wall, cpu = time.perf_counter(), time.process_time()
        out = counted(*a)
        t = totals.setdefault("(count bytes)", [0.0, 0.0, 0])
        t[0] += time.perf_counter() - wall
        t[1] += time.process_time() - cpu
        t[2] += 1
        return out
    stage_module._saved_bytes = saved_bytes
    step_wall = step_cpu = wait = 0.0
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            totals.clear()
            events.clear()
            comm.barrier()
        opt.zero_grad()
        cpu = time.process_time()
        stage.train_step(x, y, args.batch, args.micro_batches)
        if i >= args.warmup:
            step_cpu += time.process_time() - cpu
            step_wall += stage.last_stats.step_s
            wait += stage.last_stats.recv_wait_s
        opt.step()
    n = args.steps
    in_ops = sum(t[0] for op, t in totals.items() if op in OPS)
    mine = {"stage": grid.stage, "step_ms": 1e3 * step_wall / n, "step_cpu_ms": 1e3 * step_cpu / n,
            "recv_wait_ms": 1e3 * wait / n, "bubble_pct": 100 * wait / step_wall,
            "outside_actions_ms": 1e3 * (step_wall - in_ops) / n,
            "ops": {op: {"wall_ms": round(1e3 * t[0] / n, 3), "cpu_ms": round(1e3 * t[1] / n, 3), "count": t[2] // n}
                    for op, t in totals.items()}}
    everyone = comm.allgather_obj(mine)
    logs = comm.allgather_obj(events)  # perf_counter is the system's monotonic clock: both ranks share it
    if comm.rank == 0:
        m = args.micro_batches
        print(f"{args.schedule}, m = {m} ({args.batch // m} rows), ideal wait share {100 / (m + 1):.1f}%")
        for r in everyone:
            ops = r["ops"]
            compute = sum(ops[o]["cpu_ms"] for o in ("forward", "backward") if o in ops)
            print(f"stage {r['stage']}: step {r['step_ms']:.2f} ms (CPU {r['step_cpu_ms']:.2f}), waiting "
                  f"{r['recv_wait_ms']:.2f} ms = {r['bubble_pct']:.1f}%, outside the actions {r['outside_actions_ms']:.2f} ms;"
                  f" forward+backward CPU {compute:.2f} ms = {compute / m:.3f} ms per micro-batch")
            for op, t in ops.items():
                print(f"    {op:<14} x{t['count']:<3} wall {t['wall_ms']:7.2f} ms  cpu {t['cpu_ms']:7.2f} ms")
        times = [{"forward": r["ops"]["forward"]["cpu_ms"] / m, "backward": r["ops"]["backward"]["cpu_ms"] / m,
                  "backward_split": 0.0, "weights": 0.0, "optimizer": 0.0} for r in everyone]
        _, idle = _makespan(times, args.schedule, m)
        print(f"simulated with these compute times, free messages: wait share {[round(100 * i, 1) for i in idle]}%"
              f" (measured {[round(r['bubble_pct'], 1) for r in everyone]}%)")
        print(_latencies(logs))
        print(json.dumps(everyone))
        print(_solo_balance([int(v) for v in args.sizes.split(",")], args.batch, m))
    comm.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
