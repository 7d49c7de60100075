"""Shared test helpers: float64 tensors, the torch reference of the parity tests (optional, except under
CI=true), and the `comm` fixture of the MPI tests.

The one conftest for all of tests/ (tests/distributed included): two files both named conftest.py would
shadow each other when test modules `from conftest import ...`."""
import os

import numpy as np
import pytest

import distbp as db


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state and the float32 default."""
    db.manual_seed(0)
    db.set_default_dtype(np.float32)
    yield
    db.set_default_dtype(np.float32)


def t64(*shape, requires_grad=True, seed=None, low=None):
    """A float64 tensor of standard normals (or uniform in [low, low+1) when low is given)."""
    rng = np.random.default_rng(seed if seed is not None else sum(shape) + len(shape))
    data = rng.standard_normal(shape) if low is None else rng.random(shape) + low
    return db.tensor(data, requires_grad=requires_grad, dtype=np.float64)


def torch_or_skip():
    """The torch module for a reference comparison, or skip the test when torch is absent. Under
    CI=true a missing torch fails the test instead: the parity tests are the engine's proof, and CI
    installs torch (`pip install -e '.[test,parity]'`), so a skip there would hide a broken install."""
    if os.environ.get("CI") == "true":
        try:
            import torch
        except ImportError as e:
            pytest.fail(f"CI=true and torch is not importable ({e}): install it with pip install -e "
                        "'.[parity]'; the torch parity tests must run in CI, not skip", pytrace=False)
        return torch
    return pytest.importorskip("torch")


@pytest.fixture
def comm():
    """The world communicator. Tests marked `mpi` run under `mpiexec -n N python -m mpi4py -m pytest
    --with-mpi` (tests/run.sh, N = 2 and 4) and in a world of one with `pytest --with-mpi tests/distributed`."""
    from distbp.distributed import get_comm
    return get_comm()


@pytest.fixture
def free_after(request):
    """Call it on what a test builds over MPI (a grid, a wrapper, a sub-communicator; it returns its
    argument): freed after the test, last built first. The suite runs every test in one process per
    rank, and MPICH has room for about 2048 communicators per process. Not after a failure: free()
    is collective, and the other ranks may be waiting elsewhere."""
    made = []
    failed = request.session.testsfailed
    yield lambda thing: made.append(thing) or thing
    if request.session.testsfailed == failed:
        for thing in reversed(made):
            thing.free()


# DISTBP_TEST_COUNT_COMMS=1: report the MPI communicators the run left alive (tests/context_ids.py),
# to check that the MPI suite frees what it builds (MPICH has room for about 2048 per process).
_free_at_start = None


def pytest_sessionstart(session):
    global _free_at_start
    from context_ids import free_context_ids, mpi_running
    if os.environ.get("DISTBP_TEST_COUNT_COMMS") == "1" and mpi_running():
        _free_at_start = free_context_ids()


def pytest_terminal_summary(terminalreporter):
    from context_ids import free_context_ids
    if _free_at_start is not None:
        from mpi4py import MPI
        free = free_context_ids()
        if MPI.COMM_WORLD.Get_rank() == 0:
            terminalreporter.write_line(f"MPI communicators left alive by this run: {_free_at_start - free} "
                                        f"({free} context ids still free)")
