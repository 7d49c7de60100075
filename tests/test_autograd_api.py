"""distbp.autograd.backward (several roots, one walk) and distbp.autograd.grad (gradients returned,
no .grad touched), checked against finite differences; and who owns a leaf's gradient array."""
import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import autograd
from distbp.autograd import Function
from distbp.gradcheck import numerical_grad


class _CountingTanh(Function):
    calls = 0

    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, gy):
        type(self).calls += 1
        return (gy * (1 - self.y * self.y),)


def _two_roots(x, w):
    """Two outputs sharing the subgraph h = tanh(x @ w), one of them also used by the other's math."""
    h = _CountingTanh.apply(x @ w)
    y1 = h * h                      # (3, 2)
    y2 = (h.exp() * x.sum()).sum(1)  # (3,)
    return y1, y2


def _weighted(g1, g2):
    """sum <g1, y1> + <g2, y2>, the scalar whose gradient backward([y1, y2], [g1, g2]) computes."""
    def f(x, w):
        y1, y2 = _two_roots(x, w)
        return (y1 * g1).sum() + (y2 * g2).sum()
    return f


def test_backward_over_two_roots_sharing_a_subgraph_matches_finite_differences():
    x, w = t64(3, 4), t64(4, 2)
    rng = np.random.default_rng(1)
    g1, g2 = rng.standard_normal((3, 2)), rng.standard_normal(3)
    fired = []
    w.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad.copy()))
    y1, y2 = _two_roots(x, w)
    _CountingTanh.calls = 0
    autograd.backward([y1, y2], [g1, g2])
    assert _CountingTanh.calls == 1  # the shared node ran once, with the summed gradient
    assert len(fired) == 1           # and w's hook fired once, with its final gradient
    f = _weighted(g1, g2)
    np.testing.assert_allclose(x.grad, numerical_grad(f, [x, w], 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(w.grad, numerical_grad(f, [x, w], 1), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(fired[0], w.grad)


def test_grad_over_two_roots_matches_finite_differences_and_touches_no_grad():
    x, w = t64(3, 4), t64(4, 2)
    rng = np.random.default_rng(2)
    g1, g2 = rng.standard_normal((3, 2)), rng.standard_normal(3)
    fired = []
    x.register_post_accumulate_grad_hook(lambda t: fired.append(1))
    gx, gw = autograd.grad(_two_roots(x, w), [x, w], [g1, g2])
    assert x.grad is None and w.grad is None and fired == []
    f = _weighted(g1, g2)
    np.testing.assert_allclose(gx.numpy(), numerical_grad(f, [x, w], 0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw.numpy(), numerical_grad(f, [x, w], 1), rtol=1e-6, atol=1e-8)
    assert not gx.requires_grad and gx.is_leaf


def test_a_root_that_is_also_below_another_root_gets_both_gradients():
    x = t64(4)
    h = x * x
    total = h.sum() * 3
    g = np.arange(4.0)
    autograd.backward([h, total], [g, None])  # d/dx (<g, x^2> + 3 sum x^2) = 2x (g + 3)
    np.testing.assert_allclose(x.grad, 2 * x.data * (g + 3))


def test_the_same_root_twice_sums_its_gradients_and_tensor_backward_is_one_root():
    x = t64(3)
    y = x.exp()
    autograd.backward([y, y], [np.ones(3), 2 * np.ones(3)], retain_graph=True)
    np.testing.assert_allclose(x.grad, 3 * np.exp(x.data))
    x.grad = None
    y.backward(np.ones(3))
    np.testing.assert_allclose(x.grad, np.exp(x.data))


def test_grad_of_a_non_leaf_input_and_of_a_leaf_below_it():
    x = t64(2, 3)
    h = x.tanh()
    loss = (h * h).sum() + h.exp().sum()
    gh, gx = autograd.grad(loss, [h, x], retain_graph=True)
    np.testing.assert_allclose(gh.numpy(), 2 * h.data + np.exp(h.data))
    np.testing.assert_allclose(gx.numpy(), numerical_grad(lambda x: (x.tanh() ** 2).sum() + x.tanh().exp().sum(),
                                                          [x], 0), rtol=1e-6, atol=1e-8)
    (gh_only,) = autograd.grad(loss, h)  # only the path down to h runs
    np.testing.assert_array_equal(gh_only.numpy(), gh.numpy())
    assert x.grad is None and h.grad is None


def test_grad_raises_for_an_unused_input_unless_allow_unused():
    x, unused = t64(3), t64(3)
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        autograd.grad((x * 2).sum(), [x, unused])
    gx, gu = autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)
    np.testing.assert_array_equal(gx.numpy(), np.full(3, 2.0))
    assert gu is None


def test_grad_frees_the_graph_unless_retain_graph():
    x = t64(3)
    y = (x * x).sum()
    autograd.grad(y, x, retain_graph=True)
    autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="second time"):
        autograd.grad(y, x)


def test_grad_of_a_root_leaf_is_a_copy_of_the_given_gradient():
    x = t64(3)
    g = np.arange(3.0)
    (gx,) = autograd.grad(x, x, g)
    np.testing.assert_array_equal(gx.numpy(), g)
    assert not np.shares_memory(gx.data, g)


def test_backward_with_inputs_accumulates_only_into_them():
    x, w = t64(3, 4), t64(4, 2)
    h = x @ w
    h2 = h.tanh()
    autograd.backward(h2.sum(), inputs=[w, h])
    assert x.grad is None
    np.testing.assert_allclose(h.grad, 1 - h2.data ** 2)
    np.testing.assert_allclose(w.grad, x.data.T @ (1 - h2.data ** 2))
    x2 = t64(2)
    (x2 * x2).sum().backward(inputs=x2)  # Tensor.backward takes inputs too
    np.testing.assert_allclose(x2.grad, 2 * x2.data)


def test_a_pipeline_stage_backward_over_its_outputs_gives_its_input_gradient():
    """A stage with an input leaf (the activation received) and two outputs sent on: backward over
    both outputs with the gradients received fills the input's and the parameters' .grad."""
    a, w = t64(2, 3), t64(3, 3)
    h = (a @ w).tanh()
    out1, out2 = h * 2, h.sum(1)
    g1, g2 = np.ones((2, 3)), np.array([0.5, -1.0])
    expect_a, expect_w = autograd.grad([out1, out2], [a, w], [g1, g2], retain_graph=True)
    autograd.backward([out1, out2], [g1, g2])
    np.testing.assert_allclose(a.grad, expect_a.numpy())
    np.testing.assert_allclose(w.grad, expect_w.numpy())
    np.testing.assert_allclose(a.grad, numerical_grad(lambda a: ((a @ w).tanh() * 2 * g1).sum()
                                                      + ((a @ w).tanh().sum(1) * g2).sum(), [a], 0),
                               rtol=1e-6, atol=1e-8)


def test_backward_and_grad_check_their_arguments():
    x = t64(3)
    y = x * 2
    with pytest.raises(RuntimeError, match="2 gradients for 1 tensors"):
        autograd.backward([y], [np.ones(3), np.ones(3)])
    with pytest.raises(RuntimeError, match="grad_outputs="):
        autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="element 1 of tensors does not require grad"):
        autograd.backward([y, db.tensor([1.0])], [np.ones(3), None])
    with pytest.raises(RuntimeError, match="element 0 of inputs does not require grad"):
        autograd.grad(y.sum(), db.tensor([1.0]))


class _PassThrough(Function):
    """Sends its gy on unchanged (as Add, Cast or an identity would)."""

    def forward(self, x):
        return x * 1

    def backward(self, gy):
        return gy


class _Drop(Function):
    """Claims its input but sends no gradient (a stop-gradient)."""

    def forward(self, x):
        return x * 1

    def backward(self, gy):
        return (None,)


class _Fresh(Function):
    """Sends a freshly computed gradient, kept on the node so a test can compare identities."""

    def forward(self, x):
        return x * 2

    def backward(self, gy):
        self.sent = gy * 2
        return (self.sent,)


def test_a_gradient_passed_through_to_a_leaf_is_copied_also_when_it_arrives_alone_after_a_none():
    x = t64(3)
    g = np.arange(3.0)
    (_PassThrough.apply(x) + _Drop.apply(x)).backward(g)  # x's two gradients: g itself, then None
    np.testing.assert_array_equal(x.grad, g)
    assert not np.shares_memory(x.grad, g)


def test_a_freshly_computed_leaf_gradient_is_kept_without_a_copy():
    x = t64(3)
    y = _Fresh.apply(x)
    node = y._ctx
    y.backward(np.ones(3))
    assert x.grad is node.sent
