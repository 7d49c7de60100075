"""clip_grad_norm_ / clip_grad_value_ against NumPy norms of the concatenated gradients."""
import numpy as np
import pytest

import distbp as db
from distbp.nn import Parameter
from distbp.nn.utils import clip_grad_norm_, clip_grad_value_
from tests.conftest import torch_or_skip

G = [np.array([[3.0, -4.0], [1.0, 2.0]]), np.array([12.0, -0.5, 0.0])]


def params(grads=G):
    ps = [Parameter(np.zeros_like(g)) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = g.copy()
    return ps


def flat(ps):
    return np.concatenate([p.grad.ravel() for p in ps])


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
def test_clip_grad_norm_returns_numpy_norm_and_rescales_to_max_norm(norm_type):
    ps = params()
    want = np.linalg.norm(np.concatenate([g.ravel() for g in G]), ord=norm_type)
    total = clip_grad_norm_(ps, max_norm=2.0, norm_type=norm_type)
    assert np.ndim(total) == 0
    np.testing.assert_allclose(float(total), want, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(flat(ps), ord=norm_type), 2.0, rtol=1e-6)
    # same direction: every gradient scaled by the one coefficient 2/(norm + 1e-6)
    np.testing.assert_allclose(flat(ps), np.concatenate([g.ravel() for g in G]) * 2.0 / (want + 1e-6), rtol=1e-12)


def test_clip_grad_norm_hand_computed_two_norm():
    ps = params([np.array([3.0, 4.0])])  # norm 5
    assert float(clip_grad_norm_(ps, 1.0)) == pytest.approx(5.0)
    np.testing.assert_allclose(ps[0].grad, [0.6, 0.8], rtol=1e-6)


def test_clip_grad_norm_is_a_no_op_under_max_norm():
    ps = params()
    total = clip_grad_norm_(ps, max_norm=100.0)
    assert float(total) == pytest.approx(np.sqrt(9 + 16 + 1 + 4 + 144 + 0.25))
    for p, g in zip(ps, G):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_skips_params_without_grad_and_accepts_a_single_tensor():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    a.grad = np.array([0.0, 10.0])
    assert float(clip_grad_norm_([a, b], 5.0)) == pytest.approx(10.0)
    np.testing.assert_allclose(a.grad, [0.0, 5.0], rtol=1e-6)
    assert b.grad is None
    assert float(clip_grad_norm_(a, 1.0)) == pytest.approx(5.0, rel=1e-6)
    assert float(clip_grad_norm_([b], 1.0)) == 0.0


def test_clip_grad_norm_on_a_module_after_backward():
    model = db.nn.Linear(3, 2)
    model(db.tensor(np.ones((4, 3), np.float32))).sum().backward()
    want = np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in model.parameters()))
    total = clip_grad_norm_(model.parameters(), 0.5)
    assert total.dtype == np.float32
    np.testing.assert_allclose(float(total), want, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in model.parameters())),
                               0.5, rtol=1e-5)


def test_clip_grad_norm_nonfinite():
    ps = params([np.array([1.0, np.inf])])
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="Invalid max_norm: -1.0"):
        clip_grad_norm_(ps, -1.0)


def test_clip_grad_value_clamps_in_place():
    ps = params()
    clip_grad_value_(ps, 2.5)
    np.testing.assert_array_equal(ps[0].grad, [[2.5, -2.5], [1.0, 2.0]])
    np.testing.assert_array_equal(ps[1].grad, [2.5, -0.5, 0.0])
    with pytest.raises(ValueError, match="Invalid clip_value: -1.0"):
        clip_grad_value_(ps, -1)


@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_matches_torch_clip_grad_norm(norm_type):
    torch = torch_or_skip()
    ps = params()
    total = clip_grad_norm_(ps, 2.0, norm_type)
    tps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in G]
    for p, g in zip(tps, G):
        p.grad = torch.tensor(g)
    t_total = torch.nn.utils.clip_grad_norm_(tps, 2.0, norm_type)
    np.testing.assert_allclose(float(total), float(t_total), rtol=1e-12)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)
