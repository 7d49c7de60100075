"""backend: array-module dispatch, the seeded RNG, the default dtype, devices and scatter_add."""
import numpy as np
import pytest

import distbp as db
from distbp import backend, nn


def test_get_array_module_is_numpy_for_host_arrays_and_numbers():
    assert backend.get_array_module(np.zeros(2), 3.0) is np
    assert backend.get_array_module() is np


def test_manual_seed_makes_parameter_init_reproducible():
    db.manual_seed(123)
    a = nn.Linear(4, 3).weight.numpy().copy()
    db.manual_seed(123)
    b = nn.Linear(4, 3).weight.numpy()
    np.testing.assert_array_equal(a, b)
    db.manual_seed(124)
    assert not np.array_equal(a, nn.Linear(4, 3).weight.numpy())


def test_rng_state_round_trip_replays_the_same_draws():
    state = db.get_rng_state()
    first = backend.rng().random(3)
    db.set_rng_state(state)
    np.testing.assert_array_equal(backend.rng().random(3), first)


def test_set_default_dtype_accepts_only_float32_and_float64():
    db.set_default_dtype(np.float64)
    assert db.get_default_dtype() == np.float64
    assert nn.Linear(2, 2).weight.dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        db.set_default_dtype(np.int32)
    db.set_default_dtype("float32")
    assert nn.Linear(2, 2).weight.dtype == np.float32


def test_scatter_add_sums_repeated_indices():
    target = np.zeros(4)
    backend.scatter_add(target, np.array([1, 1, 3, 1]), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(target, [0.0, 7.0, 0.0, 3.0])


def test_to_device_cpu_does_not_copy_a_host_array():
    a = np.zeros(3)
    assert backend.to_device(a, "cpu") is a
    assert backend.to_numpy(a) is a
    assert backend.device_of(a) == "cpu"


def test_unknown_device_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        backend.to_device(np.zeros(1), "tpu")


@pytest.mark.skipif(backend.cuda_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(RuntimeError, match="not available"):
        db.tensor([1.0]).to("cuda")


def test_is_array_only_for_ndarrays():
    assert backend.is_array(np.zeros(1)) and not backend.is_array([1.0]) and not backend.is_array(1.0)
