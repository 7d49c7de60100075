"""Helpers for the distributed tests (imported by name: tests/distributed is on sys.path under pytest)."""
import numpy as np


def shard(n: int, rank: int, size: int) -> slice:
    """Contiguous slice of n samples for `rank`; sizes differ by at most one (numpy.array_split's rule)."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def max_diff(model_a, model_b) -> float:
    a, b = model_a.state_dict(), model_b.state_dict()
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) if a[k].size else 0.0 for k in a)
