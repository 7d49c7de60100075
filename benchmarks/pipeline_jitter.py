"""How much per-action jitter adds to a pipeline's wait share, on the real action lists (simulated).

    python benchmarks/pipeline_jitter.py [--stages 2] [--trials 200] [--seed 0]

Every stage runs its list (build_schedule) in simulated time; a forward takes 1 unit and a backward
2, each multiplied by a factor drawn uniformly from [1 - j, 1 + j]; sends are free and instantaneous.
It prints each stage's mean share of the step spent waiting (blocked receives and the idle tail)
for m = 8 and 16 against the jitter-free 1/(m+1)-style ideal, for 1f1b and 1f1b-slack. Two ranks
sharing two cores and their memory bandwidth vary like this from one 3-5 ms action to the next.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distbp.distributed.pipeline import build_schedules


def wait_shares(schedules, duration) -> list[float]:
    stages = len(schedules)
    clock, pc, sent, busy = [0.0] * stages, [0] * stages, {}, [0.0] * stages
    while any(pc[s] < len(schedules[s]) for s in range(stages)):
        for s in range(stages):
            while pc[s] < len(schedules[s]):
                a = schedules[s][pc[s]]
                direction = a.op.split("_")[-1]
                if a.op.startswith("recv"):
                    key = (s - 1 if direction == "forward" else s + 1, direction, a.micro_batch)
                    if key not in sent:
                        break
                    clock[s] = max(clock[s], sent[key])
                elif a.op.startswith("send"):
                    sent[s, direction, a.micro_batch] = clock[s]
                else:
                    d = duration(a.op)
                    clock[s] += d
                    busy[s] += d
                pc[s] += 1
    span = max(clock)
    return [1 - busy[s] / span for s in range(stages)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, default=2)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    for m in (8, 16):
        ideal = 100 * (args.stages - 1) / (m + args.stages - 1)
        for jitter in (0.0, 0.1, 0.2):
            for name in ("1f1b", "1f1b-slack"):
                schedules = build_schedules(name, args.stages, m)
                def duration(op, j=jitter):
                    return (1 if op == "forward" else 2) * rng.uniform(1 - j, 1 + j)
                runs = [wait_shares(schedules, duration) for _ in range(args.trials)]
                mean = [round(100 * statistics.mean(r[s] for r in runs), 1) for s in range(args.stages)]
                print(f"m={m:<2} jitter +-{jitter:.0%}  {name:<10}  wait share per stage {mean}%  (no jitter: {ideal:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
