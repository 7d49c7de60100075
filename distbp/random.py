"""Counter-based random numbers: each value is a pure function of a key and its position.

Data parallelism must not change what a model computes, and a dropout mask drawn from a stateful
generator does: one process draws one (N, D) mask for the whole batch, while rank r of N ranks
draws its own mask for its slice, starting from the same state, so its samples get rank 0's
masks. Here the mask of global sample i is hashed from (seed, step, draw, i, element), so it is
the same whichever rank holds sample i and however the batch is split.

    with distbp.random.batch(step=12, first_sample=64):   # this rank's rows are samples 64..
        loss = model(x)                                    # every dropout draw is keyed by both

`draw` counts the random draws inside one `batch(...)` block, in call order: every rank runs the
same forward, so the k-th draw is the same layer everywhere, with no per-layer bookkeeping (a rank
whose slice is empty still draws, an empty array). Outside a block, draws are counted process-wide
from the last manual_seed (that count is part of `get_rng_state`) and rows start at sample 0, so a
plain script is still seeded, repeatable and resumable. The hash is splitmix64: its finaliser over
key + counter * golden ratio, a bijection of the counter, so no two positions under one key collide;
it runs on numpy or cupy arrays alike, so a GPU draws the same values as the CPU.
"""
from __future__ import annotations

import contextlib
import math

import numpy

from . import backend

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix_int(z: int) -> int:
    """splitmix64's finaliser on a Python int: a bijection on 64 bits that scatters every input bit."""
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _mix_array(z):
    """The same finaliser, in place on a uint64 array (array arithmetic wraps modulo 2**64)."""
    z ^= z >> numpy.uint64(30)
    z *= numpy.uint64(_M1)
    z ^= z >> numpy.uint64(27)
    z *= numpy.uint64(_M2)
    z ^= z >> numpy.uint64(31)
    return z


def key(*parts: int) -> int:
    """One 64-bit key from several integers (order and count matter; negative ones are taken mod 2**64)."""
    k = 0
    for part in parts:
        k = _mix_int(k ^ ((int(part) + _GOLDEN) & _MASK))
    return k


def uniform(k: int, shape, first_row: int = 0, xp=numpy, dtype=numpy.float64, *, first_col: int = 0,
            full_cols: int | None = None):
    """Uniform [0, 1) values of `shape` for rows first_row.. of a conceptual global array keyed by k.

    Row i's values depend only on (k, i, position in the row), so a slice of rows drawn on one
    rank equals the same rows drawn by one process for the whole array. Each value takes as many
    of the hash's top bits as `dtype` has significand bits, so it is exact and below 1 (rounding
    53 bits to float32 could give 1.0).

    `full_cols` (with `first_col`) is for a slice of the LAST axis too: `shape[-1]` columns
    first_col.. of a global array whose last axis is `full_cols` long (a tensor-parallel shard of
    the features), so the union of the shards' draws is the whole array's draw."""
    shape = tuple(int(s) for s in shape)
    dtype = numpy.dtype(dtype)
    width = math.prod(shape[1:]) if shape else 1
    n = math.prod(shape)
    if full_cols is None or not shape:
        z = xp.arange(n, dtype=xp.uint64)
        z += numpy.uint64((int(first_row) * width) & _MASK)
    else:
        cols, full_cols, first_col = shape[-1], int(full_cols), int(first_col)
        if first_col < 0 or first_col + cols > full_cols:
            raise ValueError(f"columns {first_col}..{first_col + cols} do not fit in a row of {full_cols}")
        # position = (global line) * full_cols + first_col + column, lines being the last axis's rows
        lines_per_row = width // cols if cols else 0
        lines = xp.arange(n // cols if cols else 0, dtype=xp.uint64)
        lines += numpy.uint64((int(first_row) * lines_per_row) & _MASK)
        lines *= numpy.uint64(full_cols)
        lines += numpy.uint64(first_col)
        z = (lines[:, None] + xp.arange(cols, dtype=xp.uint64)[None, :]).reshape(-1)
    z *= numpy.uint64(_GOLDEN)
    z += numpy.uint64(k & _MASK)
    _mix_array(z)
    bits = numpy.finfo(dtype).nmant + 1
    out = (z >> numpy.uint64(64 - bits)).astype(dtype)
    out *= dtype.type(2.0 ** -bits)
    return out.reshape(shape)


class _Batch:
    __slots__ = ("draws", "first_sample", "step")

    def __init__(self, step: int, first_sample: int):
        self.step, self.first_sample, self.draws = int(step), int(first_sample), 0


_current: _Batch | None = None


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
    """(key, first_row) for the next per-sample draw: the key mixes the seed, step and draw index
    inside a `batch` block, the seed and the process-wide draw count outside one (two parts, not
    three, so the two kinds of key hash different inputs even when a step equals a draw count)."""
    b = _current
    if b is None:
        return key(backend.initial_seed(), backend.next_unkeyed_draw()), 0
    b.draws += 1
    return key(backend.initial_seed(), b.step, b.draws), b.first_sample


def per_sample_uniform(shape, dtype, xp=numpy, batch_axis: int = 0, *, first_col: int = 0,
                       full_cols: int | None = None):
    """Uniform [0, 1) values for a per-sample draw (a dropout mask), keyed as `draw_key` says;
    `batch_axis` is the axis that indexes samples (1 for a sequence-first RNN's outputs).
    `first_col`/`full_cols`: this draw is columns first_col.. of a last axis `full_cols` long
    (see `uniform`); the last axis must then not be the batch axis."""
    shape = tuple(int(s) for s in shape)
    k, first = draw_key()
    if not shape:
        return uniform(k, (), first, xp, dtype)
    axis = batch_axis + len(shape) if batch_axis < 0 else batch_axis
    if not 0 <= axis < len(shape):
        raise ValueError(f"batch_axis {batch_axis} is out of range for shape {shape}")
    if full_cols is not None and axis == len(shape) - 1:
        raise ValueError("a column offset needs a last axis other than the batch axis")
    moved = (shape[axis],) + shape[:axis] + shape[axis + 1:]
    u = uniform(k, moved, first, xp, dtype, first_col=first_col, full_cols=full_cols)
    return xp.moveaxis(u, 0, axis) if axis else u
