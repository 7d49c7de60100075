"""Embedding: lookup equals indexing, repeated indices sum their gradients, padding_idx."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import nn
from distbp.nn import functional as F


def test_embedding_output_is_rows_of_the_weight():
    e = nn.Embedding(5, 3)
    idx = np.array([[0, 4], [2, 2]])
    np.testing.assert_array_equal(e(idx).numpy(), e.weight.data[idx])
    assert e(db.tensor(idx)).shape == (2, 2, 3)


def test_embedding_gradient_sums_repeated_indices_by_hand():
    e = nn.Embedding(4, 2)
    out = e(np.array([1, 3, 1, 1]))
    out.backward(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], dtype=np.float32))
    np.testing.assert_array_equal(e.weight.grad, [[0, 0], [13, 16], [0, 0], [3, 4]])


def test_embedding_matches_gradcheck():
    w = t64(6, 3)
    idx = np.array([[0, 5, 5], [2, 0, 1]])
    assert db.gradcheck(lambda w: F.embedding(idx, w), [w])


def test_padding_idx_row_starts_at_zero_and_gets_no_gradient():
    e = nn.Embedding(4, 2, padding_idx=2)
    np.testing.assert_array_equal(e.weight.data[2], [0, 0])
    e(np.array([2, 1, 2])).sum().backward()
    np.testing.assert_array_equal(e.weight.grad[2], [0, 0])
    np.testing.assert_array_equal(e.weight.grad[1], [1, 1])


def test_embedding_rejects_bad_indices():
    e = nn.Embedding(4, 2)
    with pytest.raises(IndexError, match="4 rows"):
        e(np.array([0, 4]))
    with pytest.raises(TypeError, match="integers"):
        e(np.array([0.5]))


def test_embedding_matches_torch():
    torch = torch_or_skip()
    te = torch.nn.Embedding(5, 3, padding_idx=1)
    e = nn.Embedding(5, 3, padding_idx=1)
    e.load_state_dict({k: v.detach().numpy() for k, v in te.state_dict().items()})
    idx = np.array([[0, 1, 4], [4, 4, 2]])
    yt, yd = te(torch.tensor(idx)), e(idx)
    (yt ** 2).sum().backward()
    (yd * yd).sum().backward()
    np.testing.assert_allclose(yd.numpy(), yt.detach().numpy())
    np.testing.assert_allclose(e.weight.grad, te.weight.grad.numpy(), rtol=1e-6)
