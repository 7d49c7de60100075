"""Refuse a model that cannot be trained in this machine's memory, in one line, before training.

Linux hands out memory it does not have (overcommit), so a model a few times too big is not a
MemoryError at allocation: it is the kernel killing the process halfway through the first step,
with no message. After the model is built, its parameters tell what training needs at least:
the weights, their gradients and the optimizer's state (one more copy for SGD with momentum and
RMSprop, two for Adam), against what /proc/meminfo says is available."""
from __future__ import annotations

from .trainer import UsageError

_STATE_COPIES = {"sgd": 1, "rmsprop": 1, "adam": 2}   # per-parameter optimizer buffers; others: 2


def available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable in bytes, or None where it is not known (not Linux)."""
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(params, optimizer: str, ranks_per_machine: int = 1, available: int | None = None) -> None:
    """Raise UsageError when weights + gradients + optimizer state of `params`, on every rank of this
    machine, exceed the available memory."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    weights = sum(p.data.nbytes for p in params)
    needed = weights * (2 + _STATE_COPIES.get(optimizer, 2)) * ranks_per_machine
    if needed > available:
        raise UsageError(f"the model needs at least {needed / 2**30:.1f} GiB to train ({weights / 2**30:.1f} GiB of "
                         f"weights, their gradients and {optimizer}'s state{', on each rank' if ranks_per_machine > 1 else ''}) "
                         f"but {available / 2**30:.1f} GiB are available; use a smaller --hidden")
