"""A dataset's fingerprint: enough to tell that a resumed run trains on the data it was saved with.

Per split (train, val, test): the number of samples, the shape and dtype of the inputs, a hash of
ALL the labels and a hash of a sample of input rows (at most `ROWS`, spread evenly over the split).
It reads the labels and a few rows only, so it stays cheap for large memory-mapped data; a change to
inputs that no sampled row shows goes unseen (the splits are seeded permutations of the source, so
the sampled rows come from all over it)."""
from __future__ import annotations

import hashlib

import numpy

from .checkpoint import CheckpointError

ROWS = 64
SPLITS = ("train", "val", "test")


def _hash(array) -> str:
    array = numpy.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.reshape(-1).view(numpy.uint8))
    return digest.hexdigest()[:16]


def _split(X, y) -> dict:
    n = len(X)
    rows = numpy.unique(numpy.linspace(0, n - 1, min(n, ROWS)).astype(numpy.int64)) if n else []
    return {"samples": n, "shape": list(X.shape[1:]), "dtype": numpy.dtype(X.dtype).str,
            "labels": _hash(numpy.asarray(y)), "rows": _hash(numpy.asarray(X[rows]))}


def dataset_fingerprint(data) -> dict:
    """The fingerprint of a `distbp.data.Dataset` (JSON-ready)."""
    return {name: _split(*getattr(data, name)) for name in SPLITS}


def _difference(saved: dict, now: dict) -> str | None:
    for name in SPLITS:
        a, b = saved.get(name, {}), now[name]
        for key, what in (("samples", "its number of samples"), ("shape", "its sample shape"),
                          ("dtype", "its input dtype"), ("labels", "its labels"), ("rows", "its inputs")):
            if a.get(key) != b[key]:
                detail = f" ({a.get(key)} -> {b[key]})" if key in ("samples", "shape", "dtype") else ""
                return f"the {name} split differs in {what}{detail}"
    return None


def check_same_dataset(ckpt, data, dataset: str) -> None:
    """Refuse to resume `ckpt` on data other than its own (checkpoints without a fingerprint pass)."""
    saved = ckpt.meta.get("dataset")
    if not isinstance(saved, dict):
        return
    difference = _difference(saved, dataset_fingerprint(data))
    if difference:
        raise CheckpointError(f"--dataset {dataset} is not the data checkpoint {ckpt.path} was trained on: "
                              f"{difference}; resume with the same data, or start a new run in another "
                              "--checkpoint-dir")
