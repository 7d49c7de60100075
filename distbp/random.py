"""Counter-based random numbers: each value is a pure function of a key and its position.

Data parallelism must not change what a model computes, and a dropout mask drawn from a stateful
generator does: one process draws one (N, D) mask for the whole batch, while rank r of N ranks
draws its own mask for its slice, starting from the same state, so its samples get rank 0's
masks. Here the mask of global sample i is hashed from (seed, step, draw, i, element), so it is
the same whichever rank holds sample i and however the batch is split.

    with distbp.random.batch(step=12, first_sample=64):   # this rank's rows are samples 64..
        loss = model(x)                                    # every dropout draw is keyed by both

`draw` counts the random draws inside one `batch(...)` block, in call order: every rank runs the
same forward, so the k-th draw is the same layer everywhere, with no per-layer bookkeeping.
Outside a block the step counts draws process-wide and rows start at sample 0, so a plain script is
still seeded and repeatable. The hash is splitmix64's finaliser over a 64-bit counter (a bijection,
so no two positions under one key collide); it runs on numpy or cupy arrays alike.
"""
from __future__ import annotations

import contextlib
import math

import numpy

from . import backend

_GOLDEN = numpy.uint64(0x9E3779B97F4A7C15)
_M1 = numpy.uint64(0xBF58476D1CE4E5B9)
_M2 = numpy.uint64(0x94D049BB133111EB)


def _mix(z):
    """splitmix64's finaliser: a bijection on uint64 that scatters every input bit."""
    z = (z ^ (z >> numpy.uint64(30))) * _M1
    z = (z ^ (z >> numpy.uint64(27))) * _M2
    return z ^ (z >> numpy.uint64(31))


def key(*parts: int) -> int:
    """One 64-bit key from several integers (order matters)."""
    k = numpy.uint64(0)
    with numpy.errstate(over="ignore"):
        for part in parts:
            k = _mix(k ^ (numpy.uint64(int(part) & 0xFFFFFFFFFFFFFFFF) + _GOLDEN))
    return int(k)


def uniform(k: int, shape, first_row: int = 0, xp=numpy, dtype=numpy.float64):
    """Uniform [0, 1) values of `shape` for rows first_row.. of a conceptual global array keyed by k.

    Row i's values depend only on (k, i, position in the row), so a slice of rows drawn on one
    rank equals the same rows drawn by one process for the whole array."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        shape, squeeze = (1,), True
    else:
        squeeze = False
    rows, width = shape[0], math.prod(shape[1:])
    start = numpy.uint64(first_row * width)
    counter = xp.arange(rows * width, dtype=xp.uint64) + start
    with numpy.errstate(over="ignore"):
        bits = _mix(counter * _GOLDEN + numpy.uint64(k))
    out = (bits >> numpy.uint64(11)).astype(xp.float64) * (1.0 / (1 << 53))
    out = out.reshape(shape).astype(dtype, copy=False)
    return out.reshape(()) if squeeze else out


class _Batch:
    __slots__ = ("draws", "first_sample", "step")

    def __init__(self, step: int, first_sample: int):
        self.step, self.first_sample, self.draws = int(step), int(first_sample), 0


_current: _Batch | None = None
_unkeyed_draws = 0  # draws made outside any batch(...) block since the last manual_seed
_generation = 0


@contextlib.contextmanager
def batch(step: int, first_sample: int = 0):
    """Key the random draws of one forward by the training step and this rank's first global sample."""
    global _current
    prev, _current = _current, _Batch(step, first_sample)
    try:
        yield _current
    finally:
        _current = prev


def draw_key() -> tuple[int, int]:
    """(key, first_row) for the next per-sample draw: the key mixes the seed, step and draw index."""
    global _unkeyed_draws, _generation
    b = _current
    if b is None:
        if _generation != backend._seed_generation:  # manual_seed restarts the sequence, as torch's does
            _generation, _unkeyed_draws = backend._seed_generation, 0
        _unkeyed_draws += 1
        return key(backend.initial_seed(), -1, _unkeyed_draws), 0
    b.draws += 1
    return key(backend.initial_seed(), b.step, b.draws), b.first_sample


def per_sample_uniform(shape, dtype, xp=numpy, batch_axis: int = 0):
    """Uniform [0, 1) values for a per-sample draw (a dropout mask), keyed as `draw_key` says;
    `batch_axis` is the axis that indexes samples (1 for a sequence-first RNN's outputs)."""
    k, first = draw_key()
    if not shape:
        return uniform(k, (), first, xp, dtype)
    moved = (shape[batch_axis],) + tuple(s for i, s in enumerate(shape) if i != batch_axis)
    u = uniform(k, moved, first, xp, dtype)
    return xp.moveaxis(u, 0, batch_axis) if batch_axis else u
