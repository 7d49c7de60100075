"""Ending a job when a rank fails: every rank stops within seconds, and the reason is printed once.

A rank that hits an error (a user's mistake, Ctrl-C) cannot just return: the other ranks would wait
for it in their next collective until the watchdog's timeout. It cannot just abort either: when the
mistake is one that every rank makes at once (a bad flag under plain `mpiexec -n 4`), N ranks
would print N copies of the line. So a failing rank

1. enters a nonblocking barrier on a communicator kept for this (`Watchdog.ending`) and, while it
   waits, asks the others where they are (the watchdog's wait loop answers from any MPI call);
2. if every rank enters the barrier, all of them failed: they gather their lines, rank 0 prints
   each different line once (with the ranks it came from unless all ranks said the same), and
   every rank returns the exit status, so the job ends normally with it;
3. if a rank answers that it waits in a collective this rank will never join (a later one, or the
   one this rank was interrupted in) or for a message from or to this rank, or nobody has joined
   after `AGREE_S` seconds, this rank
   prints its line prefixed by its rank and aborts the job with the exit status (MPICH's mpiexec
   exits with the status given to MPI_Abort).
"""
from __future__ import annotations

import sys
import time

import numpy

from . import watchdog as wd

AGREE_S = 10.0   # how long a failing rank waits for the others to fail too before it aborts them
ASK_AFTER_S = 0.2  # ranks that all fail do so within this, usually: ask the others only after it


def _completed(dog) -> int:
    """The number of this rank's collectives on `dog` that completed (its current one did not)."""
    rec = dog.current
    return dog.seq - 1 if rec is not None and rec.peer is None else dog.seq


def _stuck_on_me(answer: numpy.ndarray) -> bool:
    """Whether the rank that answered waits in a collective this rank will never make, or for a
    message to or from this rank (a pipeline's neighbour)."""
    state, dog_id, seq, peer = (int(v) for v in answer)
    if not 0 <= dog_id < len(wd._watchdogs):
        return False
    mine = wd._watchdogs[dog_id]
    if mine is None:   # a communicator this rank has freed: no verdict
        return False
    if state == wd.IN_POINT_TO_POINT:
        return peer == mine.rank
    return state == wd.IN_COLLECTIVE and seq > _completed(mine)   # else computing or failing: no verdict


def _answer_questions(world) -> None:
    while world.side.Iprobe(source=world.MPI.ANY_SOURCE, tag=wd._TAG_END_ASK):
        world.answer_end_question()


def _all_failed(world) -> bool:
    """Steps 1 and 3: True when every rank entered the barrier, False when this rank must abort."""
    MPI = world.MPI
    barrier = world.ending.Ibarrier()
    start = time.monotonic()
    asks, answers, buf, status = [], 0, numpy.zeros(4, dtype=numpy.int64), MPI.Status()
    while not barrier.Test():
        _answer_questions(world)
        elapsed = time.monotonic() - start
        if not asks and elapsed > ASK_AFTER_S:
            question = numpy.zeros(1, dtype=numpy.int64)   # its own buffer: MPI reads it until sent
            asks = [world.side.Isend(question, dest=r, tag=wd._TAG_END_ASK)
                    for r in range(world.size) if r != world.rank]
        while world.side.Iprobe(source=MPI.ANY_SOURCE, tag=wd._TAG_END_ANSWER, status=status):
            world.side.Recv(buf, source=status.Get_source(), tag=wd._TAG_END_ANSWER)
            answers += 1
            if _stuck_on_me(buf):
                return False
        if elapsed > AGREE_S:
            return False
        time.sleep(0.002)
    # Every rank failed. Before anyone leaves, the questions sent must all be answered and their
    # answers received (no message may be left in flight at MPI_Finalize): keep answering until
    # every rank has its answers, then meet once more.
    done = None
    while done is None or not done.Test():
        _answer_questions(world)
        while answers < len(asks) and world.side.Iprobe(source=MPI.ANY_SOURCE, tag=wd._TAG_END_ANSWER,
                                                         status=status):
            world.side.Recv(buf, source=status.Get_source(), tag=wd._TAG_END_ANSWER)
            answers += 1
        if done is None and answers == len(asks):
            MPI.Request.Waitall(asks)
            done = world.ending.Ibarrier()
        time.sleep(0.001)
    return True


def _merge(lines: list) -> list:
    """One output line per different line, prefixed with its ranks unless every rank said it."""
    if len(set(lines)) == 1:
        return [lines[0]]
    out = []
    for line in dict.fromkeys(lines):
        ranks = [r for r, other in enumerate(lines) if other == line]
        who = f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))
        out.append(f"{who}: {line}")
    return out


def _write(stream, lines: list) -> None:
    try:
        stream.write("".join(text + "\n" for text in lines))
        stream.flush()
    except (OSError, ValueError):   # a closed stderr must not change how the job ends
        pass


def end_job(code: int, line: str, stream=None) -> int:
    """Make this rank's failure the job's end (see the module's text). Returns `code` when every
    rank failed (rank 0 has printed); otherwise prints `rank N: line` and aborts every rank."""
    stream = stream or sys.stderr
    world = wd._world
    if world is None or world.size == 1:
        _write(stream, [line])
        return code
    world.failing = True
    if _all_failed(world):
        gathered = world.ending.allgather((code, line))
        if world.rank == 0:
            _write(stream, _merge([text for _, text in gathered]))
        return max(c for c, _ in gathered)
    _write(stream, [f"rank {world.rank}: {line}"])
    time.sleep(wd.ABORT_GRACE_S)
    world.comm.Abort(code)
    return code  # not reached
