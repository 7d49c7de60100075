"""Losses: every reduction against a NumPy formula, gradcheck in float64, cross_entropy's ignore_index
and (N, C, d...) inputs, BCE-with-logits' pos_weight and stability at huge logits."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
import distbp.nn.functional as F
from distbp import nn

REDUCTIONS = ["mean", "sum", "none"]


def _reduce(v, reduction):
    return v.mean() if reduction == "mean" else v.sum() if reduction == "sum" else v


def _np_log_softmax(z, axis=1):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_numpy_and_gradcheck(reduction):
    z = t64(5, 4)
    y = np.array([0, 3, 1, 1, 2])
    want = _reduce(-_np_log_softmax(z.data)[np.arange(5), y], reduction)
    np.testing.assert_allclose(F.cross_entropy(z, y, reduction).numpy(), want, rtol=1e-12)
    db.gradcheck(lambda z: F.cross_entropy(z, y, reduction), [z])


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    z = t64(3, 4)
    y = np.array([2, 0, 3])
    F.cross_entropy(z, y).backward()
    p = np.exp(_np_log_softmax(z.data))
    np.testing.assert_allclose(z.grad, (p - np.eye(4)[y]) / 3, rtol=1e-12)


def test_cross_entropy_hand_computed_value():
    # logits [0, ln 3] -> softmax [1/4, 3/4]; target 1 -> loss -ln(3/4)
    z = db.tensor([[0.0, np.log(3.0)]], dtype=np.float64)
    np.testing.assert_allclose(F.cross_entropy(z, [1]).item(), -np.log(0.75), rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_cross_entropy_ignore_index_drops_targets_from_sum_and_mean(reduction, ignore_index):
    z = t64(6, 4)
    y = np.array([0, ignore_index, 1, 3, ignore_index, 1])
    keep = y != ignore_index
    per = np.zeros(6)
    per[keep] = -_np_log_softmax(z.data)[np.arange(6)[keep], y[keep]]
    want = per.sum() / keep.sum() if reduction == "mean" else _reduce(per, reduction)
    got = F.cross_entropy(z, y, reduction, ignore_index=ignore_index)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    db.gradcheck(lambda z: F.cross_entropy(z, y, reduction, ignore_index=ignore_index), [z])
    z.grad = None
    F.cross_entropy(z, y, reduction, ignore_index=ignore_index).sum().backward()
    np.testing.assert_array_equal(z.grad[~keep], 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_with_spatial_dims_matches_per_position_formula(reduction):
    z = t64(2, 3, 4, 2)  # (N, C, d1, d2)
    y = np.random.default_rng(0).integers(0, 3, (2, 4, 2))
    y[0, 1, 1] = -100
    logp = _np_log_softmax(z.data, axis=1)
    n, d1, d2 = np.meshgrid(np.arange(2), np.arange(4), np.arange(2), indexing="ij")
    per = -logp[n, np.where(y < 0, 0, y), d1, d2] * (y >= 0)
    want = per.sum() / (y >= 0).sum() if reduction == "mean" else _reduce(per, reduction)
    got = F.cross_entropy(z, y, reduction)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    db.gradcheck(lambda z: F.cross_entropy(z, y, reduction), [z])


def test_cross_entropy_accepts_an_integer_tensor_target_and_keeps_float32():
    z = db.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True, dtype=np.float32)
    loss = F.cross_entropy(z, db.tensor(np.array([0, 1, 2, 1])))
    assert loss.dtype == np.float32
    loss.backward()
    assert z.grad.dtype == np.float32


def test_cross_entropy_rejects_float_targets_and_bad_reduction():
    z = t64(2, 3)
    with pytest.raises(TypeError, match="integer class targets"):
        F.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(z, [0, 1], reduction="avg")


def test_cross_entropy_rejects_targets_whose_shape_does_not_fit_the_logits():
    with pytest.raises(ValueError, match=r"logits \(3, 4\) and targets \(2,\)"):
        F.cross_entropy(t64(3, 4), np.array([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        F.cross_entropy(t64(4), np.array([0]))


def test_cross_entropy_rejects_negative_targets_other_than_ignore_index():
    with pytest.raises(ValueError, match="-1"):
        F.cross_entropy(t64(2, 3), np.array([0, -1]))
    with pytest.raises(ValueError, match="-1"):  # also when some target is ignored
        F.cross_entropy(t64(3, 3), np.array([-100, 0, -1]))


def test_cross_entropy_rejects_targets_past_the_last_class():
    with pytest.raises(ValueError, match=r"target 3 is out of range.*\[0, 3\)"):
        F.cross_entropy(t64(2, 3), np.array([0, 3]))
    with pytest.raises(ValueError, match="target 5 is out of range"):
        F.cross_entropy(t64(3, 3), np.array([-100, 5, 0]))


def test_cross_entropy_is_stable_at_huge_logits():
    z = db.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], requires_grad=True)
    loss = F.cross_entropy(z, [0, 2], reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.0, np.log(2.0)], atol=1e-6)
    loss.sum().backward()
    assert np.isfinite(z.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_and_l1_match_numpy_and_gradcheck_in_both_arguments(reduction):
    x, t = t64(3, 4, seed=1), t64(3, 4, seed=2)
    np.testing.assert_allclose(F.mse_loss(x, t, reduction).numpy(), _reduce((x.data - t.data) ** 2, reduction))
    np.testing.assert_allclose(F.l1_loss(x, t, reduction).numpy(), _reduce(np.abs(x.data - t.data), reduction))
    db.gradcheck(lambda x, t: F.mse_loss(x, t, reduction), [x, t])
    db.gradcheck(lambda x, t: F.l1_loss(x, t, reduction), [x, t])


def test_mse_accepts_an_ndarray_target():
    x = t64(3)
    t = np.array([1.0, 2.0, 3.0])
    F.mse_loss(x, t).backward()
    np.testing.assert_allclose(x.grad, 2 * (x.data - t) / 3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_matches_numpy_and_gradcheck(reduction):
    p = t64(3, 4, low=0.0)
    p.data = 0.1 + 0.8 * p.data  # probabilities away from 0 and 1
    t = t64(3, 4, low=0.0, seed=7)
    want = -(t.data * np.log(p.data) + (1 - t.data) * np.log(1 - p.data))
    np.testing.assert_allclose(F.binary_cross_entropy(p, t, reduction).numpy(), _reduce(want, reduction))
    db.gradcheck(lambda p, t: F.binary_cross_entropy(p, t, reduction), [p, t])


def test_bce_clamps_log_at_minus_100_like_torch():
    p = db.tensor([0.0, 1.0], dtype=np.float64)
    np.testing.assert_allclose(F.binary_cross_entropy(p, np.array([1.0, 0.0]), "none").numpy(), [100.0, 100.0])


def _np_bce_logits(x, t, pw=1.0):
    sig = 1 / (1 + np.exp(-x))
    return -(pw * t * np.log(sig) + (1 - t) * np.log(1 - sig))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_weight", [None, np.array([0.5, 1.0, 2.0, 3.0])])
def test_bce_with_logits_matches_formula_and_gradcheck(reduction, pos_weight):
    x, t = t64(3, 4, seed=1), t64(3, 4, low=0.0, seed=2)
    want = _np_bce_logits(x.data, t.data, 1.0 if pos_weight is None else pos_weight)
    got = F.binary_cross_entropy_with_logits(x, t, reduction, pos_weight=pos_weight)
    np.testing.assert_allclose(got.numpy(), _reduce(want, reduction), rtol=1e-10)
    db.gradcheck(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction, pos_weight=pos_weight), [x, t])


def test_bce_with_logits_is_stable_at_huge_logits():
    x = db.tensor([1000.0, -1000.0, 1000.0, -1000.0], requires_grad=True, dtype=np.float64)
    t = np.array([1.0, 0.0, 0.0, 1.0])
    for pw in (None, np.full(4, 3.0)):
        x.grad = None
        loss = F.binary_cross_entropy_with_logits(x, t, "none", pos_weight=pw)
        w = 1.0 if pw is None else 3.0
        np.testing.assert_allclose(loss.numpy(), [0.0, 0.0, 1000.0, 1000.0 * w])
        loss.sum().backward()
        np.testing.assert_allclose(x.grad, [0.0, 0.0, 1.0, -w])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_picks_negative_log_probabilities(reduction):
    lp = t64(4, 3)
    y = np.array([2, 0, 0, 1])
    np.testing.assert_allclose(F.nll_loss(lp, y, reduction).numpy(), _reduce(-lp.data[np.arange(4), y], reduction))
    db.gradcheck(lambda lp: F.nll_loss(lp, y, reduction), [lp])


def test_loss_modules_call_the_functional_forms():
    z, y = t64(4, 3), np.array([0, 2, 1, 1])
    np.testing.assert_allclose(nn.CrossEntropyLoss()(z, y).numpy(), F.cross_entropy(z, y).numpy())
    np.testing.assert_allclose(nn.CrossEntropyLoss(reduction="sum", ignore_index=1)(z, y).numpy(),
                               F.cross_entropy(z, y, "sum", ignore_index=1).numpy())
    x, t = t64(4, 3, seed=1), t64(4, 3, low=0.0, seed=2)
    np.testing.assert_allclose(nn.MSELoss("sum")(x, t).numpy(), F.mse_loss(x, t, "sum").numpy())
    np.testing.assert_allclose(nn.L1Loss()(x, t).numpy(), F.l1_loss(x, t).numpy())
    np.testing.assert_allclose(nn.BCEWithLogitsLoss(pos_weight=np.full(3, 2.0))(x, t).numpy(),
                               F.binary_cross_entropy_with_logits(x, t, pos_weight=np.full(3, 2.0)).numpy())


def test_losses_match_torch():
    torch = torch_or_skip()
    z, y = t64(5, 4), np.array([0, 3, -100, 1, 2])
    tz = torch.tensor(z.data, requires_grad=True)
    F.cross_entropy(z, y).backward()
    torch.nn.functional.cross_entropy(tz, torch.tensor(y)).backward()
    np.testing.assert_allclose(z.grad, tz.grad.numpy(), rtol=1e-10)
    x, t, pw = t64(3, 4, seed=1), t64(3, 4, low=0.0, seed=2), np.array([0.5, 1.0, 2.0, 3.0])
    tx = torch.tensor(x.data, requires_grad=True)
    a = F.binary_cross_entropy_with_logits(x, t, pos_weight=pw)
    b = torch.nn.functional.binary_cross_entropy_with_logits(tx, torch.tensor(t.data), pos_weight=torch.tensor(pw))
    a.backward()
    b.backward()
    np.testing.assert_allclose(a.item(), b.item(), rtol=1e-10)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("shape", [(5, 4), (2, 4, 3)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_backward_twice_through_a_retained_graph(shape, reduction):
    # backward turns forward's softmax into the gradient in place; a second walk must not reuse it
    z = t64(*shape)
    y = np.random.default_rng(1).integers(0, 4, size=(shape[0],) + shape[2:])
    loss = F.cross_entropy(z, y, reduction)
    loss = loss.sum() if reduction == "none" else loss
    loss.backward(retain_graph=True)
    once = z.grad.copy()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(z.grad, 3 * once, rtol=1e-12)
