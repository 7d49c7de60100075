"""The process grid: a world of ranks seen as replicas x pipeline stages.

World rank = replica * P + stage: the P ranks of one replica (one pipeline) are consecutive, so a
launcher that fills machines in rank order keeps a pipeline's activation traffic on one machine,
and the gradient allreduce runs between ranks that hold the same stage, one per replica.

A tensor-parallel axis would be the innermost one (world rank = (replica * P + stage) * T + shard,
its T ranks the most tightly coupled), with a `tp_comm` split the same way as the two below; it is
not built: T = 1.
"""
from __future__ import annotations

import operator

from .comm import Communicator


def _check_stages(world_size: int, stages) -> int:
    try:
        count = operator.index(stages)  # ints, numpy ints; not 2.0 or "2"
    except TypeError:
        count = 0
    if count < 1:
        raise ValueError(f"--pipeline-stages must be a positive integer, got {stages!r}")
    stages = count
    if world_size % stages:
        lower = world_size // stages * stages
        counts = " or ".join(str(n) for n in (lower, lower + stages) if n > 0)
        raise ValueError(f"world size {world_size} is not a multiple of --pipeline-stages {stages}; "
                         f"use {counts} ranks")
    return stages


class ProcessGrid:
    """`comm`'s ranks as `dp_size` replicas of a `pipeline_stages`-stage pipeline.

    Collective over `comm` (two splits): every rank constructs it, with the same `pipeline_stages`.
    The check that the world size is a multiple of `pipeline_stages` comes first and is the same on
    every rank, so a bad size raises ValueError everywhere before any rank waits on a split."""

    def __init__(self, comm: Communicator, pipeline_stages: int = 1):
        self.comm = comm
        self.num_stages = _check_stages(comm.size, pipeline_stages)
        self.dp_size = comm.size // self.num_stages
        self.replica, self.stage = divmod(comm.rank, self.num_stages)
        # my replica's pipeline, ranked by stage; then the ranks of my stage, ranked by replica
        self.pipe_comm = comm.split(self.replica, key=self.stage)
        self.dp_comm = comm.split(self.stage, key=self.replica)

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
        return (f"ProcessGrid(world rank {self.comm.rank} of {self.comm.size}: stage {self.stage} of "
                f"{self.num_stages}, replica {self.replica} of {self.dp_size})")
