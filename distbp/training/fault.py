"""Fault injection for restart tests: DISTBP_FAULT=RANK:STEP kills world rank RANK (SIGKILL, as a lost
machine or an out-of-memory kill would) when its run completes optimizer step STEP.

    DISTBP_FAULT=1:7 mpiexec -n 2 python -m distbp.train --checkpoint-every 5 ...

It fires once per launch: `python -m distbp.launch` removes the variable from the environment of
the runs it restarts, so a resumed run goes past that step."""
from __future__ import annotations

import os
import signal
import sys
import time

from .config import ConfigError


def planned() -> tuple[int, int] | None:
    """(rank, step) from DISTBP_FAULT, or None; ConfigError when it is malformed."""
    text = os.environ.get("DISTBP_FAULT", "")
    if not text:
        return None
    rank, sep, step = text.partition(":")
    if not (sep and rank.strip().isdigit() and step.strip().isdigit()):
        raise ConfigError(f"DISTBP_FAULT={text!r}: expected RANK:STEP, e.g. 1:7")
    return int(rank), int(step)


def after_step(rank: int, step: int) -> None:
    """Called once per optimizer step with this process's world rank and the steps done so far."""
    if os.environ.get("DISTBP_FAULT") and planned() == (rank, step):
        sys.stdout.flush()
        sys.stderr.write(f"distbp: DISTBP_FAULT kills rank {rank} after step {step} (at {time.time():.3f})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
