"""Ranks that must agree: compare settings across ranks once, and name the first one that differs.

`check_same(comm, settings)` takes a dict of what must be equal on every rank (a run's flags, its
DISTBP_* settings, a model's parameter layout, DDP's options). Every rank allgathers a 32-byte
digest of it; only when the digests differ are the dicts themselves gathered, and every rank
raises the same `SettingsMismatchError`, whose line names the key and what each rank has, e.g.
"--lr differs: rank 0 has 0.1, rank 1 has 0.2". Every rank raises, so none is left waiting."""
from __future__ import annotations

import hashlib

import numpy


class SettingsMismatchError(ValueError):
    """Ranks were given different settings; str(e) names the key and the ranks."""


def digest(settings: dict) -> numpy.ndarray:
    """32 bytes that change when any key or value changes (values by their repr)."""
    text = repr(sorted((str(k), repr(v)) for k, v in settings.items()))
    return numpy.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=numpy.uint8).copy()


def _who(ranks: list) -> str:
    return f"rank {ranks[0]} has" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))} have"


def describe_difference(everyone: list, what: str = "") -> str | None:
    """The first key whose value differs across the ranks' dicts, as one line; None if all agree."""
    keys = list(dict.fromkeys(k for d in everyone for k in d))
    def shown(d, key):
        if key not in d:
            return "nothing"
        return d[key] if isinstance(d[key], str) else repr(d[key])

    for key in keys:
        values = [shown(d, key) for d in everyone]
        if len(set(values)) > 1:
            groups = {}
            for rank, value in enumerate(values):
                groups.setdefault(value, []).append(rank)
            sides = ", ".join(f"{_who(ranks)} {value}" for value, ranks in groups.items())
            return f"{what}{key} differs: {sides}"
    return None


def check_same(comm, settings: dict, what: str = "", advice: str = "") -> None:
    """Raise SettingsMismatchError on every rank unless all ranks passed equal `settings`.

    `what` prefixes the key in the message ("DistributedDataParallel: "), `advice` ends it."""
    if comm.size == 1:
        return
    everyone = comm.allgather(digest(settings))
    if (everyone == everyone[0]).all():
        return
    line = describe_difference(comm.allgather_obj(settings), what)
    if line is None:   # equal dicts cannot hash differently; kept for safety
        line = f"{what}settings differ across ranks"
    raise SettingsMismatchError(line + (f"; {advice}" if advice else ""))
