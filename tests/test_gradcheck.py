"""The user-callable gradient checker: passes correct backwards, catches wrong ones (naming the input),
refuses float32, and exercises every element of a non-scalar output."""
import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp.autograd import Function
from distbp.gradcheck import GradcheckError, numerical_grad


def test_gradcheck_passes_a_correct_backward():
    assert db.gradcheck(lambda x, y: (x * y.exp()).sum(), [t64(3, 2), t64(3, 2, seed=4)])


class _WrongSecondInput(Function):
    """a * b with a deliberately wrong gradient for b (missing the factor a)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return gy * self.b, gy


def test_gradcheck_names_the_input_whose_gradient_is_wrong():
    with pytest.raises(GradcheckError, match="input 1"):
        db.gradcheck(_WrongSecondInput.apply, [t64(3), t64(3, seed=5)])


class _WrongInOneElement(Function):
    def forward(self, x):
        return x * 2

    def backward(self, gy):
        g = 2 * gy
        g[-1] = 0  # wrong only where the last output element is concerned
        return (g,)


def test_gradcheck_exercises_every_element_of_a_non_scalar_output():
    with pytest.raises(GradcheckError, match=r"index \(3,\)"):
        db.gradcheck(_WrongInOneElement.apply, [t64(4)])


def test_gradcheck_refuses_float32_inputs():
    with pytest.raises(GradcheckError, match="float64"):
        db.gradcheck(lambda x: x.sum(), [db.tensor([1.0, 2.0], requires_grad=True)])


def test_gradcheck_requires_a_tensor_result():
    with pytest.raises(GradcheckError, match="Tensor"):
        db.gradcheck(lambda x: 1.0, [t64(2)])


def test_gradcheck_skips_inputs_that_need_no_gradient_and_handles_non_contiguous_ones():
    x = t64(4, 3)
    x.data = np.asfortranarray(x.data)
    assert db.gradcheck(lambda x, c: x * c, [x, t64(4, 3, requires_grad=False)])


def test_numerical_grad_of_a_known_function_and_input_restored():
    x = db.tensor(np.array([1.0, 2.0, 3.0]), dtype=np.float64)
    before = x.data.copy()
    g = numerical_grad(lambda x: (x * x * x).sum(), [x], 0)
    np.testing.assert_allclose(g, 3 * before ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x.data, before)


class _SumAndProduct(Function):
    """(a + b, a * b): two outputs; `wrong` drops b's share of the product's gradient."""

    wrong = False

    def forward(self, a, b):
        self.a, self.b = a, b
        return a + b, a * b

    def backward(self, g_sum, g_prod):
        gb = g_sum if self.wrong else g_sum + g_prod * self.a
        return g_sum + g_prod * self.b, gb


def test_gradcheck_checks_every_output_of_a_multi_output_function():
    inputs = [t64(3), t64(3, seed=6)]
    assert db.gradcheck(_SumAndProduct.apply, inputs)
    _SumAndProduct.wrong = True
    try:
        with pytest.raises(GradcheckError, match="input 1"):
            db.gradcheck(_SumAndProduct.apply, inputs)
        with pytest.raises(GradcheckError, match="input 1"):  # only the second output sees the error
            db.gradcheck(lambda a, b: _SumAndProduct.apply(a, b)[1], inputs)
    finally:
        _SumAndProduct.wrong = False


def test_gradcheck_leaves_a_non_differentiable_output_out():
    assert db.gradcheck(lambda x: db.ops.max_pool1d(x, 2, return_indices=True), [t64(2, 3, 6)])
