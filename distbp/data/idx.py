"""MNIST's IDX file format (also Fashion-MNIST's): read and write, gzipped or not.

Layout (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code, the number of dimensions,
then each dimension as a big-endian int32, then the values big-endian in C order. Every check names
the file, so a bad download gets one clear line instead of a reshape error."""
from __future__ import annotations

import gzip
import os
import zlib

import numpy

from .errors import DataError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {numpy.dtype(v).newbyteorder("="): k for k, v in _TYPES.items()}


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":  # gzip magic: decide by content, not by the file name
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"IDX file {path} is a corrupt or truncated gzip file ({e})") from None
    return raw


def read_idx(path: str | os.PathLike) -> numpy.ndarray:
    """The array stored in an IDX file (native byte order)."""
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'empty'}; "
                        f"expected 0000 then a type code and the number of dimensions)")
    dtype, ndim = numpy.dtype(_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated: its header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int(d) for d in numpy.frombuffer(raw, ">u4", ndim, 4))
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise DataError(f"IDX file {path} is {what}: shape {shape} needs {expected} data bytes, found {found}")
    return numpy.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array, compress: bool | None = None) -> None:
    """Write `array` as an IDX file; gzipped when `compress` (default: the name ends in .gz)."""
    path = os.fspath(path)
    array = numpy.asarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    body = bytes([0, 0, code, array.ndim]) + numpy.asarray(array.shape, ">u4").tobytes()
    body += numpy.ascontiguousarray(array, dtype=_TYPES[code]).tobytes()
    if compress if compress is not None else path.endswith(".gz"):
        body = gzip.compress(body)
    with open(path, "wb") as f:
        f.write(body)
