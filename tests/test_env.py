"""Every DISTBP_* setting is parsed in one place (distbp/_env.py): booleans where 0/false mean off,
numbers checked for type and range, and a bad value is one line naming the variable, the value and
what is allowed; never a traceback at import time."""
import os
import subprocess
import sys

import pytest

from distbp import _env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("text, value", [("1", True), ("true", True), ("ON", True), ("yes", True),
                                         ("0", False), ("false", False), ("Off", False), ("no", False), ("", False)])
def test_booleans_read_0_and_false_as_off(monkeypatch, text, value):
    monkeypatch.setenv("DISTBP_DEBUG_COLLECTIVES", text)
    assert _env.get("DISTBP_DEBUG_COLLECTIVES") is value


def test_unset_settings_are_their_defaults(monkeypatch):
    for name in _env.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert _env.get("DISTBP_COLLECTIVE_TIMEOUT") == 300.0 and _env.get("DISTBP_SHM_ALLREDUCE") is True
    _env.check_all()


@pytest.mark.parametrize("name, text, allowed", [
    ("DISTBP_DEBUG_COLLECTIVES", "maybe", "use 1/true/yes/on or 0/false/no/off"),
    ("DISTBP_COLLECTIVE_TIMEOUT", "abc", "use a number from 0.001 to 604800 seconds"),
    ("DISTBP_COLLECTIVE_TIMEOUT", "0", "use a number from 0.001 to 604800 seconds"),
    ("DISTBP_COLLECTIVE_TIMEOUT", "nan", "use a number from 0.001 to 604800 seconds"),
    ("DISTBP_WAIT_NAP_US", "1e12", "use a number from 0 to 1e+06 microseconds"),   # would disable the watchdog
    ("DISTBP_WAIT_NAP_US", "-5", "use a number from 0 to 1e+06 microseconds"),
    ("DISTBP_WAIT_BUSY_TESTS", "6.5", "use an integer from 0 to 1e+06"),
])
def test_a_bad_value_is_one_line_naming_variable_value_and_what_is_allowed(monkeypatch, name, text, allowed):
    monkeypatch.setenv(name, text)
    with pytest.raises(_env.EnvError) as e:
        _env.check_all()
    assert str(e.value) == f"{name}={text!r} is not allowed: {allowed}"
    assert _env.get(name, lenient=True) == _env.SETTINGS[name].default   # for code that must not fail


def _python(code, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DISTBP_", "PMI_"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={**full, "PYTHONPATH": ROOT, **env})


def test_bad_values_do_not_fail_at_import_and_the_command_says_one_line(tmp_path):
    bad = {"DISTBP_WAIT_NAP_US": "lots", "DISTBP_RETAIN_FREED_MEMORY": "perhaps", "DISTBP_NO_MPI": "1"}
    imported = _python("import distbp, distbp.distributed, distbp.train; print('ok')", **bad)
    assert imported.returncode == 0 and imported.stdout == "ok\n", imported.stderr
    run = _python("import sys; from distbp.train import main; sys.exit(main(['--no-progress', '--checkpoint-dir', "
                  f"{str(tmp_path)!r}]))", **bad)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr == "distbp.train: error: DISTBP_WAIT_NAP_US='lots' is not allowed: use a number from 0 to " \
                         "1e+06 microseconds\n"
    assert not os.listdir(tmp_path)


def test_debug_collectives_0_leaves_debug_off_in_the_watchdog():
    pytest.importorskip("mpi4py")
    code = ("from mpi4py import MPI; from distbp.distributed.comm.watchdog import Watchdog; "
            "print(Watchdog(MPI.COMM_SELF).debug)")
    assert _python(code, DISTBP_DEBUG_COLLECTIVES="0").stdout == "False\n"
    assert _python(code, DISTBP_DEBUG_COLLECTIVES="1").stdout == "True\n"
