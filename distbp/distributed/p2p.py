"""Checked point-to-point transfers of arrays, for pipeline stages.

`send_array` sends one message: a 128-byte header (the array's shape and dtype) followed by its
bytes. `recv_array` takes the next message on its tag whatever its length (`irecv_message`),
checks the header against the shape and dtype it expects, and returns the bytes after it as that
array. A mismatch is a `ValueError` naming both sides, never bytes of one layout read as another;
the message has been taken all the same, so the sender's send completes and no stray message is
left to match a later receive with the same tag. One message, not a header and then the data: each
message costs a pipeline stage its own MPI calls and, when its receiver already waits, its own
wake-up.

Tags: `tag(m, "forward")` and `tag(m, "backward")` are even and distinct for every micro-batch m
(the odd tag after each is left unused). MPI guarantees tags up to 32767 (`TAG_LIMIT`; most MPI
libraries allow far more), so one step may have up to 8192 micro-batches. Pipelines send on a
communicator of their own (`ProcessGrid.pipe_comm`), so these tags never meet another user's.
"""
from __future__ import annotations

import functools
import math

import numpy

from ..backend import to_numpy
from .comm import Communicator, Request

TAG_LIMIT = 32767  # the smallest MPI_TAG_UB the MPI standard allows
_DIRECTIONS = ("forward", "backward")  # activations, gradients
_TAGS_PER_MICRO_BATCH = 4  # forward, an unused odd tag, backward, an unused odd tag

MAX_NDIM = 8
_MAGIC = 0x0D157B9  # first header word: a message that is not from send_array is named as such
_HEADER_LEN = 16  # int64 words: magic, ndim, dtype code, shape (padded with zeros), then zeros
_HEADER_BYTES = 8 * _HEADER_LEN  # the array's bytes start 128 bytes in: aligned for every dtype
_DTYPES = tuple(numpy.dtype(name) for name in (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64", "complex64", "complex128"))


def tag(micro_batch: int, direction: str) -> int:
    """The tag of micro-batch `micro_batch`'s activation ("forward") or gradient ("backward").
    Even; the odd tag after it is left unused (reserved, so the limit of 8192 micro-batches stays)."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected 'forward' or 'backward'")
    if micro_batch < 0:
        raise ValueError(f"micro-batch index must be >= 0, got {micro_batch}")
    t = _TAGS_PER_MICRO_BATCH * int(micro_batch) + 2 * _DIRECTIONS.index(direction)
    if t + 1 > TAG_LIMIT:
        most = (TAG_LIMIT + 1) // _TAGS_PER_MICRO_BATCH
        raise ValueError(f"micro-batch {micro_batch} needs MPI tag {t + 1}, above {TAG_LIMIT}, the largest tag "
                         f"every MPI library allows; use at most {most} micro-batches per step")
    return t


def _check_tag(t: int) -> int:
    if t < 0 or t % 2 or t + 1 > TAG_LIMIT:
        raise ValueError(f"tag {t} cannot carry a checked transfer: its tags are even and at most "
                         f"{TAG_LIMIT - 1}; use p2p.tag(micro_batch, direction)")
    return t


@functools.lru_cache(maxsize=256)
def _layout(dtype, shape) -> str:
    return f"{numpy.dtype(dtype)} {tuple(int(n) for n in shape)}"


@functools.lru_cache(maxsize=256)
def _header(dtype: numpy.dtype, shape: tuple) -> numpy.ndarray:
    """The header of an array of this layout (cached: a pipeline sends the same few layouts every
    micro-batch). Read-only, as it is shared."""
    if len(shape) > MAX_NDIM:
        raise ValueError(f"send_array sends arrays of at most {MAX_NDIM} dimensions, got shape {shape}")
    if dtype not in _DTYPES:
        raise ValueError(f"send_array cannot send dtype {dtype}; supported: " + ", ".join(str(d) for d in _DTYPES))
    header = numpy.zeros(_HEADER_LEN, dtype=numpy.int64)
    header[:3] = (_MAGIC, len(shape), _DTYPES.index(dtype))
    header[3:3 + len(shape)] = shape
    header.flags.writeable = False
    return header.view(numpy.uint8)


def send_array(comm: Communicator, array, dest: int, tag: int, what: str | None = None) -> Request:
    """Start sending `array` to `dest` with its shape and dtype, as one message. The array is copied
    into the message (host memory) before this returns, so it may be modified at once; wait() on the
    request before the message's buffer may be freed. `what` ("activation of micro-batch 3 to stage
    1") is what the watchdog prints if the transfer waits past its deadline."""
    _check_tag(tag)
    data = array if type(array) is numpy.ndarray else numpy.asarray(to_numpy(array))
    header = _header(data.dtype, data.shape)
    message = numpy.empty(_HEADER_BYTES + data.nbytes, dtype=numpy.uint8)
    message[:_HEADER_BYTES] = header
    message[_HEADER_BYTES:].view(data.dtype).reshape(data.shape)[...] = data  # any strides, C order
    return comm.isend(message, dest, tag, what=what)


class _RecvArray(Request):
    """Takes the next message on the tag, checks its header, and gives its bytes as the expected array."""

    def __init__(self, comm, shape, dtype, source, tag, what):
        self.comm, self.shape, self.dtype, self.source, self.tag = comm, shape, dtype, source, tag
        self.what = what or f"the message with tag {tag}"
        self.request = comm.irecv_message(source, tag, what=f"{self.what}, expecting {_layout(dtype, shape)}")
        self.array = self.error = None

    def _check(self, message) -> None:
        expected = _expected(self.dtype, self.shape)
        if message.size == expected[1] and message[:_HEADER_BYTES].tobytes() == expected[0]:
            self.array = message[_HEADER_BYTES:].view(self.dtype).reshape(self.shape)
            return
        header = message[:_HEADER_BYTES].view(numpy.int64).tolist() if message.size >= _HEADER_BYTES else None
        if header is not None:
            magic, ndim, code = header[:3]
        if header is None or magic != _MAGIC or not 0 <= ndim <= MAX_NDIM or not 0 <= code < len(_DTYPES):
            self.error = ValueError(
                f"rank {self.comm.rank} expected {self.what} from rank {self.source}, but the message on tag "
                f"{self.tag} ({message.size} bytes) is not from send_array: both sides must use "
                "send_array/recv_array")
            raise self.error
        sent_dtype, sent_shape = _DTYPES[code], tuple(header[3:3 + ndim])
        if sent_dtype != self.dtype or sent_shape != self.shape:
            self.error = ValueError(
                f"rank {self.comm.rank} expected {self.what} as {_layout(self.dtype, self.shape)} from rank "
                f"{self.source}, which sent {_layout(sent_dtype, sent_shape)}")
            raise self.error
        self.error = ValueError(  # the header matches but the length does not
            f"rank {self.comm.rank} expected {self.what} as {_layout(self.dtype, self.shape)} from rank "
            f"{self.source}: the message has {message.size - _HEADER_BYTES} bytes after its header")
        raise self.error

    def test(self) -> bool:
        if self.array is None and self.error is None:
            if not self.request.test():
                return False
            self._check(self.request.wait())
        if self.error is not None:
            raise self.error
        return True

    def wait(self):
        if self.array is None and self.error is None:
            self._check(self.request.wait())
        if self.error is not None:
            raise self.error
        return self.array


def recv_array(comm: Communicator, shape, dtype, source: int, tag: int, what: str | None = None) -> Request:
    """Start receiving an array of `shape` and `dtype` from `source` (sent with `send_array`); wait()
    returns it (a host array), or raises ValueError naming both sides when the sender's shape or
    dtype differ. `what` ("activation of micro-batch 3 from stage 0") labels the error and the
    watchdog's report."""
    _check_tag(tag)
    return _RecvArray(comm, _as_shape(shape), numpy.dtype(dtype), source, tag, what)


@functools.lru_cache(maxsize=256)
def _int_shape(shape: tuple) -> tuple:
    return tuple(int(n) for n in shape)


def _as_shape(shape) -> tuple:
    if type(shape) is tuple:
        try:
            return _int_shape(shape)  # cached: a stage receives the same few shapes every micro-batch
        except TypeError:  # an unhashable entry
            pass
    return (int(shape),) if numpy.ndim(shape) == 0 else tuple(int(n) for n in shape)


@functools.lru_cache(maxsize=256)
def _expected(dtype: numpy.dtype, shape: tuple) -> tuple:
    """(the first 128 bytes, the length) of the message that send_array makes of an array of this
    layout; a message that starts with other bytes or has another length takes the slow path."""
    header = _header(dtype, shape).tobytes() if dtype in _DTYPES and len(shape) <= MAX_NDIM else None
    return header, _HEADER_BYTES + math.prod(shape) * dtype.itemsize
