"""Dropout: inverted scaling, off in eval, mask from the seeded RNG, gradient through a fixed mask."""
import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import nn
from distbp.nn import functional as F


def test_dropout_zeroes_about_p_and_scales_survivors_by_one_over_keep():
    x = db.ones(200, 100)
    y = nn.Dropout(0.3)(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 20000 draws: std of the mean is 0.003
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)


def test_dropout_is_identity_in_eval_and_for_p_zero():
    x = db.randn(4, 5)
    d = nn.Dropout(0.5).eval()
    assert d(x) is x
    assert F.dropout(x, 0.0) is x
    assert np.all(F.dropout(x, 1.0).numpy() == 0)


def test_dropout_mask_comes_from_the_seeded_rng():
    x = db.ones(3, 8)
    db.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    db.manual_seed(7)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    db.manual_seed(7)
    keep = np.random.default_rng(7).random((3, 8)) >= 0.5  # the same draw, done by hand
    np.testing.assert_array_equal(a != 0, keep)


def test_dropout_matches_gradcheck_with_a_fixed_mask_in_train_mode():
    d = nn.Dropout(0.4)

    def fn(x):
        db.manual_seed(3)  # same mask for every finite-difference evaluation
        return d(x)

    x = t64(4, 5)
    assert db.gradcheck(fn, [x])
    x.grad = None
    db.manual_seed(3)
    y = d(x)
    y.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad, y.data / x.data)  # gradient = mask / (1 - p)


def test_dropout_matches_gradcheck_in_eval_mode():
    d = nn.Dropout(0.4).eval()
    assert db.gradcheck(lambda x: d(x) * 2.0, [t64(3, 2)])


def test_dropout_rejects_probabilities_outside_zero_one():
    with pytest.raises(ValueError, match="1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="-0.1"):
        F.dropout(db.randn(2), -0.1)
