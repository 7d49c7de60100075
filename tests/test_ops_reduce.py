"""Reductions and the softmax family: forward against NumPy over axes (None, int, negative, tuple),
keepdim, gradcheck in float64, numerical stability at large logits."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import ops

AXES = [None, 0, 1, -1, (0, 2), (-1, -3), (1,)]


@pytest.mark.parametrize("dim", AXES)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name,ref", [("sum", np.sum), ("mean", np.mean), ("amax", np.amax)])
def test_reduction_matches_numpy_and_gradcheck(name, ref, dim, keepdim):
    x = t64(2, 3, 4)
    fn = getattr(ops, name)
    y = fn(x, dim, keepdim)
    np.testing.assert_allclose(y.numpy(), ref(x.data, axis=dim, keepdims=keepdim), rtol=1e-12)
    db.gradcheck(lambda x: fn(x, dim, keepdim), [x])


@pytest.mark.parametrize("dim", AXES)
@pytest.mark.parametrize("unbiased", [True, False])
def test_var_and_std_match_numpy_ddof_and_gradcheck(dim, unbiased):
    x = t64(2, 3, 4)
    ddof = 1 if unbiased else 0
    np.testing.assert_allclose(ops.var(x, dim, unbiased).numpy(), np.var(x.data, axis=dim, ddof=ddof))
    np.testing.assert_allclose(ops.std(x, dim, unbiased, keepdim=True).numpy(),
                               np.std(x.data, axis=dim, ddof=ddof, keepdims=True))
    db.gradcheck(lambda x: ops.var(x, dim, unbiased), [x])
    db.gradcheck(lambda x: ops.std(x, dim, unbiased), [x])


def test_reductions_of_a_scalar_tensor():
    x = t64()
    assert x.shape == ()
    np.testing.assert_allclose(x.sum().numpy(), x.data)
    db.gradcheck(lambda x: x.sum() * 3, [x])
    db.gradcheck(lambda x: x.mean(), [x])


def test_method_forms_accept_axis_and_dim_keywords():
    x = t64(3, 4)
    np.testing.assert_allclose(x.sum(axis=0).numpy(), x.data.sum(0))
    np.testing.assert_allclose(x.mean(dim=1, keepdim=True).numpy(), x.data.mean(1, keepdims=True))
    np.testing.assert_allclose(x.var(1).numpy(), x.data.var(1, ddof=1))


def test_max_with_dim_returns_values_and_indices_and_routes_gradient_to_the_argmax():
    x = t64(3, 4)
    values, indices = ops.max(x, 1)
    np.testing.assert_array_equal(values.numpy(), x.data.max(1))
    np.testing.assert_array_equal(indices.numpy(), x.data.argmax(1))
    values.sum().backward()
    want = np.zeros((3, 4))
    want[np.arange(3), x.data.argmax(1)] = 1
    np.testing.assert_array_equal(x.grad, want)
    assert ops.max(x).shape == ()  # no dim: the overall maximum


def test_amax_splits_gradient_evenly_between_tied_maxima():
    x = db.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], requires_grad=True, dtype=np.float64)
    ops.amax(x, 1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_softmax_and_log_softmax_match_numpy_and_gradcheck(dim):
    x = t64(3, 4, 2)
    e = np.exp(x.data - x.data.max(axis=dim, keepdims=True))
    p = e / e.sum(axis=dim, keepdims=True)
    np.testing.assert_allclose(ops.softmax(x, dim).numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(ops.log_softmax(x, dim).numpy(), np.log(p), rtol=1e-12)
    db.gradcheck(lambda x: ops.softmax(x, dim), [x])
    db.gradcheck(lambda x: ops.log_softmax(x, dim), [x])


def test_softmax_rows_sum_to_one():
    x = t64(5, 7)
    np.testing.assert_allclose(ops.softmax(x).numpy().sum(-1), np.ones(5))


def test_log_softmax_is_stable_at_1e4():
    # exp(1e4) overflows; the shifted form gives exact values: [0, -1, -2] - log(1 + e^-1 + e^-2)
    x = db.tensor([[1e4, 1e4 - 1, 1e4 - 2], [-1e4, -1e4 - 1, -1e4 - 2]], requires_grad=True)
    y = ops.log_softmax(x)
    want = np.array([0.0, -1.0, -2.0]) - np.log(1 + np.exp(-1) + np.exp(-2))
    np.testing.assert_allclose(y.numpy(), np.stack([want, want]), rtol=1e-6)
    y.sum().backward()
    assert np.isfinite(x.grad).all()
    p = ops.softmax(x).numpy()
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p[0], np.exp(want), rtol=1e-6)


def test_softmax_matches_torch():
    torch = torch_or_skip()
    x = t64(3, 5)
    tx = torch.tensor(x.data, requires_grad=True)
    w = np.random.default_rng(0).standard_normal((3, 5))
    (ops.log_softmax(x, 1) * w).sum().backward()
    (torch.log_softmax(tx, 1) * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10)
