"""The most 2 pipeline stages can reach on this machine: each stage's own work, side by side, never waiting.

    python benchmarks/pipeline_bound.py [--rounds 3] [--steps 10] [--micro-batches 8]
                                        [--partitions parameters,balanced] [--sizes 784,2048,2048,2048,2048,10]

Each round alternates one process on the whole batch (256 rows, `python -m distbp.bench`) with, for
each partition, two processes at once (`mpiexec -n 2` of this file's worker) that each do exactly
their stage's computations of a 2-stage `1f1b-split` step: for each of the M micro-batches, the
forward and the input-gradient backward of the stage's layers on arrays of the shapes a real stage
receives, then one product per weight over all the step's rows and an SGD step. Nothing is sent and
nothing is waited for (a barrier starts each step; the step's time is the slower rank's). So the
ratio to one process is what 2 stages reach with no bubble and free messages: a real pipeline's
waits come on top. Float32, 1 BLAS thread per rank; the figure is the median of the paired ratios.

Also printed, per partition: each stage's share of the step it computes (the slower is the bound),
and the same worker with one rank (both stages in turn, one process: what cutting the batch into
M micro-batches alone costs).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
MPIEXEC = os.path.join(os.path.dirname(PY), "mpiexec")
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT)
BATCH = 256


def worker(sizes, micro_batches, method, steps) -> None:
    """Under mpiexec -n 1 or 2: stage `rank` of a 2-stage cut (rank 0 of 1 runs both stages in turn).
    Prints, on rank 0, one JSON line: the median step time of the slower rank, and each rank's."""
    import numpy

    import distbp as db
    from distbp import autograd, nn
    from distbp.autograd import Tensor, WeightGradStash, defer_weight_grads, no_grad
    from distbp.distributed import get_comm
    from distbp.distributed.pipeline.partition import partition, stage_layers
    from distbp.optim import SGD
    from distbp.training.config import partition_method
    from distbp.training.registry import build_model

    comm = get_comm()
    db.manual_seed(0)
    model = build_model("mlp", (sizes[0],), sizes[-1], hidden=sizes[1:-1])
    bounds = partition(model, 2, partition_method(method))
    stages = [nn.Sequential(*[m for _, m in stage_layers(model, bounds, s)]) for s in range(2)]
    mine = stages if comm.size == 1 else [stages[comm.rank]]
    rng = numpy.random.default_rng(comm.rank)
    rows = [len(c) for c in numpy.array_split(numpy.arange(BATCH), micro_batches)]
    x = rng.standard_normal((BATCH, sizes[0])).astype(numpy.float32)
    y = rng.integers(0, sizes[-1], BATCH)
    with no_grad():                                  # what stage 1 receives: stage 0's output
        middle = stages[0](Tensor(x[:1])).shape[1:]
    received = rng.standard_normal((BATCH, *middle)).astype(numpy.float32)
    sent_back = rng.standard_normal((BATCH, *middle)).astype(numpy.float32)
    opts = [SGD(s.parameters(), lr=1e-6) for s in mine]
    first = comm.rank == 0

    def step():
        for s, stage in enumerate(mine):
            is_first = first and s == 0
            stash, at = WeightGradStash(), 0
            for n in rows:
                inputs = Tensor(x[at:at + n]) if is_first else Tensor(received[at:at + n], requires_grad=True)
                out = stage(inputs)
                with defer_weight_grads(stash):
                    if is_first:      # the first stage's gradient comes from the next
                        autograd.backward([out], [sent_back[at:at + n]])
                    else:
                        (nn.functional.cross_entropy(out, y[at:at + n], reduction="sum") / BATCH).backward()
                at += n
            stash.flush()
            opts[s].step()
            opts[s].zero_grad()

    times = []
    for i in range(steps + 2):
        comm.barrier()
        t = time.perf_counter()
        step()
        if i >= 2:    # the first steps warm the caches and allocator
            times.append(time.perf_counter() - t)
    mine_s = statistics.median(times)
    everyone = comm.allgather_obj(mine_s)
    if comm.rank == 0:
        print(json.dumps({"step_s": max(everyone), "per_rank_s": everyone,
                          "partition": [[list(v) if isinstance(v, tuple) else v for v in b] for b in bounds]}))


def _run(cmd) -> dict:
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--micro-batches", type=int, default=8)
    p.add_argument("--partitions", default="parameters,balanced")
    p.add_argument("--sizes", default="784,2048,2048,2048,2048,10")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)   # the partition, under mpiexec
    args = p.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    if args.worker:
        worker(sizes, args.micro_batches, args.worker, args.steps)
        return 0
    me = [PY, os.path.abspath(__file__), "--sizes", args.sizes, "--micro-batches", str(args.micro_batches),
          "--steps", str(args.steps)]
    parts = args.partitions.split(",")
    one, two, alone = [], {m: [] for m in parts}, {m: [] for m in parts}
    for _ in range(args.rounds):
        whole = _run([PY, "-m", "distbp.bench", "--json", "--threads", "1", "--steps", str(args.steps), "--sizes",
                      args.sizes, "--batch-per-rank", str(BATCH)])
        one.append(whole["step_ms"] / 1e3)
        for m in parts:
            two[m].append(_run([MPIEXEC, "-n", "2", *me, "--worker", m]))
            alone[m].append(_run([MPIEXEC, "-n", "1", *me, "--worker", m])["step_s"])
    print(f"one process, whole batch of {BATCH}: {statistics.median(one) * 1e3:.1f} ms a step (median of "
          f"{args.rounds})")
    out = {"one_process_step_s": one}
    for m in parts:
        ratios = [o / r["step_s"] for o, r in zip(one, two[m])]
        cut = [o / a for o, a in zip(one, alone[m])]
        shares = [statistics.median(r["per_rank_s"][s] / r["step_s"] for r in two[m]) for s in range(2)]
        print(f"--partition {m:<10} {two[m][0]['partition']}: 2 stages side by side, never waiting: "
              f"{statistics.median(ratios):.2f}x one process (paired, range {min(ratios):.2f}-{max(ratios):.2f}); "
              f"stage time / step {shares[0]:.2f} and {shares[1]:.2f}; one process cutting the batch into "
              f"{args.micro_batches} micro-batches: {statistics.median(cut):.2f}x", flush=True)
        out[m] = {"ratios": ratios, "one_process_micro_batched_vs_whole": cut, "runs": two[m]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
