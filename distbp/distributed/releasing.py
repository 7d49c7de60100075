"""What owns MPI communicators gives them back: `free()`, `with` blocks, and refusal afterwards.

MPICH has room for about 2048 communicators per process (each shared-memory window takes one
too), and nothing frees them by itself before the process exits: a program that builds process
grids or DDP wrappers again and again (a notebook, a search over settings, a test suite) must free
the old ones. torch's counterpart is `dist.destroy_process_group(group)`."""
from __future__ import annotations

from .comm.base import CommunicatorFreedError


class Releasable:
    """Mixin: `free()` runs the subclass's `_release()` once; `with obj:` frees on a clean exit;
    `_check_not_freed()` makes later use raise CommunicatorFreedError. Collective like the
    communicators it frees: every rank frees the same objects in the same order."""

    _freed = False

    def free(self) -> None:
        """Collective: release what this object owns (never a communicator it was given)."""
        if not self._freed:
            self._release()
            object.__setattr__(self, "_freed", True)  # object's: a Module keeps attributes its own way

    def _release(self) -> None:
        raise NotImplementedError

    def _check_not_freed(self) -> None:
        if self._freed:
            raise CommunicatorFreedError(f"this {type(self).__name__} was freed (free(), or the end of its `with` "
                                         "block) and cannot be used again; build a new one")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Not after an error: free() is collective, and the other ranks may be waiting elsewhere
        # for this one; what it holds is released at exit instead.
        if exc_type is None:
            self.free()
