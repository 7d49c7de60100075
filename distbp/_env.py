"""Every DISTBP_* environment setting, parsed and checked in one place.

Modules ask `get(NAME)` when they need a value (never at import time with a bare int()/float(), so a
typo cannot end a process in a traceback before anything could catch it). A bad value raises
`EnvError` with one line naming the variable, its value and what is allowed; `lenient=True` gives
the default instead, for code that must not fail (the communicator a job's error report travels
through) and leaves the report to `check_all()`, which commands and `distributed.init()` call at start.

Booleans: 1/true/yes/on mean on, 0/false/no/off (or empty) mean off, anything else is an error."""
from __future__ import annotations

import os
from dataclasses import dataclass

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class EnvError(ValueError):
    """A DISTBP_* variable with a value that is not allowed; str(e) is the one line to show."""


@dataclass(frozen=True)
class Setting:
    kind: type            # bool, int or float
    default: object
    low: float = 0        # inclusive bounds for numbers
    high: float = 0
    unit: str = ""
    help: str = ""

    def allowed(self) -> str:
        if self.kind is bool:
            return "1/true/yes/on or 0/false/no/off"
        what = "an integer" if self.kind is int else "a number"
        return f"{what} from {self.low:g} to {self.high:g}{' ' + self.unit if self.unit else ''}"


SETTINGS = {
    "DISTBP_NO_MPI": Setting(bool, False, help="run as one process even when mpi4py could start MPI"),
    "DISTBP_COLLECTIVE_TIMEOUT": Setting(
        float, 300.0, 0.001, 7 * 24 * 3600, "seconds",
        "how long a rank waits in one MPI call before the watchdog reports and ends the job"),
    "DISTBP_DEBUG_COLLECTIVES": Setting(bool, False, help="check every collective's op/shape/dtype across ranks"),
    # A nap longer than a second would make every wait late by that much, and one of hours would
    # keep the watchdog from ever looking at the clock.
    "DISTBP_WAIT_NAP_US": Setting(float, 20.0, 0, 1_000_000, "microseconds",
                                  "pause between MPI Test() calls once a wait stops spinning"),
    "DISTBP_WAIT_BUSY_TESTS": Setting(int, 64, 0, 1_000_000, "", "Test() calls before a wait starts napping"),
    "DISTBP_SHM_ALLREDUCE": Setting(bool, True, help="reduce DDP buckets through node shared memory"),
    "DISTBP_HIERARCHICAL_ALLREDUCE": Setting(bool, True, help="across hosts: shared memory within each host, MPI "
                                             "between hosts (comm/hierarchical.py)"),
    "DISTBP_RANKS_PER_HOST": Setting(int, 0, 0, 1 << 20, "", "tests: pretend hosts of N consecutive ranks (0: the "
                                     "real hosts)"),
    "DISTBP_RETAIN_FREED_MEMORY": Setting(bool, True, help="keep freed memory in the heap for reuse (glibc)"),
}


def _parse(name: str, text: str):
    s = SETTINGS[name]
    value = text.strip()
    if s.kind is bool:
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise EnvError(f"{name}={text!r} is not allowed: use {s.allowed()}")
    try:
        number = s.kind(value)
    except ValueError:
        number = None
    # NaN fails both comparisons, so it is refused with the rest
    if number is None or not s.low <= number <= s.high:
        raise EnvError(f"{name}={text!r} is not allowed: use {s.allowed()}")
    return number


def get(name: str, lenient: bool = False):
    """The value of DISTBP_<...> `name` (its default when unset); a bad value raises EnvError,
    or gives the default with `lenient`."""
    text = os.environ.get(name)
    if text is None:
        return SETTINGS[name].default
    try:
        return _parse(name, text)
    except EnvError:
        if lenient:
            return SETTINGS[name].default
        raise


def check_all() -> None:
    """Raise EnvError for the first DISTBP_* setting in the environment with a bad value."""
    for name in SETTINGS:
        get(name)


def snapshot() -> dict:
    """The known DISTBP_* settings as this process reads them (for comparing ranks)."""
    return {name: get(name, lenient=True) for name in SETTINGS}
