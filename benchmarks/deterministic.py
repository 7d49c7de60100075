"""What deterministic mode costs: DistributedDataParallel(deterministic=True) against the normal mode.

    OPENBLAS_NUM_THREADS=1 python benchmarks/deterministic.py [--rounds 5] [--steps 10] [--json]
    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/deterministic.py --groups 8

Same model (the zoo MLP, --sizes), same global batch (--batch-per-rank x ranks), float32, SGD, one
BLAS thread per rank in both modes (deterministic mode needs it; the normal mode gets the same for a
fair comparison). Rounds alternate a block of --steps normal steps and a block of deterministic
steps, so a slow spell of a shared machine hits both alike; a block's time is its slowest rank's.
Prints the median step time of each mode and the median over rounds of the paired ratio
(deterministic / normal: above 1, deterministic is slower).

The exchange: the fixed-tree sum (subtree sums sent point-to-point, the root broadcast) against the
simple alternative of allgathering every group's gradient and summing the tree on every rank, timed
on the same bytes, each after a barrier (so neither counts a wait for a slower rank; the
*_comm_wait_ms figures are the waits inside the timed steps, which do), with the bytes each rank
receives per step (against a ring allreduce's
2(N-1)/N models; the normal mode's node shared-memory allreduce reads about as much).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy

import distbp as db
from distbp import nn
from distbp.distributed import DistributedDataParallel, init
from distbp.distributed.deterministic import group_starts
from distbp.optim import SGD
from distbp.training import registry


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="784,1024,1024,10", help="MLP layer sizes")
    p.add_argument("--batch-per-rank", type=int, default=128)
    p.add_argument("--groups", type=int, default=8, help="groups per global batch (deterministic mode)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps per block")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def _pairwise(values, lo, hi):
    if hi - lo == 1:
        return values[lo]
    mid = (lo + hi) // 2
    return _pairwise(values, lo, mid) + _pairwise(values, mid, hi)


def main(argv=None) -> dict:
    args = parse_args(argv)
    comm = init(threads=1)
    sizes = [int(v) for v in args.sizes.split(",")]
    db.set_default_dtype("float32")
    db.manual_seed(0)
    normal_model = registry.build_model("mlp", (sizes[0],), sizes[-1], hidden=sizes[1:-1])
    det_model = registry.build_model("mlp", (sizes[0],), sizes[-1], hidden=sizes[1:-1])
    det_model.load_state_dict(normal_model.state_dict())
    normal = DistributedDataParallel(normal_model, comm, average=False)
    det = DistributedDataParallel(det_model, comm, average=False, deterministic=True, groups=args.groups)
    opts = {id(normal): SGD(normal.parameters(), lr=0.01), id(det): SGD(det.parameters(), lr=0.01)}
    batch = args.batch_per_rank * comm.size
    rng = numpy.random.default_rng(0)
    X = rng.standard_normal((batch, sizes[0])).astype(numpy.float32)
    y = rng.integers(0, sizes[-1], batch)
    lo, hi = comm.rank * batch // comm.size, (comm.rank + 1) * batch // comm.size

    def normal_step():
        opts[id(normal)].zero_grad()
        out = normal(db.tensor(X[lo:hi]))
        (nn.functional.cross_entropy(out, y[lo:hi], reduction="sum") / batch).backward()
        opts[id(normal)].step()
        return normal.last_comm_wait_s

    def det_step(barrier_before_sum=False):
        opts[id(det)].zero_grad()
        for a, b in det.group_bounds(batch):
            out = det(db.tensor(X[a:b]))
            (nn.functional.cross_entropy(out, y[a:b], reduction="sum") / batch).backward()
        if barrier_before_sum:   # time the exchange alone, not the wait for a slower rank
            comm.barrier()
        det.reduce_groups()
        opts[id(det)].step()
        return det.reducer.last_comm_wait_s

    def block(step) -> tuple[float, list]:
        comm.barrier()
        t0, waits = time.perf_counter(), [step() for _ in range(args.steps)]
        mine = numpy.array([time.perf_counter() - t0])
        return float(comm.allreduce(mine, op="max")[0]) / args.steps, waits

    for step in (normal_step, det_step):   # warm up
        block(step)
    times = {"normal": [], "deterministic": []}
    waits = {"normal": [], "deterministic": []}
    for _ in range(args.rounds):
        for name, step in (("normal", normal_step), ("deterministic", det_step)):
            t, w = block(step)
            times[name].append(t)
            waits[name] += w
    ratios = [d / n for n, d in zip(times["normal"], times["deterministic"])]

    # the exchange alone, against allgathering every group's gradient (padded to the most groups a rank owns)
    numel, itemsize = det.reducer.numel, 4
    groups = len(group_starts(batch, args.groups)) - 1
    per_rank = -(-groups // comm.size)
    block_of = numpy.ones((per_rank, numel), numpy.float32)
    gather_s, tree_s = [], []
    for _ in range(args.rounds * 2):   # interleaved, each after a barrier
        tree_s.append(det_step(barrier_before_sum=True))
        comm.barrier()
        t0 = time.perf_counter()
        rows = comm.allgather(block_of).reshape(-1, numel)
        _pairwise(list(rows[:groups]), 0, groups)
        gather_s.append(time.perf_counter() - t0)
    result = {
        "world_size": comm.size, "global_batch": batch, "groups": groups, "parameters": numel,
        "normal_step_ms": 1e3 * statistics.median(times["normal"]),
        "deterministic_step_ms": 1e3 * statistics.median(times["deterministic"]),
        "deterministic_over_normal": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "normal_comm_wait_ms": 1e3 * statistics.median(waits["normal"]),
        "deterministic_comm_wait_ms": 1e3 * statistics.median(waits["deterministic"]),
        "tree_exchange_ms": 1e3 * statistics.median(tree_s),
        "tree_bytes_received": comm.allgather_obj(det.reducer.last_bytes_received),
        "ring_allreduce_bytes_received": 2 * (comm.size - 1) * numel * itemsize // comm.size,
        "allgather_exchange_ms": 1e3 * statistics.median(gather_s),
        "allgather_bytes_received": (comm.size - 1) * per_rank * numel * itemsize,
    }
    if comm.rank == 0:
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:28} {v if not isinstance(v, float) else round(v, 3)}")
    return result


if __name__ == "__main__":
    main()
