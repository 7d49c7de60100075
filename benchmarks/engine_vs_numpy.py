"""One MLP training step (forward, cross entropy, backward, SGD) in distbp against the same math
written by hand in NumPy, and PyTorch when it is importable.

    python benchmarks/engine_vs_numpy.py                  # the two issue-2 MLPs, 2 BLAS threads
    python benchmarks/engine_vs_numpy.py --threads 1 --json
    python benchmarks/engine_vs_numpy.py --sizes 8,8,4 --batch 4   # tiny: shows pure Python overhead

NumPy and distbp are timed interleaved (A, B, A, B, ...) and each keeps its best block, so a noisy
neighbour slows both alike; `paired median` is the median over pairs of adjacent blocks of their ratio (torch is timed after them, on its own); compare figures from one run only (they vary up to 2x
from run to run on a shared machine). Before timing, one
step of each is checked to produce the same weights, so all three do the same work.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

import distbp as db
import distbp.nn.functional as F
from distbp import nn

DEFAULT_CONFIGS = [((784, 128, 10), 128), ((784, 1024, 1024, 10), 256)]
TIMING_LR = 0.01
CHECK_LR = 0.1  # the same-work check: large enough that a wrong step stands out from float32 rounding


def engine_step(weights, x, y, lr):
    """distbp: nn.Sequential of Linear/ReLU, F.cross_entropy, SGD."""
    layers = []
    for w, b in weights:
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data[...] = w
        lin.bias.data[...] = b
        layers += [lin, nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    opt = db.optim.SGD(model.parameters(), lr=lr)
    xt = db.tensor(x)

    def step():
        loss = F.cross_entropy(model(xt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def params():
        return [p.data for p in model.parameters()]
    return step, params


def numpy_step(weights, x, y, lr):
    """The same step by hand: the fewest NumPy calls we know for this math."""
    ws = [(w.copy(), b.copy()) for w, b in weights]
    n = len(x)
    rows = np.arange(n)

    def step():
        acts = [x]
        h = x
        for i, (w, b) in enumerate(ws):
            z = h @ w.T
            z += b
            h = np.maximum(z, 0) if i < len(ws) - 1 else z
            acts.append(h)
        z = acts[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, y]).mean()  # noqa: F841  (computed, as a training loop would)
        g = p
        g[rows, y] -= 1
        g /= n
        for i in range(len(ws) - 1, -1, -1):
            w, b = ws[i]
            gw, gb = g.T @ acts[i], g.sum(axis=0)
            if i > 0:
                g = (g @ w) * (acts[i] > 0)
            w -= lr * gw
            b -= lr * gb

    def params():
        return [a for wb in ws for a in wb]
    return step, params


def torch_step(weights, x, y, lr):
    import torch
    layers = []
    for w, b in weights:
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def params():
        return [p.detach().numpy() for p in model.parameters()]
    return step, params


def best_step_seconds(steps: dict, repeats: int, target_s: float, blocks: dict | None = None) -> dict:
    """Interleaved timing: per implementation, the best mean step time over `repeats` blocks.
    `blocks`, if given, receives every block's mean step time per implementation, in order."""
    for step in steps.values():  # warm up (allocator, BLAS buffers)
        for _ in range(3):
            step()
    t0 = time.perf_counter()
    next(iter(steps.values()))()
    # at least 10 steps a block: the first step after switching implementation pays for the other's
    # heap changes (page faults on fresh large arrays), which must not dominate a block
    n = max(10, int(target_s / max(time.perf_counter() - t0, 1e-6)))
    best = {name: float("inf") for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            sec = (time.perf_counter() - t0) / n
            best[name] = min(best[name], sec)
            if blocks is not None:
                blocks.setdefault(name, []).append(sec)
    return best


def run_config(sizes, batch, repeats, target_s, with_torch):
    rng = np.random.default_rng(0)
    # nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), in float32
    weights = [((rng.uniform(-1, 1, (o, i)) / np.sqrt(i)).astype(np.float32),
                (rng.uniform(-1, 1, o) / np.sqrt(i)).astype(np.float32)) for i, o in itertools.pairwise(sizes)]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    impls = {"numpy": numpy_step, "distbp": engine_step}
    if with_torch:
        impls["torch"] = torch_step
    # Same work check: one step from the same weights gives the same weights everywhere.
    checked = {name: make(weights, x, y, CHECK_LR) for name, make in impls.items()}
    for name, (step, params) in checked.items():
        step()
    for name, (_, params) in checked.items():
        for got, want, w0 in zip(params(), checked["numpy"][1](), (a for wb in weights for a in wb)):
            if not np.allclose(got, want, rtol=1e-4, atol=1e-6) or np.array_equal(got, w0):
                sys.exit(f"{name} and numpy disagree after one step; the comparison would be meaningless")
    built = {name: make(weights, x, y, TIMING_LR) for name, make in impls.items()}
    # numpy and distbp interleaved; torch alone afterwards, because its OpenMP workers keep spinning
    # after each torch call and would slow whatever block ran next
    blocks = {}
    best = best_step_seconds({name: built[name][0] for name in ("numpy", "distbp")}, repeats, target_s, blocks)
    if with_torch:
        best.update(best_step_seconds({"torch": built["torch"][0]}, repeats, target_s))
    row = {"sizes": list(sizes), "batch": batch}
    for name, sec in best.items():
        row[f"{name}_step_ms"] = sec * 1e3
        row[f"{name}_samples_per_sec"] = batch / sec
    row["distbp_over_numpy"] = best["numpy"] / best["distbp"]
    # each numpy block against the distbp block that ran right after it: a slow spell of the
    # machine mostly hits both, so the median of these ratios is the steadiest figure
    row["distbp_over_numpy_paired_median"] = statistics.median(
        a / b for a, b in zip(blocks["numpy"], blocks["distbp"]))
    if with_torch:
        row["torch_over_numpy"] = best["numpy"] / best["torch"]
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="BLAS threads (threadpoolctl)")
    ap.add_argument("--sizes", help="MLP layer sizes, e.g. 784,128,10 (default: the two issue-2 MLPs)")
    ap.add_argument("--batch", type=int, default=128, help="batch size with --sizes")
    # many short blocks: on a shared machine the best block is the one no neighbour disturbed
    ap.add_argument("--repeats", type=int, default=20, help="timed blocks per implementation")
    ap.add_argument("--block-seconds", type=float, default=0.05, help="length of one timed block")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even when importable")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        ap.error(f"--threads and --repeats must be >= 1, got {args.threads} and {args.repeats}")
    configs = DEFAULT_CONFIGS
    if args.sizes:
        try:
            configs = [(tuple(int(s) for s in args.sizes.split(",")), args.batch)]
        except ValueError:
            ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    with_torch = False
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(args.threads)
            with_torch = True
        except ImportError:
            pass
    with threadpool_limits(args.threads):
        rows = [run_config(s, b, args.repeats, args.block_seconds, with_torch) for s, b in configs]
    if args.json:
        print(json.dumps({"threads": args.threads, "dtype": "float32", "results": rows}))
        return
    names = ["numpy", "distbp"] + (["torch"] if with_torch else [])
    print(f"one training step, float32, {args.threads} BLAS thread(s); samples/s (best of {args.repeats})")
    head = (f"{'MLP':>22} {'batch':>6}" + "".join(f"{n:>12}" for n in names)
            + f"{'distbp/numpy':>14}{'paired median':>15}")
    print(head)
    for r in rows:
        line = f"{'-'.join(map(str, r['sizes'])):>22} {r['batch']:>6}"
        line += "".join(f"{r[n + '_samples_per_sec']:>12.0f}" for n in names)
        print(line + f"{r['distbp_over_numpy']:>14.3f}{r['distbp_over_numpy_paired_median']:>15.3f}")


if __name__ == "__main__":
    main()
