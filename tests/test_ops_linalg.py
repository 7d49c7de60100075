"""matmul (1-D, 2-D, batched, broadcast batch dims) and the fused linear: forward against NumPy,
backward by gradcheck and by the closed forms dA = G B^T, dB = A^T G."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import ops


@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 5)),            # matrix @ matrix
    ((4,), (4,)),                # vector . vector -> scalar
    ((4,), (4, 2)),              # vector @ matrix
    ((3, 4), (4,)),              # matrix @ vector
    ((2, 3, 4), (2, 4, 5)),      # batched
    ((2, 3, 4), (4, 5)),         # batch broadcast on the left
    ((4,), (2, 4, 3)),           # vector @ batch
    ((2, 1, 3, 4), (5, 4, 2)),   # batch dims broadcast against each other
])
def test_matmul_matches_numpy_and_gradcheck(sa, sb):
    a, b = t64(*sa, seed=1), t64(*sb, seed=2)
    y = a @ b
    np.testing.assert_allclose(y.numpy(), a.data @ b.data, rtol=1e-12)
    assert y.shape == np.matmul(a.data, b.data).shape
    db.gradcheck(lambda a, b: ops.matmul(a, b), [a, b])


def test_matmul_gradient_matches_closed_form():
    a, b = t64(3, 4, seed=1), t64(4, 5, seed=2)
    g = np.random.default_rng(3).standard_normal((3, 5))
    (a @ b).backward(g)
    np.testing.assert_allclose(a.grad, g @ b.data.T)
    np.testing.assert_allclose(b.grad, a.data.T @ g)


def test_matmul_with_an_ndarray_on_either_side():
    w = t64(4, 3)
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose((x @ w).numpy(), x @ w.data)
    np.testing.assert_allclose((w.T @ x.T).numpy(), w.data.T @ x.T)
    db.gradcheck(lambda w: x @ w, [w])


def test_linear_is_x_times_weight_transposed_plus_bias():
    x, w, b = t64(5, 3, seed=1), t64(4, 3, seed=2), t64(4, seed=3)
    np.testing.assert_allclose(ops.linear(x, w, b).numpy(), x.data @ w.data.T + b.data, rtol=1e-12)
    np.testing.assert_allclose(ops.linear(x, w).numpy(), x.data @ w.data.T, rtol=1e-12)
    db.gradcheck(ops.linear, [x, w, b])
    db.gradcheck(ops.linear, [x, w])


def test_linear_accepts_extra_leading_dims():
    x, w, b = t64(2, 3, 4, seed=1), t64(5, 4, seed=2), t64(5, seed=3)
    np.testing.assert_allclose(ops.linear(x, w, b).numpy(), x.data @ w.data.T + b.data, rtol=1e-12)
    db.gradcheck(ops.linear, [x, w, b])


def test_linear_skips_the_input_gradient_when_the_input_needs_none():
    x = t64(5, 3, requires_grad=False)
    w, b = t64(4, 3, seed=2), t64(4, seed=3)
    ops.linear(x, w, b).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad, np.ones((5, 4)).T @ x.data)
    np.testing.assert_allclose(b.grad, np.full(4, 5.0))


def test_same_weight_used_in_two_linears_accumulates():
    x, w = t64(2, 3, seed=1), t64(3, 3, seed=2)
    db.gradcheck(lambda x, w: ops.linear(ops.linear(x, w).tanh(), w), [x, w])


def test_matmul_matches_torch():
    torch = torch_or_skip()
    a, b = t64(2, 3, 4, seed=1), t64(4, 5, seed=2)
    ta, tb = torch.tensor(a.data, requires_grad=True), torch.tensor(b.data, requires_grad=True)
    (a @ b).sum().backward()
    (ta @ tb).sum().backward()
    np.testing.assert_allclose(a.grad, ta.grad.numpy())
    np.testing.assert_allclose(b.grad, tb.grad.numpy())
