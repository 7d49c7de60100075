"""Shape ops: reshape, transpose/permute, indexing (basic and advanced, repeated indices), cat, stack,
pad, flatten, squeeze/unsqueeze — forward against NumPy, backward by gradcheck."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db


def test_reshape_and_view_match_numpy_and_gradcheck():
    x = t64(2, 3, 4)
    np.testing.assert_array_equal(x.reshape(4, 6).numpy(), x.data.reshape(4, 6))
    np.testing.assert_array_equal(x.view((3, -1)).numpy(), x.data.reshape(3, -1))
    db.gradcheck(lambda x: x.reshape(6, 4) * np.arange(4.0), [x])


@pytest.mark.parametrize("dims", [(0, 1), (1, 2), (-1, 0)])
def test_transpose_swaps_two_dims_and_gradcheck(dims):
    x = t64(2, 3, 4)
    np.testing.assert_array_equal(x.transpose(*dims).numpy(), np.swapaxes(x.data, *dims))
    db.gradcheck(lambda x: x.transpose(*dims), [x])


def test_permute_and_T_match_numpy_and_gradcheck():
    x = t64(2, 3, 4)
    np.testing.assert_array_equal(x.permute(2, 0, 1).numpy(), x.data.transpose(2, 0, 1))
    np.testing.assert_array_equal(x.permute((1, -1, 0)).numpy(), x.data.transpose(1, 2, 0))
    np.testing.assert_array_equal(x.T.numpy(), x.data.T)
    db.gradcheck(lambda x: x.permute(2, 0, 1), [x])
    db.gradcheck(lambda x: x.T, [x])


@pytest.mark.parametrize("index", [
    1, -1, slice(1, 3), (slice(None), 2), (Ellipsis, 1), (None, 0), (slice(None, None, 2), slice(1, None)),
    (0, slice(None), -1),
])
def test_basic_indexing_matches_numpy_and_gradcheck(index):
    x = t64(4, 3, 5)
    np.testing.assert_array_equal(x[index].numpy(), x.data[index])
    db.gradcheck(lambda x: x[index], [x])


@pytest.mark.parametrize("index", [
    np.array([0, 2, 2, 0, 3]),
    (np.array([0, 1, 1]), np.array([2, 2, 2])),
    (slice(None), np.array([1, 1, 0])),
    np.array([True, False, True, True]),
    [3, 3, 3],
])
def test_advanced_indexing_with_repeated_indices_sums_gradients(index):
    x = t64(4, 3)
    np.testing.assert_array_equal(x[index].numpy(), x.data[index])
    x[index].sum().backward()
    want = np.zeros((4, 3))
    np.add.at(want, index if not isinstance(index, list) else np.array(index), 1.0)
    np.testing.assert_array_equal(x.grad, want)
    db.gradcheck(lambda x: x[index], [t64(4, 3)])


def test_indexing_with_an_integer_tensor():
    x = t64(5, 2)
    idx = db.tensor(np.array([4, 0, 4]))
    np.testing.assert_array_equal(x[idx].numpy(), x.data[[4, 0, 4]])
    x[idx].sum().backward()
    np.testing.assert_array_equal(x.grad[:, 0], [1, 0, 0, 0, 2])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_matches_numpy_and_gradcheck(dim):
    shapes = {0: [(1, 3), (2, 3), (3, 3)], 1: [(2, 1), (2, 4), (2, 2)], -1: [(2, 2), (2, 3), (2, 1)]}[dim]
    xs = [t64(*s, seed=i) for i, s in enumerate(shapes)]
    np.testing.assert_array_equal(db.cat(xs, dim).numpy(), np.concatenate([x.data for x in xs], dim))
    db.gradcheck(lambda *xs: db.cat(xs, dim), xs)


def test_cat_gives_gradient_only_to_inputs_that_require_it():
    a, b = t64(2, 2), t64(2, 2, requires_grad=False)
    db.cat([a, b], 0).sum().backward()
    np.testing.assert_array_equal(a.grad, np.ones((2, 2)))
    assert b.grad is None


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack_matches_numpy_and_gradcheck(dim):
    xs = [t64(2, 3, seed=i) for i in range(3)]
    np.testing.assert_array_equal(db.stack(xs, dim).numpy(), np.stack([x.data for x in xs], dim))
    db.gradcheck(lambda *xs: db.stack(xs, dim), xs)


@pytest.mark.parametrize("pad", [(1, 2), (0, 1, 2, 0), (1, 1, 1, 1, 1, 1)])
def test_pad_matches_numpy_torch_order_and_gradcheck(pad):
    x = t64(2, 3, 4)
    widths = [(0, 0)] * 3
    for i in range(len(pad) // 2):  # torch order: the LAST dim first
        widths[2 - i] = (pad[2 * i], pad[2 * i + 1])
    np.testing.assert_array_equal(db.pad(x, pad, value=0.5).numpy(),
                                  np.pad(x.data, widths, constant_values=0.5))
    db.gradcheck(lambda x: db.pad(x, pad), [x])


def test_pad_rejects_an_odd_pad_list():
    with pytest.raises(ValueError, match="pairs"):
        db.pad(t64(2, 3), (1, 2, 3))


def test_flatten_squeeze_unsqueeze_shapes_and_gradients():
    x = t64(2, 1, 3, 1)
    assert x.flatten().shape == (6,)
    assert x.flatten(1).shape == (2, 3)
    assert x.flatten(0, 2).shape == (6, 1)
    assert x.squeeze().shape == (2, 3)
    assert x.squeeze(1).shape == (2, 3, 1)
    assert x.squeeze(0).shape == (2, 1, 3, 1)  # a dim that is not 1 stays
    assert x.unsqueeze(0).shape == (1, 2, 1, 3, 1)
    assert x.unsqueeze(-1).shape == (2, 1, 3, 1, 1)
    db.gradcheck(lambda x: x.flatten(1).unsqueeze(0).squeeze() * 2, [x])


def test_flatten_with_nothing_to_flatten_returns_the_input_and_0d_becomes_1d_as_in_torch():
    x = t64(4, 3)
    assert x.flatten(1) is x and x.flatten(0, 0) is x
    s = db.tensor(2.0, requires_grad=True, dtype="float64")
    assert s.flatten().shape == (1,)
    db.gradcheck(lambda s: s.flatten() * 3, [s])
    torch = torch_or_skip()
    assert tuple(torch.ones(()).flatten().shape) == s.flatten().shape
    xt = torch.ones(4, 3)
    assert xt.flatten(1) is xt


def test_getitem_of_a_view_then_inplace_data_change_does_not_touch_the_gradient():
    x = t64(3, 3)
    y = x[0:2]
    y.sum().backward()
    g = x.grad.copy()
    x.data[...] = 0
    np.testing.assert_array_equal(x.grad, g)


def test_len_and_shape_properties():
    x = db.tensor(np.zeros((4, 2)))
    assert len(x) == 4 and x.shape == (4, 2) and x.ndim == 2 and x.numel() == 8 and x.size(1) == 2
