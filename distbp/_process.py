"""Process-wide C-runtime tuning that `import distbp` applies once (from distbp.backend).

A training step allocates and frees the same large arrays every step. glibc's default malloc
returns a freed block above its (adaptive) mmap threshold to the OS and faults fresh pages in for
the next one, so every step pays thousands of page faults for memory it just gave back, a large
share of a step's time. Keeping freed blocks in the heap for reuse, as a caching allocator's pool
does, removes that; the cost is a heap that stays at its peak size.

Opt out with DISTBP_RETAIN_FREED_MEMORY=0 in the environment (read here only, at import)."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

from . import _env

OPT_OUT_VARIABLE = "DISTBP_RETAIN_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_applied: bool | None = None  # the outcome of the one attempt, once made


def _set_malloc_thresholds() -> bool:
    # lenient: this runs at import; a bad value is reported by _env.check_all() when a command starts
    if not _env.get(OPT_OUT_VARIABLE, lenient=True) or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    # Both, or neither: setting one turns off glibc's adaptive thresholds and made it worse.
    # 32 MB is the largest mmap threshold glibc accepts on 64-bit.
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def retain_freed_memory() -> bool:
    """Have glibc keep freed blocks up to 32 MB in the heap instead of returning them to the OS.

    Applied once per process (the first call; `import distbp` makes it); later calls return the
    same answer: whether it is in effect. False with DISTBP_RETAIN_FREED_MEMORY=0, and where there
    is no glibc mallopt (not Linux, musl)."""
    global _applied
    if _applied is None:
        _applied = _set_malloc_thresholds()
    return _applied
