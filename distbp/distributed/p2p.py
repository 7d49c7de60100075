"""Checked point-to-point transfers of arrays, for pipeline stages.

`send_array` sends a small header first (its shape and dtype), on the tag after the data's;
`recv_array` receives the header, checks it against the shape and dtype it expects, and only then
receives the data. A mismatch is a `ValueError` naming both sides, never bytes of one layout read
as another. Before raising, the receiver still takes the sender's data (into a scratch array of the
announced layout): the sender's send then completes, and no stray message is left to match a
later receive with the same tag.

Tags: `tag(m, "forward")` and `tag(m, "backward")` are even and distinct for every micro-batch m;
each header travels on the data tag + 1. MPI guarantees tags up to 32767 (`TAG_LIMIT`; most MPI
libraries allow far more), so one step may have up to 8192 micro-batches. Pipelines send on a
communicator of their own (`ProcessGrid.pipe_comm`), so these tags never meet another user's.
"""
from __future__ import annotations

import numpy

from ..backend import get_array_module
from .comm import Communicator, Request

TAG_LIMIT = 32767  # the smallest MPI_TAG_UB the MPI standard allows
_DIRECTIONS = ("forward", "backward")  # activations, gradients
_TAGS_PER_MICRO_BATCH = 4  # forward data, its header, backward data, its header

MAX_NDIM = 8
_MAGIC = 0x0D157B9  # first header word: a message that is not a send_array header is named as such
_HEADER_LEN = 3 + MAX_NDIM  # magic, ndim, dtype code, shape (padded with zeros)
_DTYPES = tuple(numpy.dtype(name) for name in (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float16", "float32", "float64", "complex64", "complex128"))


def tag(micro_batch: int, direction: str) -> int:
    """The tag of micro-batch `micro_batch`'s activation ("forward") or gradient ("backward").
    Even; the header of the transfer uses the tag + 1."""
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
        raise ValueError(f"tag {t} cannot carry a checked transfer: data tags are even and at most "
                         f"{TAG_LIMIT - 1} (the header travels on tag + 1); use p2p.tag(micro_batch, direction)")
    return t


def _layout(dtype, shape) -> str:
    return f"{numpy.dtype(dtype)} {tuple(int(n) for n in shape)}"


def _header(array) -> numpy.ndarray:
    if array.ndim > MAX_NDIM:
        raise ValueError(f"send_array sends arrays of at most {MAX_NDIM} dimensions, got shape {tuple(array.shape)}")
    if array.dtype not in _DTYPES:
        raise ValueError(f"send_array cannot send dtype {array.dtype}; supported: "
                         + ", ".join(str(d) for d in _DTYPES))
    header = numpy.zeros(_HEADER_LEN, dtype=numpy.int64)
    header[:3] = (_MAGIC, array.ndim, _DTYPES.index(array.dtype))
    header[3:3 + array.ndim] = array.shape
    return header


class _SendArray(Request):
    """The header's send and the data's; holds both buffers until they are sent."""

    def __init__(self, header_req: Request, data_req: Request):
        self.reqs = [header_req, data_req]

    def test(self) -> bool:
        done = [r.test() for r in self.reqs]  # test every one: each test drives its transfer
        return all(done)

    def wait(self):
        for r in self.reqs:
            r.wait()


def send_array(comm: Communicator, array, dest: int, tag: int, what: str | None = None) -> Request:
    """Start sending `array` to `dest` with its shape and dtype. Do not modify `array` until wait()
    returns. `what` ("activation of micro-batch 3 to stage 1") is what the watchdog prints if the
    transfer waits past its deadline."""
    _check_tag(tag)
    xp = get_array_module(array)
    data = xp.asarray(array)
    if not data.flags.c_contiguous:
        data = xp.ascontiguousarray(data)  # MPI sends contiguous bytes (ascontiguousarray makes 0-d 1-d)
    header = _header(data)
    header_req = comm.isend(header, dest, tag + 1, what=f"header of {what}" if what else None)
    return _SendArray(header_req, comm.isend(data, dest, tag, what=what))


class _RecvArray(Request):
    """Receives the header; checks it; then receives the data into a fresh array of the expected layout."""

    def __init__(self, comm, shape, dtype, source, tag, what):
        self.comm, self.shape, self.dtype, self.source, self.tag = comm, shape, dtype, source, tag
        self.what = what or f"the message with tag {tag}"
        self.header = numpy.empty(_HEADER_LEN, dtype=numpy.int64)
        self.header_req = comm.irecv(self.header, source, tag + 1,
                                     what=f"header of {self.what}, expecting {_layout(dtype, shape)}")
        self.data_req = None
        self.error = None

    def _start_data(self) -> None:
        if self.error is not None:
            raise self.error
        magic, ndim, code = (int(v) for v in self.header[:3])
        if magic != _MAGIC or not 0 <= ndim <= MAX_NDIM or not 0 <= code < len(_DTYPES):
            self.error = ValueError(
                f"rank {self.comm.rank} expected {self.what} from rank {self.source}, but the message on tag "
                f"{self.tag + 1} is not a send_array header: both sides must use send_array/recv_array")
            raise self.error
        sent_dtype, sent_shape = _DTYPES[code], tuple(int(n) for n in self.header[3:3 + ndim])
        if sent_dtype != self.dtype or sent_shape != self.shape:
            # take the sender's data anyway, so its send completes and nothing stray stays queued
            self.comm.irecv(numpy.empty(sent_shape, dtype=sent_dtype), self.source, self.tag, what=self.what).wait()
            self.error = ValueError(
                f"rank {self.comm.rank} expected {self.what} as {_layout(self.dtype, self.shape)} from rank "
                f"{self.source}, which sent {_layout(sent_dtype, sent_shape)}")
            raise self.error
        self.data_req = self.comm.irecv(numpy.empty(self.shape, dtype=self.dtype), self.source, self.tag,
                                        what=self.what)

    def test(self) -> bool:
        if self.data_req is None:
            if not self.header_req.test():
                return False
            self._start_data()
        return self.data_req.test()

    def wait(self):
        if self.data_req is None:
            self.header_req.wait()
            self._start_data()
        return self.data_req.wait()


def recv_array(comm: Communicator, shape, dtype, source: int, tag: int, what: str | None = None) -> Request:
    """Start receiving an array of `shape` and `dtype` from `source` (sent with `send_array`); wait()
    returns it, or raises ValueError naming both sides when the sender's shape or dtype differ.
    `what` ("activation of micro-batch 3 from stage 0") labels the error and the watchdog's report."""
    _check_tag(tag)
    shape = (int(shape),) if numpy.ndim(shape) == 0 else tuple(int(n) for n in shape)
    return _RecvArray(comm, shape, numpy.dtype(dtype), source, tag, what)
