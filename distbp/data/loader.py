"""Batches for data-parallel training.

The order of samples depends on (seed, epoch) only, and a global batch is cut from that order
before any rank is involved; a rank then takes a contiguous slice of each global batch. So the
sequence of global batches -- and with a sum-then-divide loss the gradient of every step -- is the
same on 1 rank or on N, and a run can resume on a different number of ranks exactly.
"""
from __future__ import annotations

import numpy


def epoch_permutation(n: int, seed: int, epoch: int) -> numpy.ndarray:
    """The shuffled order of n samples for one epoch: a function of (seed, epoch) only."""
    return numpy.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def global_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool = False) -> list:
    """Index arrays of the global batches of one epoch (the last may be smaller unless drop_last)."""
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    order = epoch_permutation(n, seed, epoch)
    return [order[i:i + batch_size] for i in range(0, num_batches(n, batch_size, drop_last) * batch_size,
                                                     batch_size)]


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items; shares differ by at most one."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is out of range for a world of size {size}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard(indices, rank: int, size: int):
    """This rank's contiguous slice of a global batch (possibly empty for a tiny last batch)."""
    start, stop = shard_bounds(len(indices), rank, size)
    return indices[start:stop]
