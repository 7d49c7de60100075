"""The one seam every MPI call goes through: sequence numbers, fingerprints, and a deadline.

Each collective on a communicator gets a sequence number and a fingerprint (op, dtype, shape) and
records its call site; a point-to-point call (send, recv, isend, irecv) gets no number (ranks make
different ones) but records its peer, tag and the caller's label (`what`). Waiting is a `Test()`
loop (MPICH makes no progress in the background), so a wait can watch the clock: past `timeout`
seconds the waiting rank asks every other rank, on a private duplicate communicator, where it is; ranks that are waiting answer from
their own loop, ranks that never arrived (stuck in compute, or dead) do not. It prints which
collective, which step, which ranks are missing and where the others are, then aborts the job,
instead of the silent hang a desynchronised or dead rank otherwise causes. With `debug=True` (or
DISTBP_DEBUG_COLLECTIVES=1) every collective first allgathers its fingerprint and all ranks raise `CollectiveMismatchError` naming the ranks that
disagree, before the mismatched call can hang or mix up buffers.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy

from ... import _env

_OPS = ("allreduce", "iallreduce", "bcast", "allgather", "reduce_scatter", "barrier", "bcast_obj",
        "allgather_obj", "send", "recv", "split", "isend", "irecv")
_TAG_ASK, _TAG_ANSWER = 7301, 7302
# A failing rank asks every other where it waits (ending.py); answers: int64 (state, watchdog id, seq, peer).
_TAG_END_ASK, _TAG_END_ANSWER = 7303, 7304
IDLE, IN_COLLECTIVE, IN_POINT_TO_POINT, FAILING = range(4)
# MPI_Abort makes the launcher tear the job down at once, and Hydra can close a rank's stderr pipe
# before it has forwarded what is in it (the report was lost in about 1 run of 10): a moment's pause.
ABORT_GRACE_S = 0.5
_watchdogs = []   # every Watchdog of this process, in creation order: the same ids on every rank (None: freed)
_world = None     # the first Watchdog over all of COMM_WORLD: its side communicator carries end questions
_ANSWER_BYTES = 512  # room for a point-to-point call's `what` label
_step = 0


def set_step(step: int) -> None:
    """Tell the watchdog which training step this process is in (shown in its report)."""
    global _step
    _step = int(step)


def get_step() -> int:
    return _step


class CollectiveMismatchError(RuntimeError):
    """Ranks called different collectives (op, dtype or shape) at the same sequence number."""


@dataclass
class Record:
    """One MPI call: what, where, and when it started waiting. A point-to-point call also has its
    peer, tag and a caller's label (`what`, e.g. "activation of micro-batch 3 to stage 1"); it has
    no sequence number of its own, since ranks make different point-to-point calls."""

    seq: int
    op: str
    dtype: object  # numpy dtype, or None for pickled objects (str() only when printed: it is slow)
    shape: tuple
    site: tuple  # (file, line)
    step: int
    t0: float = 0.0
    peer: int | None = None  # None: a collective
    tag: int | None = None
    what: str | None = None

    @property
    def kind(self) -> str:
        return "collective" if self.peer is None else "point-to-point"

    def describe(self) -> str:
        where = f"{os.path.basename(self.site[0])}:{self.site[1]}"
        dtype = "object" if self.dtype is None else str(self.dtype)
        call = f"{self.op}({dtype}{list(self.shape)})"
        if self.peer is not None and self.dtype is None:  # irecv_message: the length is the sender's
            call = f"{self.op}(a message of any length)"
        if self.peer is None:
            return f"#{self.seq} {call} at step {self.step}, called from {where}"
        direction = "to" if "send" in self.op else "from"
        label = f" [{self.what}]" if self.what else ""
        return f"{call} {direction} rank {self.peer} tag {self.tag}{label} at step {self.step}, called from {where}"

    def fingerprint(self) -> numpy.ndarray:
        shape_hash = hash(tuple(self.shape)) & 0x7FFFFFFFFFFF
        dtype_code = -1 if self.dtype is None else sum(map(ord, str(self.dtype)))
        return numpy.array([self.seq, _OPS.index(self.op), dtype_code, len(self.shape), shape_hash],
                           dtype=numpy.int64)


_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # distbp/distributed/


def call_site() -> tuple:
    """(file, line) of the first caller outside distbp.distributed: the user's line that started the call.
    Kept cheap (a prefix test per frame, formatted only when printed): it runs on every collective."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_HERE):
        frame = frame.f_back
    if frame is None:
        return ("?", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


class Watchdog:
    """Sequence numbers, fingerprint checks and deadlines for one MPI communicator."""

    def __init__(self, mpi_comm, timeout: float | None = None, debug: bool | None = None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.side = mpi_comm.Dup()  # status questions and fingerprints never mix with user traffic
        # Lenient: a communicator must come up even with a bad DISTBP_* value, so that the error
        # can be reported through it (distributed.init() and the commands check them strictly).
        self.timeout = _env.get("DISTBP_COLLECTIVE_TIMEOUT", lenient=True) if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"Invalid collective timeout: {self.timeout} s; use a positive number of seconds "
                             "(DISTBP_COLLECTIVE_TIMEOUT or MPIComm(timeout=...))")
        self.debug = _env.get("DISTBP_DEBUG_COLLECTIVES", lenient=True) if debug is None else debug
        self.busy_tests = _env.get("DISTBP_WAIT_BUSY_TESTS", lenient=True)  # Test() calls before napping
        self.nap_s = _env.get("DISTBP_WAIT_NAP_US", lenient=True) * 1e-6     # the nap between later ones
        self.seq = 0
        self.current: Record | None = None
        self.failing = False  # set by ending.end_job: this rank has given up and answers so
        self._ask_buf = numpy.zeros(1, dtype=numpy.int64)
        # Communicators are made collectively, so the n-th Watchdog of one rank is that of the others.
        self.id = len(_watchdogs)
        _watchdogs.append(self)
        global _world
        if _world is None and MPI.Comm.Compare(mpi_comm, MPI.COMM_WORLD) in (MPI.IDENT, MPI.CONGRUENT):
            self.ending = mpi_comm.Dup()  # the barrier of ranks that all failed (ending.py)
            _world = self

    def free(self) -> bool:
        """Release the side communicator (MPIComm.free); False for the world's watchdog, which stays:
        its communicators carry the end of the job (ending.py) for as long as the process runs."""
        if self is _world:
            return False
        self.side.Free()
        _watchdogs[self.id] = None   # the slot stays, so the other watchdogs keep their ids
        return True

    # ----- start of a call -----
    def begin(self, op: str, array=None, collective: bool = True, peer: int | None = None,
              tag: int | None = None, what: str | None = None) -> Record:
        """Number and describe a call; in debug mode check that every rank makes the same one.
        A point-to-point call (collective=False) passes its peer rank, tag and label instead."""
        if collective:
            self.seq += 1
        shape = tuple(getattr(array, "shape", ()))
        dtype = getattr(array, "dtype", None)
        rec = Record(self.seq, op, dtype, shape, call_site(), _step, peer=peer, tag=tag, what=what)
        if collective and self.debug:
            self._check_fingerprints(rec)
        return rec

    def _check_fingerprints(self, rec: Record) -> None:
        mine = rec.fingerprint()
        everyone = numpy.empty((self.size, mine.size), dtype=numpy.int64)
        self.wait(self.side.Iallgather(mine, everyone), rec)  # watched too: a missing rank is named
        if (everyone == everyone[0]).all():
            return
        # Every rank sees the same table, so every rank takes this branch: no one is left waiting.
        texts = self.side.allgather(rec.describe())
        lines = "\n".join(f"  rank {r}: {t}" for r, t in enumerate(texts))
        raise CollectiveMismatchError(f"ranks called different collectives at sequence number {rec.seq}:\n"
                                      f"{lines}\nevery rank must call the same collectives in the same order "
                                      "with the same shapes and dtypes")

    # ----- waiting -----
    def wait(self, request, rec: Record, progress=None) -> None:
        """Wait for an MPI request, answering status questions; past the deadline, report and abort.
        `progress()`, if given, is called between tests (it advances work that waits on this process)."""
        if request.Test():
            return
        self.current = rec
        rec.t0 = time.monotonic()
        deadline = rec.t0 + self.timeout
        test, iprobe, sides = request.Test, self.side.Iprobe, self.MPI.ANY_SOURCE
        spins = 0
        while not test():
            if progress is not None:
                progress()
            spins += 1
            if spins & 15 == 0:
                if iprobe(source=sides, tag=_TAG_ASK):
                    self._answer()
                if _world is not None and _world.side.Iprobe(source=sides, tag=_TAG_END_ASK):
                    _world.answer_end_question(self)
                if time.monotonic() > deadline:
                    self._report_and_abort(rec)
            if spins > self.busy_tests:
                # Nap, do not spin: a busy-waiting rank slowed the matmuls of the rank it waited for
                # by ~20% on the 2-core machine even with a core each (and starves it when ranks
                # outnumber cores). A large allreduce needs only a few Test() calls (MPICH copies
                # with CMA), so with precise naps (runtime.precise_naps) this cost it ~0.1 ms.
                time.sleep(self.nap_s)
        self.current = None

    def _status(self) -> numpy.ndarray:
        """Where this rank is, as a fixed-size byte message (a description of its current call)."""
        text = "not in an MPI call" if self.current is None else "waiting in " + self.current.describe()
        out = numpy.zeros(_ANSWER_BYTES, dtype=numpy.uint8)
        raw = text.encode()[:_ANSWER_BYTES]
        out[:len(raw)] = numpy.frombuffer(raw, dtype=numpy.uint8)
        return out

    def _answer(self) -> None:
        status = self.MPI.Status()
        self.side.Recv(self._ask_buf, source=self.MPI.ANY_SOURCE, tag=_TAG_ASK, status=status)
        self.side.Send(self._status(), dest=status.Get_source(), tag=_TAG_ANSWER)

    def where(self, waiting=None) -> numpy.ndarray:
        """(state, watchdog id, sequence number, peer or -1) of this rank, as a failing rank asks for it."""
        waiting = waiting or self
        rec = waiting.current
        state = (FAILING if self.failing else IDLE if rec is None
                 else IN_COLLECTIVE if rec.peer is None else IN_POINT_TO_POINT)
        peer = rec.peer if rec is not None and rec.peer is not None else -1
        return numpy.array([state, waiting.id, rec.seq if rec is not None else waiting.seq, peer], dtype=numpy.int64)

    def answer_end_question(self, waiting=None) -> None:
        """Answer a failing rank's question (this is the world's watchdog; `waiting` the one in use)."""
        status = self.MPI.Status()
        self.side.Recv(self._ask_buf, source=self.MPI.ANY_SOURCE, tag=_TAG_END_ASK, status=status)
        self.side.Send(self.where(waiting), dest=status.Get_source(), tag=_TAG_END_ANSWER)

    def _world_rank(self, rank: int) -> str:
        """" (world rank N)" when this communicator is a sub-communicator (a pipeline's or a
        replica group's), so a report names the process the launcher started; else ""."""
        world = self.MPI.COMM_WORLD
        if self.comm.Get_size() == world.Get_size() or rank is None or rank < 0:
            return ""
        (mapped,) = self.comm.Get_group().Translate_ranks([rank], world.Get_group())
        return f" (world rank {mapped})"

    def _report_and_abort(self, rec: Record, grace: float = 2.0) -> None:
        waited = time.monotonic() - rec.t0
        asks = [self.side.Isend(numpy.zeros(1, dtype=numpy.int64), dest=r, tag=_TAG_ASK)
                for r in range(self.size) if r != self.rank]
        answers = {}
        end = time.monotonic() + grace
        buf = numpy.zeros(_ANSWER_BYTES, dtype=numpy.uint8)
        status = self.MPI.Status()
        while time.monotonic() < end and len(answers) < self.size - 1:
            if self.side.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_ASK):
                self._answer()
            if self.side.Iprobe(source=self.MPI.ANY_SOURCE, tag=_TAG_ANSWER, status=status):
                self.side.Recv(buf, source=status.Get_source(), tag=_TAG_ANSWER)
                answers[status.Get_source()] = buf.tobytes().rstrip(b"\0").decode(errors="replace")
            time.sleep(0.001)
        missing = [r for r in range(self.size) if r != self.rank and r not in answers]
        where = [f"rank {r}: {text}" for r, text in sorted(answers.items())]
        text = (f"distbp watchdog: rank {self.rank}{self._world_rank(self.rank)} waited {waited:.1f} s "
                f"(timeout {self.timeout:g} s) in {rec.kind} {rec.describe()}\n"
                + (f"  its peer: rank {rec.peer}{self._world_rank(rec.peer)}\n" if rec.peer is not None else "")
                + f"  ranks missing (did not answer, busy outside MPI or dead): {missing}\n"
                + "".join(f"  {w}\n" for w in where)
                + ("  set DISTBP_DEBUG_COLLECTIVES=1 to check every collective's op/shape/dtype across ranks\n"
                   if rec.peer is None else
                   "  a point-to-point call completes when its peer makes the matching call (same tag and "
                   "communicator)\n"))
        sys.stderr.write(text)
        sys.stderr.flush()
        del asks
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(3)
