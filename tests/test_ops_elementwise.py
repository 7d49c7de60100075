"""Elementwise ops and activations: forward against NumPy formulas, backward by gradcheck (float64),
broadcasting, tensors used twice, and numbers/arrays on either side of an operator."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import ops

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 1, 4), (2, 4)), ((2, 4), ()), ((), (5,)), ((4, 1), (1, 3)), ((), ())]

BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "maximum": (ops.maximum, np.maximum),
    "minimum": (ops.minimum, np.minimum),
}


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_binary_op_matches_numpy_and_gradcheck_with_broadcasting(name, sa, sb):
    fn, ref = BINARY[name]
    a, b = t64(*sa, seed=1), t64(*sb, seed=2)
    if name == "div":
        b.data += np.sign(b.data) * 1.5  # keep the divisor away from 0
    np.testing.assert_allclose(fn(a, b).numpy(), ref(a.data, b.data), rtol=1e-12)
    db.gradcheck(fn, [a, b])


def test_broadcast_gradients_have_each_inputs_shape():
    a, b = t64(3, 1, 4), t64(2, 4)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1, 4) and b.grad.shape == (2, 4)
    # d/da sum(a*b) = sum of b over the broadcast axis; d/db = sum of a over the leading axis
    np.testing.assert_allclose(a.grad, np.broadcast_to(b.data.sum(0), (3, 1, 4)))
    np.testing.assert_allclose(b.grad, np.broadcast_to(a.data.sum(0), (2, 4)))


def test_pow_matches_numpy_and_gradcheck_for_number_and_tensor_exponents():
    a = t64(3, 4, low=0.5)
    np.testing.assert_allclose((a ** 3).numpy(), a.data ** 3)
    db.gradcheck(lambda a: a ** 3, [a])
    db.gradcheck(lambda a: a ** 0.5, [a])
    e = t64(4, seed=5)
    np.testing.assert_allclose((a ** e).numpy(), a.data ** e.data)
    db.gradcheck(lambda a, e: a ** e, [a, e])


def test_rpow_number_base_gradient_is_log_base_times_result():
    e = t64(5)
    y = 2.0 ** e
    np.testing.assert_allclose(y.numpy(), 2.0 ** e.data)
    y.sum().backward()
    np.testing.assert_allclose(e.grad, np.log(2.0) * 2.0 ** e.data)
    db.gradcheck(lambda e: 2.0 ** e, [t64(5)])


UNARY = {
    "neg": (lambda x: -x, lambda x: -x, None),
    "exp": (ops.exp, np.exp, None),
    "log": (ops.log, np.log, 0.5),
    "sqrt": (ops.sqrt, np.sqrt, 0.5),
    "abs": (ops.abs, np.abs, None),
    "relu": (ops.relu, lambda x: np.maximum(x, 0), None),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x), None),
    "sigmoid": (ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)), None),
    "tanh": (ops.tanh, np.tanh, None),
    "clip": (lambda x: ops.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), None),
}


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("shape", [(3, 4), (), (2, 3, 2)])
def test_unary_op_matches_numpy_and_gradcheck(name, shape):
    fn, ref, low = UNARY[name]
    x = t64(*shape, low=low, seed=3)
    np.testing.assert_allclose(fn(x).numpy(), ref(x.data), rtol=1e-12)
    db.gradcheck(fn, [x])


def test_abs_relu_and_clip_gradients_at_their_kinks_follow_torch():
    x = db.tensor([-1.0, 0.0, 2.0], requires_grad=True, dtype=np.float64)
    ops.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 1])  # relu'(0) = 0
    x.grad = None
    ops.abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-1, 0, 1])  # sign(0) = 0
    x.grad = None
    ops.clip(x, 0.0, 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1])  # boundaries pass the gradient


def test_maximum_splits_gradient_evenly_on_ties():
    a = db.tensor([1.0, 2.0, 3.0], requires_grad=True, dtype=np.float64)
    b = db.tensor([3.0, 2.0, 1.0], requires_grad=True, dtype=np.float64)
    ops.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0, 0.5, 1])
    np.testing.assert_array_equal(b.grad, [1, 0.5, 0])


def test_sigmoid_is_finite_and_exact_at_huge_inputs():
    x = db.tensor([-1000.0, 0.0, 1000.0], requires_grad=True)
    y = ops.sigmoid(x)
    np.testing.assert_array_equal(y.numpy(), np.array([0.0, 0.5, 1.0], np.float32))
    y.sum().backward()
    assert np.isfinite(x.grad).all()


def test_where_selects_and_routes_gradient_by_condition():
    a, b = t64(3, 4, seed=1), t64(4, seed=2)
    cond = a.data > 0
    np.testing.assert_allclose(ops.where(cond, a, b).numpy(), np.where(cond, a.data, b.data))
    db.gradcheck(lambda a, b: ops.where(cond, a, b), [a, b])


def test_tensor_used_twice_accumulates_both_uses():
    x = t64(3, 4)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    db.gradcheck(lambda x: x * x, [x])
    a = t64(5)
    (a + a).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full(5, 2.0))
    db.gradcheck(lambda a: a * ops.exp(a) - a / (1 + a * a), [t64(2, 3)])


@pytest.mark.parametrize("expr,ref", [
    (lambda t: 1 / t, lambda x: 1 / x),
    (lambda t: 0.5 * t, lambda x: 0.5 * x),
    (lambda t: t * 0.5, lambda x: x * 0.5),
    (lambda t: 2 - t, lambda x: 2 - x),
    (lambda t: t - 2, lambda x: x - 2),
    (lambda t: 3 + t, lambda x: 3 + x),
    (lambda t: t ** 2, lambda x: x ** 2),
    (lambda t: np.full((3, 4), 2.0) + t, lambda x: 2.0 + x),
    (lambda t: t + np.arange(4.0), lambda x: x + np.arange(4.0)),
    (lambda t: np.arange(1.0, 5.0) / t, lambda x: np.arange(1.0, 5.0) / x),
    (lambda t: np.ones((2, 1, 1)) * t, lambda x: np.ones((2, 1, 1)) * x),
    (lambda t: [[1.0], [2.0], [3.0]] - t, lambda x: np.array([[1.0], [2.0], [3.0]]) - x),
])
def test_numbers_and_arrays_on_either_side_of_an_operator(expr, ref):
    x = t64(3, 4, low=0.5)
    y = expr(x)
    assert isinstance(y, db.Tensor)
    np.testing.assert_allclose(y.numpy(), ref(x.data))
    db.gradcheck(expr, [x])


def test_ndarray_on_the_left_returns_a_tensor_not_an_object_array():
    t = db.tensor([1.0, 2.0], requires_grad=True)
    y = np.array([3.0, 4.0], dtype=np.float32) * t
    assert isinstance(y, db.Tensor) and y.dtype == np.float32
    y.sum().backward()
    np.testing.assert_array_equal(t.grad, [3.0, 4.0])


@pytest.mark.parametrize("expr", [lambda t: 1 / t, lambda t: 0.5 * t, lambda t: t + 1, lambda t: 2.0 ** t,
                                  lambda t: t ** 2, lambda t: t - np.float64(1.5), lambda t: 3 - t])
def test_float32_is_preserved_with_python_scalars(expr):
    t = db.tensor([1.0, 2.0], requires_grad=True)
    assert t.dtype == np.float32
    y = expr(t)
    assert y.dtype == np.float32
    y.sum().backward()
    assert t.grad.dtype == np.float32


def test_float64_arrays_do_not_upcast_a_float32_tensor():
    t = db.tensor([1.0, 2.0])
    assert (t + np.array([1.0, 2.0])).dtype == np.float32
    assert (np.array([1.0, 2.0]) * t).dtype == np.float32


def test_comparisons_give_boolean_tensors_without_gradient():
    t = db.tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = t > 1.5
    assert m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.numpy(), [False, True, True])
    np.testing.assert_array_equal((t == 2.0).numpy(), [False, True, False])


def test_elementwise_ops_match_torch():
    torch = torch_or_skip()
    a, b = t64(3, 1, 4, seed=1), t64(2, 4, seed=2)
    ta = torch.tensor(a.data, requires_grad=True)
    tb = torch.tensor(b.data, requires_grad=True)
    y = (ops.sigmoid(a) * ops.tanh(b) + ops.maximum(a, b) / (1 + b * b)).sum()
    ty = (torch.sigmoid(ta) * torch.tanh(tb) + torch.maximum(ta, tb) / (1 + tb * tb)).sum()
    y.backward()
    ty.backward()
    np.testing.assert_allclose(y.item(), ty.item(), rtol=1e-10)
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-10)
