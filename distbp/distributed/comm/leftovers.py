"""Nothing left in /dev/shm when a job dies: unlink MPICH's shared-memory file once all ranks hold it.

MPICH maps a file /dev/shm/mpich_shm_<id>_0 (2 MB for 2 ranks, 4 MB for 4) in MPI_Init for the
messages between ranks of one machine, and unlinks it in MPI_Finalize. A job that ends in MPI_Abort,
a signal or kill -9 never gets there, so every such job left one behind (hundreds piled up). Once
every rank has passed MPI_Init (a barrier after it) every rank has it mapped, and a mapped file
lives on after its name is gone, so the name can go at once: then nothing is left whatever way the
job ends. MPICH's own unlink at MPI_Finalize finds nothing and ignores it (checked with MPICH 5).
The shared windows of DDP's buckets (shm.py) need nothing: MPICH unlinks those itself on creation."""
from __future__ import annotations

import os

_PREFIX = "/dev/shm/mpich_shm_"
_done = False


def mapped_segments(maps: str = "/proc/self/maps") -> set:
    """Paths of MPICH shared-memory files this process maps that still have a name."""
    try:
        with open(maps, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:   # not Linux: nothing known to clean
        return set()
    return {line.split(None, 5)[5] for line in lines
            if len(line.split(None, 5)) == 6 and line.split(None, 5)[5].startswith(_PREFIX)
            and not line.endswith("(deleted)")}


def unlink_after_start(mpi_world) -> list:
    """Collective over MPI_COMM_WORLD, once per process: barrier, then unlink the mapped segments."""
    global _done
    if _done:
        return []
    _done = True
    mpi_world.Barrier()   # every rank is past MPI_Init, so every rank has the file mapped
    removed = []
    for path in sorted(mapped_segments()):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:   # another rank of this machine was first, or not ours to remove
            pass
    return removed
