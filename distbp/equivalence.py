"""Check that N ranks train exactly like one process (PAINS.md #8: "N GPUs give different results").

    OPENBLAS_NUM_THREADS=1 mpiexec -n 4 python -m distbp.equivalence --model cnn --steps 20

Every rank trains the model twice from the same seed: once alone on each whole global batch (the
single-process reference) and once with DistributedDataParallel on its own slice of that batch
(SyncBatchNorm for the CNN). Global batches need not divide by the world size: each rank's loss is
its sum over samples * size / global batch, so DDP's average is the global mean. Prints the largest
weight difference over all ranks and exits 1 when it exceeds --tol (float64: 1e-10 by default).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys

import numpy

import distbp as db
from distbp import nn
from distbp.nn import functional as F
from distbp.optim import SGD

from .distributed import DistributedDataParallel, SyncBatchNorm, init


class _GRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        _, h = self.gru(x)
        return self.head(h[-1])


def _model(name: str):
    """(model, input shape of one sample); 3 classes."""
    if name == "mlp":
        return nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)), (6,)
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 5 * 5, 3)), (2, 5, 5)
    return _GRUNet(), (4, 3)


def check(model_name: str = "mlp", steps: int = 20, batch: int = 7, samples: int = 23, accumulate: int = 1,
          dtype: str = "float64", comm=None) -> float:
    """Largest |DDP weight - single-process weight| over all ranks after `steps` SGD steps."""
    comm = comm or init()
    db.set_default_dtype(numpy.dtype(dtype))
    db.manual_seed(0)
    ref, in_shape = _model(model_name)
    mine = SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref), comm)
    ddp = DistributedDataParallel(mine, comm)
    opt_ref, opt = SGD(ref.parameters(), lr=0.1, momentum=0.9), SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    rng = numpy.random.default_rng(1)  # the same data on every rank
    x, y = rng.standard_normal((samples,) + in_shape).astype(dtype), rng.integers(0, 3, samples)
    # epochs of `batch`-sized slices, each epoch ending in a short one when batch does not divide samples
    epoch = [numpy.arange(lo, min(lo + batch, samples)) for lo in range(0, samples, batch)]
    for step in range(steps):
        micro = [epoch[(step * accumulate + k) % len(epoch)] for k in range(accumulate)]
        opt_ref.zero_grad()
        opt.zero_grad()
        for k, idx in enumerate(micro):
            (F.cross_entropy(ref(db.tensor(x[idx])), y[idx]) / accumulate).backward()
            part = numpy.array_split(idx, comm.size)[comm.rank]
            weight = comm.size / len(idx) / accumulate
            sync = k == accumulate - 1
            with ddp.no_sync() if not sync else contextlib.nullcontext():
                (F.cross_entropy(ddp(db.tensor(x[part])), y[part], reduction="sum") * weight).backward()
        opt_ref.step()
        opt.step()
    a, b = ddp.state_dict(), ref.state_dict()
    diff = max(float(numpy.abs(a[k].astype(numpy.float64) - b[k]).max()) for k in a if a[k].size)
    return float(comm.allreduce(numpy.array([diff]), "max")[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m distbp.equivalence", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn", "gru"], help="model to train")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=7, help="GLOBAL batch (need not divide by ranks)")
    p.add_argument("--samples", type=int, default=23, help="dataset size (the last batch may be short)")
    p.add_argument("--accumulate", type=int, default=1, help="micro-batches per step (no_sync between)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="precision")
    p.add_argument("--tol", type=float, default=None, help="max allowed difference (1e-10 / 1e-4)")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "samples", "accumulate"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    tol = args.tol if args.tol is not None else (1e-10 if args.dtype == "float64" else 1e-4)
    comm = init()
    diff = check(args.model, args.steps, args.batch_size, args.samples, args.accumulate, args.dtype, comm)
    ok = diff <= tol
    if comm.rank == 0:
        print(f"{args.model}: {comm.size} ranks vs 1 process after {args.steps} steps, max weight difference "
              f"{diff:.3e} ({'OK' if ok else 'FAIL'}, tolerance {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
