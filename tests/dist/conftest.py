"""MPI test helpers. Tests marked `mpi` run under `mpiexec -n N python -m mpi4py -m pytest --with-mpi`
(tests/run.sh, N = 2 and 4) and in a world of one with `pytest --with-mpi tests/dist`; the `comm`
fixture is the world communicator either way."""
import pytest

from distbp.dist import get_comm


@pytest.fixture
def comm():
    return get_comm()
