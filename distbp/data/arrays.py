"""Datasets of arrays a user saved with numpy: an `.npz` file (arrays `X` and `y`) or a folder holding
`X.npy` and `y.npy`, read memory-mapped where the format allows.

A split is a `Rows` view: the source array and the rows of the file that belong to the split. Indexing
it (a batch's positions, or a slice for a chunk of evaluation) reads only those rows, in ascending
file order (one pass over the pages, however the batch is shuffled), and puts them back in the
batch's order, so the values and their order are exactly those of the in-memory array indexed the
same way: training on the mapped file equals training on the loaded arrays bit for bit.

The mapping is re-opened for every read (every 128 rows of it) and dropped after it: pages of a
mapping count in the process's resident memory until it is unmapped, so one long-lived mapping would
grow to the whole file as an epoch touches every row (nanoGPT re-creates its memmap per batch for the
same reason). Re-mapping costs one mmap call; the pages stay in the page cache, shared by the ranks.

A compressed `.npz` (numpy.savez_compressed) cannot be mapped: its arrays are loaded into memory,
and the Dataset says so (`storage`). Save with numpy.savez, or as a folder of .npy files, to map."""
from __future__ import annotations

import os
import struct
import zipfile

import numpy

from .errors import DataError

_CHUNK = 1 << 16   # rows per read when scanning labels
# Rows read through one mapping. Each page fault maps the cached pages around it too (Linux's
# fault-around, 64 KB; madvise(MADV_RANDOM) does not stop it): measured ~57 KB of resident memory per
# scattered row while mapped, so a mapping per 128 rows bounds that at ~7 MB whatever the batch.
_ROWS_PER_MAP = 128


class ArrayFile:
    """An array inside a file (a .npy, or an uncompressed member of a .npz) that is mapped per read."""

    def __init__(self, path: str, offset: int, dtype, shape: tuple, fortran_order: bool, label: str):
        self.path, self.offset, self.dtype, self.shape = path, offset, numpy.dtype(dtype), tuple(shape)
        self.order, self.label = "F" if fortran_order else "C", label
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def open(self) -> numpy.ndarray:
        if 0 in self.shape:   # numpy cannot map zero bytes
            return numpy.empty(self.shape, self.dtype)
        return numpy.memmap(self.path, self.dtype, "r", self.offset, self.shape, self.order)


class InMemory:
    """An array already in memory (a compressed npz member, or arrays given to distbp.fit)."""

    def __init__(self, array, label: str):
        self.array, self.label = array, label
        self.dtype, self.shape, self.ndim = array.dtype, array.shape, array.ndim

    def __len__(self) -> int:
        return len(self.array)

    def open(self) -> numpy.ndarray:
        return self.array


def read_rows(source, file_rows: numpy.ndarray) -> numpy.ndarray:
    """source's rows `file_rows` (any order, repeats allowed), read in ascending order, returned in the
    given order."""
    order = numpy.argsort(file_rows, kind="stable")
    wanted = file_rows[order]
    out = numpy.empty((len(wanted),) + tuple(source.shape[1:]), source.dtype)
    picked = numpy.empty_like(out)
    for i in range(0, len(wanted), _ROWS_PER_MAP):
        array = source.open()
        picked[i:i + _ROWS_PER_MAP] = array[wanted[i:i + _ROWS_PER_MAP]]
        del array   # unmap now: the pages leave this process's resident memory
    out[order] = picked
    return out


class Rows:
    """The rows `rows` of `source` as an array-like: len(), .shape, .dtype, astype(), and indexing by an
    integer array or a slice, which returns a numpy array of just those rows in `dtype`. `as_column`:
    a 1-d source is seen as (N, 1) (regression targets)."""

    def __init__(self, source, rows: numpy.ndarray, dtype=None, as_column: bool = False):
        self.source, self.rows, self.as_column = source, numpy.asarray(rows, dtype=numpy.int64), as_column
        self.dtype = numpy.dtype(dtype if dtype is not None else source.dtype)
        tail = (1,) if as_column and source.ndim == 1 else tuple(source.shape[1:])
        self.shape = (len(self.rows),) + tail
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def astype(self, dtype, copy: bool = True) -> Rows:
        return Rows(self.source, self.rows, dtype, self.as_column)

    def __getitem__(self, key) -> numpy.ndarray:
        if isinstance(key, slice):
            file_rows = self.rows[key]
        else:
            key = numpy.asarray(key)
            if key.dtype.kind not in "iu" or key.ndim != 1:
                raise TypeError(f"Rows are indexed by a slice or a 1-d integer array, got {key!r}")
            file_rows = self.rows[key]
        out = read_rows(self.source, file_rows).astype(self.dtype, copy=False)
        return out.reshape(len(out), 1) if self.as_column and out.ndim == 1 else out

    def __array__(self, dtype=None, copy=None):   # numpy.asarray(view): the whole split, in memory
        out = self[:]
        return out if dtype is None else out.astype(dtype)


# ----- opening files -----
def _npy_header(f, where: str):
    """(shape, fortran_order, dtype, data offset) of the .npy stream at f's position."""
    try:
        version = numpy.lib.format.read_magic(f)
        read = {(1, 0): numpy.lib.format.read_array_header_1_0,
                (2, 0): numpy.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran_order, dtype = read(f)
    except ValueError as e:
        raise DataError(f"{where} is not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (dtype {dtype}); save numeric arrays")
    return shape, fortran_order, dtype, f.tell()


def open_npy(path: str) -> ArrayFile:
    try:
        with open(path, "rb") as f:
            shape, fortran_order, dtype, offset = _npy_header(f, path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    need = offset + int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    if os.path.getsize(path) < need:
        raise DataError(f"{path} is truncated: its header says {shape} {dtype}, which needs {need} bytes; "
                        f"the file has {os.path.getsize(path)}")
    return ArrayFile(path, offset, dtype, shape, fortran_order, path)


def _open_npz_member(path: str, archive: zipfile.ZipFile, name: str):
    """An ArrayFile for a stored (uncompressed) member, else the member loaded: (source, mapped)."""
    info = archive.getinfo(name + ".npy")
    where = f"{name} in {path}"
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as f:
            try:
                return InMemory(numpy.lib.format.read_array(f, allow_pickle=False), where), False
            except ValueError as e:
                raise DataError(f"{where} is not a readable array ({e})") from None
    with open(path, "rb") as f:   # the data begins after the member's local header (its own lengths)
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise DataError(f"{path} is a damaged zip file (bad local header of {name}.npy)")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        shape, fortran_order, dtype, offset = _npy_header(f, where)
    return ArrayFile(path, offset, dtype, shape, fortran_order, where), True


def open_npz(path: str):
    """(X source, y source, storage note) of an .npz file holding arrays X and y."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as an .npz file ({e})") from None
    with archive:
        names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        missing = [k for k in ("X", "y") if k not in names]
        if missing:
            raise DataError(f"{path} has no array {missing[0]!r} (it has {', '.join(names) or 'none'}); save it "
                            f"with numpy.savez(path, X=features, y=labels)")
        (X, x_mapped), (y, y_mapped) = (_open_npz_member(path, archive, k) for k in ("X", "y"))
    if x_mapped and y_mapped:
        return X, y, "memory-mapped"
    return X, y, ("loaded into memory: a compressed .npz cannot be memory-mapped (save it with numpy.savez, or as "
                  "X.npy and y.npy in a folder, to read it mapped)")


def open_folder(folder: str):
    """(X source, y source, storage note) of a folder holding X.npy and y.npy."""
    paths = [os.path.join(folder, n) for n in ("X.npy", "y.npy")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"folder {folder} has X.npy or y.npy but not {os.path.basename(missing[0])}; "
                        "save both with numpy.save")
    return open_npy(paths[0]), open_npy(paths[1]), "memory-mapped"


def is_array_folder(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, n)) for n in ("X.npy", "y.npy"))


# ----- checks -----
def check_arrays(X, y, where: str) -> tuple:
    """Validate features and labels; returns (task, num_classes or None, num_outputs). Scans y (small)
    in chunks, never X (that would read the whole file on every rank)."""
    if X.dtype.kind not in "biuf":
        raise DataError(f"X in {where} has dtype {X.dtype}; features must be numbers (bool, int or float)")
    if X.ndim < 2:
        raise DataError(f"X in {where} has shape {X.shape}; it must be (samples, features...) with at least "
                        f"2 dimensions (reshape a single feature to (N, 1))")
    if y.ndim not in (1, 2):
        raise DataError(f"y in {where} has shape {y.shape}; labels must be (N,) classes or (N, outputs) targets")
    if len(y) != len(X):
        raise DataError(f"y in {where} has {len(y)} labels but X has {len(X)} samples; they must match")
    if len(X) == 0:
        raise DataError(f"{where} holds no samples")
    if X.shape[1:] and 0 in X.shape[1:]:
        raise DataError(f"X in {where} has shape {X.shape}: a sample has no features")
    if y.dtype.kind in "iub" and y.ndim == 1:
        low, high = _label_range(y)
        if low < 0:
            raise DataError(f"y in {where} has the label {low}; class labels must be 0, 1, 2, ...")
        if high < 1:
            raise DataError(f"y in {where} has a single class ({high}); classification needs at least two")
        return "classification", int(high) + 1, int(high) + 1
    if y.dtype.kind not in "f":
        raise DataError(f"y in {where} has dtype {y.dtype}; give integer classes of shape (N,) or float targets")
    bad = _first_nonfinite(y)
    if bad is not None:
        raise DataError(f"y in {where} has a non-finite label (nan or inf) at row {bad}")
    return "regression", None, 1 if y.ndim == 1 else int(y.shape[1])


def _label_range(source) -> tuple:
    low, high = None, None
    for i in range(0, len(source), _CHUNK):
        block = read_rows(source, numpy.arange(i, min(i + _CHUNK, len(source))))
        a, b = int(block.min()), int(block.max())
        low, high = (a, b) if low is None else (min(low, a), max(high, b))
    return low, high


def _first_nonfinite(source):
    for i in range(0, len(source), _CHUNK):
        block = read_rows(source, numpy.arange(i, min(i + _CHUNK, len(source))))
        bad = ~numpy.isfinite(block)
        if bad.any():
            return i + int(numpy.argwhere(bad)[0, 0])
    return None
