"""defer_weight_grads: Linear's parameter gradients stashed in backward and computed at the flush."""
import numpy
import pytest

import distbp as db
from distbp import autograd, nn
from distbp.autograd import Tensor, WeightGradStash, defer_weight_grads
from distbp.gradcheck import numerical_grad
from distbp.ops import linalg


def _mlp(bias=True):
    db.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7, bias=bias, dtype=numpy.float64), nn.Tanh(),
                         nn.Linear(7, 3, bias=bias, dtype=numpy.float64))


def _micro_batches(shape=(9, 5)):
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal(shape)
    return x, [slice(0, 4), slice(4, 5), slice(5, shape[0])]  # uneven, one of a single row


def _loss(model, x, rows):
    out = model(Tensor(x[rows]))
    return (out * out).sum() * 0.5


def _grads(model):
    return [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(9, 5), (9, 2, 5)], ids=["rows", "batch-dims"])
def test_deferred_gradients_equal_finite_differences_and_the_plain_backward(bias, shape):
    model = _mlp(bias)
    x, parts = _micro_batches(shape)
    for rows in parts:  # the plain path: each backward adds its gradients
        _loss(model, x, rows).backward()
    plain = _grads(model)
    model.zero_grad()
    with defer_weight_grads():
        for rows in parts:
            _loss(model, x, rows).backward()
    deferred = _grads(model)
    params = list(model.parameters())

    def total(*ps):  # the summed loss of the micro-batches as a function of the parameters
        return sum((_loss(model, x, rows) for rows in parts), Tensor(numpy.zeros(())))

    for i, (p, got, ref) in enumerate(zip(params, deferred, plain)):
        numpy.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        numpy.testing.assert_allclose(got, numerical_grad(total, params, i), rtol=1e-6, atol=1e-7)


def test_gradients_wait_for_the_flush_and_hooks_fire_there_once():
    model = _mlp()
    x, parts = _micro_batches()
    fired = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: fired.append(name))
    inputs = [Tensor(x[rows], requires_grad=True) for rows in parts]
    stash = WeightGradStash()
    with defer_weight_grads(stash):
        for xi in inputs:
            (model(xi) ** 2).sum().backward()
    assert all(p.grad is None for p in model.parameters()) and fired == []
    assert all(xi.grad is not None for xi in inputs)  # input gradients are computed in backward
    assert len(stash) == 4 and stash.nbytes > 0
    stash.flush()
    assert sorted(fired) == sorted(n for n, _ in model.named_parameters())
    assert len(stash) == 0 and all(p.grad is not None for p in model.parameters())


def test_one_product_per_weight_for_all_micro_batches(monkeypatch):
    calls = []
    real = linalg._weight_grad
    monkeypatch.setattr(linalg, "_weight_grad", lambda gy, x: calls.append(len(x)) or real(gy, x))
    model = _mlp()
    x, parts = _micro_batches()
    with defer_weight_grads():
        for rows in parts:
            _loss(model, x, rows).backward()
    assert calls == [9, 9]  # both weights, each from the 9 rows of the three micro-batches at once


def test_flush_adds_into_an_existing_grad():
    model = _mlp()
    x, parts = _micro_batches()
    _loss(model, x, parts[0]).backward()
    with defer_weight_grads():
        for rows in parts[1:]:
            _loss(model, x, rows).backward()
    deferred = _grads(model)
    model.zero_grad()
    for rows in parts:
        _loss(model, x, rows).backward()
    for got, ref in zip(deferred, _grads(model)):
        numpy.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_stashes_merge_in_order():
    model = _mlp()
    x, parts = _micro_batches()
    stashes = [WeightGradStash() for _ in parts]
    for stash, rows in zip(stashes, parts):
        with defer_weight_grads(stash):
            _loss(model, x, rows).backward()
    merged = WeightGradStash()
    for stash in stashes:
        merged.extend(stash)
    assert all(len(s) == 0 for s in stashes) and len(merged) == 4
    merged.flush()
    deferred = _grads(model)
    model.zero_grad()
    _loss(model, x, slice(None)).backward()
    for got, ref in zip(deferred, _grads(model)):
        numpy.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_a_weight_computed_by_other_ops_is_not_deferred():
    rng = numpy.random.default_rng(2)
    w = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    x = Tensor(rng.standard_normal((6, 4)))
    with defer_weight_grads() as stash:
        (linalg.linear(x, w * 2.0) ** 2).sum().backward()
        assert len(stash) == 0 and w.grad is not None  # its gradient went on through w * 2 at once
    y = x.data @ (2 * w.data).T
    numpy.testing.assert_allclose(w.grad, 2 * (2 * y).T @ x.data, rtol=1e-12)


def test_autograd_grad_computes_everything_now():
    model = _mlp()
    x, _ = _micro_batches()
    w = model[0].weight
    with defer_weight_grads() as stash:
        (g,) = autograd.grad(_loss(model, x, slice(None)), [w])
        assert len(stash) == 0 and w.grad is None
    model.zero_grad()
    _loss(model, x, slice(None)).backward()
    numpy.testing.assert_allclose(g.data, w.grad, rtol=0, atol=1e-12)


def test_nothing_is_deferred_outside_the_block():
    model = _mlp()
    x, _ = _micro_batches()
    with defer_weight_grads():
        pass
    _loss(model, x, slice(None)).backward()
    assert all(p.grad is not None for p in model.parameters())
