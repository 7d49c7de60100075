"""The process grid: a world of ranks seen as replicas x pipeline stages x tensor-parallel shards.

World rank = (replica * P + stage) * T + tp_rank. The tensor-parallel axis is innermost because its
T ranks are the most tightly coupled (two allreduces of activations per layer pair, forward and
backward), so a launcher that fills machines in rank order keeps them on one machine; next come the
P stages of one pipeline (activation traffic once per micro-batch), and the gradient allreduce runs
between ranks that hold the same stage and shard, one per replica. T = 1 (the default) is the
replicas x stages grid, world rank = replica * P + stage.
"""
from __future__ import annotations

import operator

from .comm import Communicator
from .releasing import Releasable


def _positive(value, flag: str) -> int:
    try:
        count = operator.index(value)  # ints, numpy ints; not 2.0 or "2"
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"{flag} must be a positive integer, got {value!r}")
    return count


def _check_multiple(world_size: int, group: int, what: str) -> None:
    if world_size % group:
        lower = world_size // group * group
        counts = " or ".join(str(n) for n in (lower, lower + group) if n > 0)
        raise ValueError(f"world size {world_size} is not a multiple of {what}; use {counts} ranks")


def _check_stages(world_size: int, stages) -> int:
    stages = _positive(stages, "--pipeline-stages")
    _check_multiple(world_size, stages, f"--pipeline-stages {stages}")
    return stages


class ProcessGrid(Releasable):
    """`comm`'s ranks as `dp_size` replicas of a `pipeline_stages`-stage pipeline whose every stage is
    split over `tensor_parallel` ranks.

    Collective over `comm` (three splits): every rank constructs it, with the same arguments. The
    checks of the sizes come first and are the same on every rank, so a bad size raises ValueError
    everywhere before any rank waits on a split.

    `free()` (collective) releases the three communicators, never `comm`; so does leaving a `with
    ProcessGrid(...) as grid:` block without an error. MPI has room for about two thousand
    communicators per process: a program that builds grids again and again must free them."""

    def __init__(self, comm: Communicator, pipeline_stages: int = 1, tensor_parallel: int = 1):
        self.comm = comm
        self.num_stages = _check_stages(comm.size, pipeline_stages)
        self.tp_size = _positive(tensor_parallel, "--tensor-parallel")
        group = self.num_stages * self.tp_size
        if self.tp_size > 1:
            _check_multiple(comm.size, group, f"--pipeline-stages {self.num_stages} x --tensor-parallel "
                                              f"{self.tp_size} = {group}")
        self.dp_size = comm.size // group
        rest, self.tp_rank = divmod(comm.rank, self.tp_size)
        self.replica, self.stage = divmod(rest, self.num_stages)
        # the shards of my stage, ranked by tp_rank; my replica's pipeline (same shard), ranked by
        # stage; the ranks of my stage and shard, ranked by replica. Colors are unique per group.
        self.tp_comm = comm.split(rest, key=self.tp_rank)
        self.pipe_comm = comm.split(self.replica * self.tp_size + self.tp_rank, key=self.stage)
        self.dp_comm = comm.split(self.stage * self.tp_size + self.tp_rank, key=self.replica)

    def _release(self) -> None:
        """free(), collective over `comm`: tp_comm, pipe_comm, dp_comm, in that order on every rank.
        The grid's communicators refuse any later call (CommunicatorFreedError)."""
        for sub in (self.tp_comm, self.pipe_comm, self.dp_comm):
            sub.free()

    @property
    def is_first_stage(self) -> bool:
        return self.stage == 0

    @property
    def is_last_stage(self) -> bool:
        return self.stage == self.num_stages - 1

    @property
    def prev_rank(self) -> int | None:
        """The previous stage's rank in `pipe_comm` (which equals its stage), or None on the first."""
        return None if self.is_first_stage else self.stage - 1

    @property
    def next_rank(self) -> int | None:
        """The next stage's rank in `pipe_comm`, or None on the last stage."""
        return None if self.is_last_stage else self.stage + 1

    def __repr__(self) -> str:
        tp = f", shard {self.tp_rank} of {self.tp_size}" if self.tp_size > 1 else ""
        return (f"ProcessGrid(world rank {self.comm.rank} of {self.comm.size}: stage {self.stage} of "
                f"{self.num_stages}, replica {self.replica} of {self.dp_size}{tp})")
