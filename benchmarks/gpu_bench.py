"""distbp's training step on a GPU against PyTorch's on the same model, each in its own process.

    python benchmarks/gpu_bench.py                      # MLP 784-1024-1024-10, batch 256, cuda
    python benchmarks/gpu_bench.py --device cpu --rounds 1 --steps 3   # the plumbing, on a CPU

Each round runs `python -m distbp.bench --device D --json` and then this file's torch side (the same
architecture, mirrored layer by layer by torch_mirror.py, SGD lr 0.01, cross entropy, synthetic
data, synchronised before and after the timed steps), alternating so that drift hits both alike.
Prints one JSON object: each side's step_ms per round, their medians and torch/distbp (the issue's
goal: distbp within 1.5x of torch, i.e. ratio >= 0.67). distbp's step runs under its DDP wrapper
(a world of one: the gradients are still copied into their bucket), torch's bare.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def torch_side(args) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    from torch_mirror import mirror

    from distbp.bench import build_model
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: torch sees no CUDA device (a CPU-only torch build?)")
    sizes = [int(s) for s in args.sizes.split(",")]
    model = mirror(build_model("mlp", sizes)[0]).to(args.device)
    dtype = getattr(torch, args.dtype)
    model = model.to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((args.batch, sizes[0]))).to(args.device, dtype)
    y = torch.from_numpy(rng.integers(0, sizes[-1], args.batch)).to(args.device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()
    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    return {"side": "torch", "torch": torch.__version__, "step_ms": 1e3 * (time.perf_counter() - t0) / args.steps}


def _run(cmd: list) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"gpu_bench: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", default="784,1024,1024,10")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--torch-side", action="store_true", help="(internal) time torch's step in this process")
    args = p.parse_args(argv)
    if args.torch_side:
        print(json.dumps(torch_side(args)))
        return 0
    common = ["--sizes", args.sizes, "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--dtype", args.dtype, "--device", args.device]
    ours = [sys.executable, "-m", "distbp.bench", "--model", "mlp", "--batch-per-rank", str(args.batch),
            "--json", *common]
    theirs = [sys.executable, os.path.abspath(__file__), "--torch-side", "--batch", str(args.batch), *common]
    rounds = []
    for _ in range(args.rounds):
        rounds.append({"distbp": _run(ours), "torch": _run(theirs)})
    d = statistics.median(r["distbp"]["step_ms"] for r in rounds)
    t = statistics.median(r["torch"]["step_ms"] for r in rounds)
    print(json.dumps({"device": args.device, "sizes": args.sizes, "batch": args.batch, "dtype": args.dtype,
                      "steps": args.steps, "distbp_step_ms": [r["distbp"]["step_ms"] for r in rounds],
                      "torch_step_ms": [r["torch"]["step_ms"] for r in rounds], "distbp_median_ms": d,
                      "torch_median_ms": t, "torch_over_distbp": t / d, "goal_met_1_5x": d <= 1.5 * t,
                      "torch": rounds[0]["torch"]["torch"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
