"""Functions with several outputs: apply returns a tuple, backward runs once with one gradient per
output (zeros for an output nothing used, None for a non-differentiable one); the recurrent layers
and max pooling as multi-output Functions, checked by finite differences."""
import gc
import weakref

import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import ops
from distbp.autograd import Function
from distbp.ops.rnn import gru_layer, lstm_layer, rnn_layer


class _SplitScale(Function):
    """x (n,) -> (x[:k] * 2, x[k:] ** 2): two outputs; records what backward received."""

    received: list = []  # noqa: RUF012  (reset by each test)

    def forward(self, x, k=1):
        self.x, self.k = x, k
        return x[:k] * 2, x[k:] ** 2

    def backward(self, g_head, g_tail):
        type(self).received.append((g_head, g_tail))
        gx = np.concatenate([g_head * 2, g_tail * 2 * self.x[self.k:]])
        return (gx,)


def test_apply_returns_one_tensor_per_output_and_backward_runs_once_with_both_gradients():
    x = t64(4)
    head, tail = _SplitScale.apply(x, k=1)
    assert head.shape == (1,) and tail.shape == (3,) and head.requires_grad and tail.requires_grad
    _SplitScale.received = []
    (head.sum() * 3 + (tail * tail).sum()).backward()
    assert len(_SplitScale.received) == 1
    db.gradcheck(lambda x: db.cat(list(_SplitScale.apply(x, k=2))) * db.cat(list(_SplitScale.apply(x, k=1))), [x])


def test_an_output_nothing_used_receives_zeros_of_its_shape():
    x = t64(4)
    _SplitScale.received = []
    _, tail = _SplitScale.apply(x, k=1)
    tail.sum().backward()
    g_head, g_tail = _SplitScale.received[0]
    np.testing.assert_array_equal(g_head, np.zeros(1))
    np.testing.assert_array_equal(g_tail, np.ones(3))
    assert g_head.dtype == np.float64
    np.testing.assert_allclose(x.grad, np.concatenate([[0.0], 2 * x.data[1:]]))
    db.gradcheck(lambda x: _SplitScale.apply(x, k=3)[0], [t64(4)])
    db.gradcheck(lambda x: _SplitScale.apply(x, k=1)[1], [t64(4)])


def test_no_grad_and_inputs_without_grad_give_plain_tensors():
    with db.no_grad():
        outs = _SplitScale.apply(t64(3))
    assert all(not t.requires_grad and t.is_leaf for t in outs)
    assert not any(t.requires_grad for t in _SplitScale.apply(t64(3, requires_grad=False)))


class _MaxWithIndex(Function):
    """Row maxima and their (non-differentiable) indices."""

    def forward(self, x):
        self.idx = x.argmax(axis=1)
        self.shape = x.shape
        self.mark_non_differentiable(self.idx)
        return x.max(axis=1), self.idx

    def backward(self, g_values, g_idx):
        assert g_idx is None  # a non-differentiable output's slot is always None
        gx = np.zeros(self.shape)
        gx[np.arange(self.shape[0]), self.idx] = g_values
        return (gx,)


def test_non_differentiable_outputs_are_leaves_and_get_none():
    x = t64(3, 4)
    values, idx = _MaxWithIndex.apply(x)
    assert values.requires_grad and not idx.requires_grad and idx.is_leaf
    np.testing.assert_array_equal(idx.numpy(), x.data.argmax(1))
    db.gradcheck(lambda x: _MaxWithIndex.apply(x)[0], [x])


class _Probe:
    pass


class _SavesProbe(Function):
    def forward(self, x):
        self.probe = _Probe()
        return x * 1, x * 2

    def backward(self, ga, gb):
        return (ga + 2 * gb,)


def test_a_multi_output_node_is_freed_after_backward_and_a_second_backward_raises():
    x = t64(3)
    a, b = _SavesProbe.apply(x)
    probe = weakref.ref(a._ctx.parents[0]._ctx.fn.probe)
    loss = (a + b).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 6.0))
    gc.collect()
    assert probe() is None
    with pytest.raises(RuntimeError, match="second time"):
        b.sum().backward()


def test_max_pool_indices_are_a_non_differentiable_output():
    x = t64(2, 3, 6, 6)
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    assert y.requires_grad and not idx.requires_grad
    db.gradcheck(lambda x: ops.max_pool2d(x, 3, 2, 1, return_indices=True)[0], [x])
    y1, idx1 = ops.max_pool1d(t64(3, 7), 3, 2, 1, return_indices=True)  # unbatched (C, L)
    assert y1.shape == idx1.shape == (3, 4) and not idx1.requires_grad


def _recurrent_inputs(kind, bias=True):
    t, b, i, h = 4, 2, 3, 5
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    rng_seed = {"rnn": 1, "gru": 2, "lstm": 3}[kind]
    states = [t64(b, h, seed=rng_seed + 10 + k) for k in range(2 if kind == "lstm" else 1)]
    params = [t64(gates * h, i, seed=rng_seed + 20), t64(gates * h, h, seed=rng_seed + 21)]
    if bias:
        params += [t64(gates * h, seed=rng_seed + 22), t64(gates * h, seed=rng_seed + 23)]
    return [t64(t, b, i, seed=rng_seed)] + states + params


_LAYERS = {"rnn": rnn_layer, "gru": gru_layer, "lstm": lstm_layer}


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bias", [True, False])
def test_recurrent_layers_are_multi_output_and_each_output_matches_gradcheck(kind, bias):
    inputs = _recurrent_inputs(kind, bias)
    outs = _LAYERS[kind](*inputs)
    assert len(outs) == (3 if kind == "lstm" else 2)
    np.testing.assert_array_equal(outs[1].numpy(), outs[0].numpy()[-1])  # h_n is the last output step
    for k in range(len(outs)):  # each output alone: the others' gradients are zeros
        db.gradcheck(lambda *a, k=k: _LAYERS[kind](*a)[k], inputs)
    db.gradcheck(_LAYERS[kind], inputs)  # all outputs at once


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_bias_gradients_are_two_arrays(kind):
    inputs = _recurrent_inputs(kind)
    _LAYERS[kind](*inputs)[0].sum().backward()
    b_ih, b_hh = inputs[-2:]
    np.testing.assert_array_equal(b_ih.grad, b_hh.grad)
    assert not np.shares_memory(b_ih.grad, b_hh.grad)
