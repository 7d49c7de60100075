"""Training-step speed of distbp's conv and GRU layers, beside PyTorch CPU's for the same step.

    PYTHONPATH=. python benchmarks/layers_vs_torch.py [--threads 2] [--rounds 8]

Steps (float32, synthetic data, SGD lr 0.01):
  cnn: Conv2d(1, 32, 3) + ReLU + MaxPool2d(2) + Flatten + Linear(32*13*13, 10), 28x28 inputs, batch 128
  gru: GRU(16, 64) over 40 steps, batch 100, Linear(64, 10) on h_n
Torch's column appears when `import torch` works in the running interpreter (torch is never a
dependency; run this with a venv that has torch==2.13.0 and PYTHONPATH pointing at the repo).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import distbp as db
from distbp import nn
from distbp.optim import SGD

CASES = {
    "cnn": {"batch": 128, "x_shape": (1, 28, 28)},
    "gru": {"batch": 100, "x_shape": (40, 16)},  # (T, features), batch_first
}


def distbp_model(case):
    if case == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 13 * 13, 10))
    return _GRUHead(nn, batch_first=True)


class _GRUHead(nn.Module):
    def __init__(self, lib, batch_first):
        super().__init__()
        self.gru = lib.GRU(16, 64, batch_first=batch_first)
        self.fc = lib.Linear(64, 10)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h[0])


def time_rounds(steps, rounds, warmup):
    """Per-step seconds of each framework, measured in alternating rounds of `steps` steps so that
    load from other processes on a shared machine hits both columns alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    per_step = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(5):
                step()
            per_step[name].append((time.perf_counter() - t0) / 5)
    return {name: (statistics.median(t), min(t)) for name, t in per_step.items()}


def distbp_step(case):
    db.manual_seed(0)
    cfg = CASES[case]
    model = distbp_model(case)
    opt = SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg["batch"], *cfg["x_shape"])).astype(np.float32)
    y = rng.integers(0, 10, cfg["batch"])
    xt = db.tensor(x)

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xt), y)
        loss.backward()
        opt.step()

    return step


def torch_step(case):
    import torch

    torch.manual_seed(0)
    cfg = CASES[case]
    if case == "cnn":
        tn = torch.nn
        model = tn.Sequential(tn.Conv2d(1, 32, 3), tn.ReLU(), tn.MaxPool2d(2), tn.Flatten(),
                              tn.Linear(32 * 13 * 13, 10))
    else:
        class Head(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.gru = torch.nn.GRU(16, 64, batch_first=True)
                self.fc = torch.nn.Linear(64, 10)

            def forward(self, x):
                _, h = self.gru(x)
                return self.fc(h[0])
        model = Head()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((cfg["batch"], *cfg["x_shape"])).astype(np.float32))
    y = torch.tensor(rng.integers(0, 10, cfg["batch"]))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="BLAS / torch intra-op threads")
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds of 5 timed steps per framework")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--cases", default="cnn,gru", help="comma-separated: cnn, gru")
    args = ap.parse_args()
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    print(f"threads={args.threads}, ms per step: median (min) over {args.rounds} rounds of 5 steps"
          + ("" if torch else "; torch not importable"))
    print(f"{'step':5s} {'distbp ms':>16s} {'samples/s':>10s} {'torch ms':>16s} {'samples/s':>10s} "
          f"{'distbp/torch':>13s}")
    with threadpool_limits(args.threads):
        for case in args.cases.split(","):
            batch = CASES[case]["batch"]
            steps = {"distbp": distbp_step(case)}
            if torch is not None:
                steps["torch"] = torch_step(case)
            res = time_rounds(steps, args.rounds, args.warmup)
            row = f"{case:5s}"
            for med, best in res.values():
                row += f" {med * 1e3:8.2f} ({best * 1e3:5.2f}) {batch / med:10.0f}"
            if torch is not None:
                row += f" {res['distbp'][0] / res['torch'][0]:13.2f}"
            print(row)


if __name__ == "__main__":
    main()
