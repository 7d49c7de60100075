"""Check that N ranks train exactly like one process.

    OPENBLAS_NUM_THREADS=1 mpiexec -n 4 python -m distbp.equivalence --model cnn --steps 20
    OPENBLAS_NUM_THREADS=1 mpiexec -n 3 python -m distbp.equivalence --model mlp --dropout 0.3

Every rank trains a zoo model twice from the same seed: once alone on each whole global batch (the
single-process reference) and once with DistributedDataParallel on its own slice of that batch
(SyncBatchNorm for the CNN, which has BatchNorm here). Global batches need not divide by the world
size: each rank's loss is its sum over samples * size / global batch, so DDP's average is the global
mean. Dropout masks are keyed by (micro-batch, global sample index), so they match too. Prints the
largest weight difference over all ranks and exits 1 when it exceeds --tol (float64: 1e-10 by default).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys

import numpy

import distbp as db
from distbp.nn import functional as F
from distbp.optim import SGD

from . import random as distbp_random
from .data import shard_bounds
from .distributed import DistributedDataParallel, SyncBatchNorm, init
from .training import registry

CLASSES = 3
# Zoo models at sizes that train in well under a second: input shape of one sample, options.
# A model registered elsewhere gets the default: 8x8 one-channel images, given flat.
SMALL = {
    "mlp": ((6,), {"hidden": [32, 32], "activation": "tanh"}),
    "cnn": ((2, 5, 5), {"hidden": [8], "channels": 4, "batch_norm": True}),
    "gru": ((4, 3), {"hidden": [8], "image_shape": (1, 4, 3)}),
    "lstm": ((4, 3), {"hidden": [8], "image_shape": (1, 4, 3)}),
}
_DEFAULT = ((64,), {"hidden": [16], "image_shape": (1, 8, 8)})


def small_model(name: str, dropout: float = 0.0):
    """(freshly initialised zoo model `name` with 3 outputs at a small size, input shape of one sample)."""
    in_shape, options = SMALL.get(name, _DEFAULT)
    return registry.build_model(name, in_shape, CLASSES, dropout=dropout, **options), in_shape


def small_gru():
    """The small GRU zoo model: 4x3 images read as 4 steps of 3 features (ImageRows, LastOutput(GRU),
    Linear), 3 classes."""
    return small_model("gru")[0]


def takes_dropout(name: str) -> bool:
    accepted = registry.accepted_options(registry.MODELS[name])
    return accepted is None or "dropout" in accepted


def check(model_name: str = "mlp", steps: int = 20, batch: int = 7, samples: int = 23, accumulate: int = 1,
          dtype: str = "float64", comm=None, dropout: float = 0.0) -> float:
    """Largest |DDP weight - single-process weight| over all ranks after `steps` SGD steps."""
    comm = comm or init()
    db.set_default_dtype(numpy.dtype(dtype))
    db.manual_seed(0)
    ref, in_shape = small_model(model_name, dropout)
    mine = SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ref), comm)
    ddp = DistributedDataParallel(mine, comm)
    opt_ref, opt = SGD(ref.parameters(), lr=0.1, momentum=0.9), SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    rng = numpy.random.default_rng(1)  # the same data on every rank
    x, y = rng.standard_normal((samples,) + in_shape).astype(dtype), rng.integers(0, CLASSES, samples)
    # epochs of `batch`-sized slices, each epoch ending in a short one when batch does not divide samples
    epoch = [numpy.arange(lo, min(lo + batch, samples)) for lo in range(0, samples, batch)]
    for step in range(steps):
        micro = [epoch[(step * accumulate + k) % len(epoch)] for k in range(accumulate)]
        opt_ref.zero_grad()
        opt.zero_grad()
        for k, idx in enumerate(micro):
            key = step * accumulate + k       # one dropout key per micro-batch, the same for both models
            with distbp_random.batch(step=key, first_sample=0):
                out = ref(db.tensor(x[idx]))
            (F.cross_entropy(out, y[idx]) / accumulate).backward()
            lo, hi = shard_bounds(len(idx), comm.rank, comm.size)
            part = idx[lo:hi]
            weight = comm.size / len(idx) / accumulate
            sync = k == accumulate - 1
            with ddp.no_sync() if not sync else contextlib.nullcontext():
                with distbp_random.batch(step=key, first_sample=lo):
                    out = ddp(db.tensor(x[part]))
                (F.cross_entropy(out, y[part], reduction="sum") * weight).backward()
        opt_ref.step()
        opt.step()
    a, b = ddp.state_dict(), ref.state_dict()
    diff = max(float(numpy.abs(a[k].astype(numpy.float64) - b[k]).max()) for k in a if a[k].size)
    return float(comm.allreduce(numpy.array([diff]), "max")[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m distbp.equivalence", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mlp", choices=list(registry.MODELS), help="zoo model to train")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=7, help="GLOBAL batch (need not divide by ranks)")
    p.add_argument("--samples", type=int, default=23, help="dataset size (the last batch may be short)")
    p.add_argument("--accumulate", type=int, default=1, help="micro-batches per step (no_sync between)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout probability (models that have dropout)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="precision")
    p.add_argument("--tol", type=float, default=None, help="max allowed difference (1e-10 / 1e-4)")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "samples", "accumulate"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.dropout < 1:
        p.error(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.dropout and not takes_dropout(args.model):
        p.error(f"--dropout: model {args.model!r} has no dropout; use --model mlp")
    tol = args.tol if args.tol is not None else (1e-10 if args.dtype == "float64" else 1e-4)
    comm = init()
    diff = check(args.model, args.steps, args.batch_size, args.samples, args.accumulate, args.dtype, comm,
                 dropout=args.dropout)
    ok = diff <= tol
    if comm.rank == 0:
        name = f"{args.model} (dropout {args.dropout:g})" if args.dropout else args.model
        print(f"{name}: {comm.size} ranks vs 1 process after {args.steps} steps, max weight difference "
              f"{diff:.3e} ({'OK' if ok else 'FAIL'}, tolerance {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
