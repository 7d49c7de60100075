"""What 2 pipeline stages would gain over one process, from each stage's measured compute times.

    python benchmarks/pipeline_estimate.py [--sizes 784,2048,2048,2048,2048,10] [--batch 256]
                                           [--micro-batches 8] [--rounds 5]

One process, one BLAS thread, float32. It times, in CPU seconds (time.process_time, so other
programs on a shared machine slow it less than they slow wall-clock figures), the whole model's
training step on the whole batch, and each stage's pieces at the micro-batch size: a forward, a
backward (whole, and input gradients only), the step's weight gradients in one product per weight
(what `1f1b-split`'s weight actions run) and the optimizer step. Then it runs every stage's real
action list (build_schedule, 1f1b and 1f1b-split) in simulated time with those durations, sends
free and instantaneous, and prints the step's length against the one process's: the speed-up two
stages would reach on two idle cores with free transfers (before the machine's two-process factor,
~0.95 on the 2-core machine), and each stage's idle share. The stage boundary is
`partition(model, 2, "parameters")`, as in benchmarks/pipeline.py's throughput figure.
"""
from __future__ import annotations

import argparse
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
from distbp.autograd import Tensor, WeightGradStash, defer_weight_grads
from distbp.bench import build_model
from distbp.distributed.pipeline import build_schedule, partition
from distbp.nn import functional
from distbp.optim import SGD


def _cpu(fn, rounds: int) -> float:
    """Median CPU seconds of fn() over `rounds` calls, after one untimed call."""
    fn()
    times = []
    for _ in range(rounds):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def _stage_times(layers, x, y, first: bool, last: bool, m: int, rounds: int) -> dict:
    """CPU seconds of one micro-batch's forward, backward (whole and input-only) and of the step's
    weight gradients of m micro-batches in one product per weight, on the stage `layers`."""
    params = list(layers.parameters())
    opt = SGD(params, lr=0.01) if params else None
    rows = len(x) // m

    def forward(i):
        xi = Tensor(x[i * rows:(i + 1) * rows], requires_grad=not first)  # a received activation wants a gradient
        out = layers(xi)
        if last:
            out = functional.cross_entropy(out, y[i * rows:(i + 1) * rows], reduction="sum") / len(x)
        return out

    def seed(out):
        return None if last else [numpy.ones(out.shape, dtype=out.dtype)]

    def whole_backward():
        out = forward(0)
        autograd.backward([out], seed(out))

    def split_backward():
        out = forward(0)
        with defer_weight_grads(WeightGradStash()):
            autograd.backward([out], seed(out))

    def weights():
        stash = WeightGradStash()
        for i in range(m):
            out = forward(i)
            with defer_weight_grads(stash):
                autograd.backward([out], seed(out))
        t = time.process_time()
        stash.flush()
        return time.process_time() - t

    f = _cpu(lambda: forward(0), rounds)
    fb = _cpu(whole_backward, rounds)
    fb_split = _cpu(split_backward, rounds)
    w = 0.0
    if m > 1:
        weights()
        w = statistics.median(weights() for _ in range(rounds))
    step = _cpu(opt.step, rounds) if opt else 0.0
    for p in params:
        p.grad = None
    return {"forward": f, "backward": fb - f, "backward_split": fb_split - f, "weights": w, "optimizer": step}


def _makespan(times: list[dict], name: str, m: int) -> tuple[float, list[float]]:
    """Run each stage's action list of schedule `name` with the measured durations; sends are free."""
    stages = len(times)
    lists = [build_schedule(name, stages, m, s) for s in range(stages)]
    split = name.endswith("split")
    clock, pc, sent, busy = [0.0] * stages, [0] * stages, {}, [0.0] * stages
    while any(pc[s] < len(lists[s]) for s in range(stages)):
        moved = False
        for s in range(stages):
            while pc[s] < len(lists[s]):
                a = lists[s][pc[s]]
                if a.op in ("recv_forward", "recv_backward"):
                    peer = s - 1 if a.op == "recv_forward" else s + 1
                    key = (peer, a.op.split("_")[1], a.micro_batch)
                    if key not in sent:
                        break
                    clock[s] = max(clock[s], sent[key])
                elif a.op in ("send_forward", "send_backward"):
                    sent[s, a.op.split("_")[1], a.micro_batch] = clock[s]
                else:
                    d = {"forward": times[s]["forward"],
                         "backward": times[s]["backward_split" if split else "backward"],
                         "weight": times[s]["weights"] / m}[a.op]
                    clock[s] += d
                    busy[s] += d
                pc[s] += 1
                moved = True
        if not moved:
            raise RuntimeError("the schedules deadlock")
    ends = [clock[s] + times[s]["optimizer"] for s in range(stages)]
    span = max(ends)
    return span, [1 - (busy[s] + times[s]["optimizer"]) / span for s in range(stages)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="784,2048,2048,2048,2048,10")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--micro-batches", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    db.manual_seed(0)
    model, _, classes = build_model("mlp", sizes, pipeline=True)
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((args.batch, sizes[0])).astype("float32")
    y = rng.integers(0, classes, args.batch)

    whole = _stage_times(model, x, y, True, True, 1, args.rounds)
    one = whole["forward"] + whole["backward"] + whole["optimizer"]
    bounds = partition(model, 2, "parameters")
    times, acts = [], x
    for s, (a, b) in enumerate(bounds):
        layers = nn.Sequential(*list(model._modules.values())[a:b])
        times.append(_stage_times(layers, acts, y, s == 0, s == len(bounds) - 1, args.micro_batches, args.rounds))
        with db.no_grad():
            acts = layers(Tensor(acts)).data
    m = args.micro_batches
    print(f"one process, whole batch of {args.batch}: {1e3 * one:.1f} ms CPU per step; stages {bounds}")
    for s, t in enumerate(times):
        print(f"  stage {s} at {args.batch // m} rows (ms CPU): forward {1e3 * t['forward']:.2f}, backward "
              f"{1e3 * t['backward']:.2f} (input gradients only {1e3 * t['backward_split']:.2f}), the step's "
              f"weight gradients at once {1e3 * t['weights']:.1f}, optimizer {1e3 * t['optimizer']:.1f}")
    for name in ("1f1b", "1f1b-split"):
        span, idle = _makespan(times, name, m)
        print(f"{name:<10}: simulated step {1e3 * span:.1f} ms -> {one / span:.2f}x one process "
              f"(idle share per stage {[round(100 * i, 1) for i in idle]}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
