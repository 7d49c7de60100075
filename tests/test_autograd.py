"""Tensor and the backward engine: accumulation, no_grad, graph freeing and retain_graph, hooks and
their order, queue_callback, retain_grad, detach, gradient aliasing, custom Functions, dtypes."""
import gc
import weakref

import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import autograd, nn
from distbp.autograd import Function


def test_define_by_run_follows_python_control_flow():
    x = db.tensor([2.0, -3.0], requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(3):  # y = x^8 if sum > 0 else x^3 * ... ; the graph is whatever ran
        y = y * y if y.sum().item() > 0 else y * x
    y.sum().backward()
    # sum(x) = -1 < 0 -> y = x*x = x^2 (sum 13 > 0) -> x^4 -> x^8
    np.testing.assert_allclose(x.grad, 8 * x.data ** 7)


def test_grads_accumulate_over_two_backward_calls():
    x = t64(3)
    (x * 2).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 + 2 * x.data)


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = t64(3)
    with pytest.raises(RuntimeError, match="gradient="):
        (x * 2).backward()
    g = np.array([1.0, 2.0, 3.0])
    (x * 2).backward(g)
    np.testing.assert_allclose(x.grad, 2 * g)


def test_backward_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        db.tensor([1.0]).sum().backward()


def test_backward_on_a_leaf_sets_its_gradient_to_the_seed():
    x = t64(3)
    g = np.array([1.0, 2.0, 3.0])
    x.backward(g)
    np.testing.assert_array_equal(x.grad, g)
    g[0] = 100  # the leaf owns its gradient: changing the caller's array leaves it alone
    assert x.grad[0] == 1.0


def test_no_grad_records_nothing_and_restores_the_mode():
    x = t64(3)
    with db.no_grad():
        y = x * 2 + 1
        assert not db.is_grad_enabled()
        with db.enable_grad():
            z = x * 3
    assert db.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._ctx is None
    assert z.requires_grad and not z.is_leaf


def test_no_grad_works_as_a_decorator():
    @db.no_grad()
    def f(x):
        return x * x
    assert not f(t64(2)).requires_grad
    assert db.is_grad_enabled()


def test_second_backward_raises_and_retain_graph_allows_it():
    x = t64(3)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_backward_through_a_freed_shared_subgraph_raises():
    x = t64(3)
    h = x.exp()
    a, b = h.sum(), (h * 2).sum()
    a.backward()
    with pytest.raises(RuntimeError, match="second time"):
        b.backward()


class _Probe:
    """An object a Function saves; its weakref shows when the graph lets go of it."""


class _SavesProbe(Function):
    def forward(self, x):
        self.probe = _Probe()
        return x * 1

    def backward(self, gy):
        return (gy,)


def test_graph_is_freed_after_backward_even_while_outputs_are_alive():
    x = t64(3)
    y = _SavesProbe.apply(x)
    ref = weakref.ref(y._ctx.probe)
    z = y.sum()
    z.backward()
    gc.collect()
    assert ref() is None  # z and y are still alive, the saved state is gone


def test_retain_graph_keeps_saved_state():
    x = t64(3)
    y = _SavesProbe.apply(x)
    ref = weakref.ref(y._ctx.probe)
    y.sum().backward(retain_graph=True)
    gc.collect()
    assert ref() is not None


class _CountingSquare(Function):
    calls = 0

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        type(self).calls += 1
        return (2 * self.x * gy,)


def test_a_node_used_twice_runs_its_backward_once_with_the_summed_gradient():
    _CountingSquare.calls = 0
    x = t64(4)
    h = _CountingSquare.apply(x)          # h feeds two branches (a diamond)
    out = (h.exp() + h * 3).sum()
    out.backward()
    assert _CountingSquare.calls == 1
    np.testing.assert_allclose(x.grad, 2 * x.data * (np.exp(x.data ** 2) + 3))


def test_custom_function_sees_needs_input_grad():
    seen = []

    class Mul(Function):
        def forward(self, a, b):
            self.a, self.b = a, b
            return a * b

        def backward(self, gy):
            seen.append(tuple(self.needs_input_grad))
            na, nb = self.needs_input_grad
            return (gy * self.b if na else None, gy * self.a if nb else None)

    a, b = t64(3), t64(3, requires_grad=False)
    Mul.apply(a, b).sum().backward()
    assert seen == [(True, False)]
    np.testing.assert_allclose(a.grad, b.data)
    db.gradcheck(lambda a, b: Mul.apply(a, b), [t64(3), t64(3, seed=9)])


def test_a_wrong_shaped_gradient_from_an_op_is_reported():
    class Bad(Function):
        def forward(self, x):
            return x.sum()

        def backward(self, gy):
            return (np.ones(7),)

    with pytest.raises(RuntimeError, match="does not match tensor shape"):
        Bad.apply(t64(3)).backward()


def test_leaf_gradients_never_alias_each_other():
    a, b = t64(3), t64(3)
    (a + b).sum().backward()
    assert a.grad is not b.grad and not np.shares_memory(a.grad, b.grad)
    a.grad[...] = 0  # an in-place change (zero_, allreduce) on one leaf must not reach the other
    np.testing.assert_array_equal(b.grad, np.ones(3))


def test_leaf_gradient_does_not_alias_the_callers_gradient():
    a = t64(3)
    g = np.ones(3)
    (a + 0).backward(g)
    assert not np.shares_memory(a.grad, g)


def test_implicit_seed_is_never_handed_to_a_leaf_or_changed():
    a, b = db.tensor(1.0, requires_grad=True), db.tensor(1.0, requires_grad=True)
    (a + b).backward()  # Add hands the implicit gradient 1 to both leaves
    a.grad += 5  # must reach neither b nor the next backward's seed
    assert b.grad == 1 and a.grad.flags.writeable
    c = db.tensor(2.0, requires_grad=True)
    c.backward()  # backward on a leaf: its gradient is the seed itself
    c.grad *= 3
    d = db.tensor(7.0, requires_grad=True)
    (d * 1).backward()
    assert d.grad == 1 and c.grad == 3


def test_a_gradient_a_hook_moved_away_does_not_make_a_later_array_a_copy():
    """DDP's hook moves a .grad into its bucket; the array it dropped may be freed and its address
    reused by the next gradient, which must then be kept as is, not copied (nor aliased)."""
    ws = [t64(4, 4) for _ in range(3)]
    for w in ws:
        w.register_post_accumulate_grad_hook(lambda t: setattr(t, "grad", t.grad * 1.0))
    h = db.tensor(np.ones((2, 4)))
    for w in ws:
        h = h @ w
    h.sum().backward()
    for w in ws:
        assert w.grad.base is None
    assert not np.shares_memory(ws[0].grad, ws[1].grad)


def test_leaf_gradient_from_a_view_is_an_owned_array():
    x = t64(3, 4)
    x.reshape(12).backward(np.arange(12.0))
    assert x.grad.base is None and x.grad.flags.writeable
    np.testing.assert_array_equal(x.grad, np.arange(12.0).reshape(3, 4))


def test_post_accumulate_hook_fires_once_with_the_final_gradient_of_a_leaf_used_twice():
    x = t64(3)
    calls = []
    x.register_post_accumulate_grad_hook(lambda t: calls.append(t.grad.copy()))
    ((x * 2).sum() + (x * x).sum()).backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 2 + 2 * x.data)


def test_post_accumulate_hook_sees_the_accumulated_grad_on_a_second_backward():
    x = t64(3)
    seen = []
    x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    (x * 2).sum().backward()
    (x * 2).sum().backward()
    np.testing.assert_allclose(seen[1], np.full(3, 4.0))


def test_hook_handle_remove_stops_the_hook():
    x = t64(3)
    calls = []
    handle = x.register_post_accumulate_grad_hook(lambda t: calls.append(1))
    handle.remove()
    x.sum().backward()
    assert calls == []


def test_post_accumulate_hook_only_on_leaves():
    with pytest.raises(RuntimeError, match="leaf"):
        (t64(3) * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_mlp_hooks_fire_last_layer_first_and_before_backward_ends():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))
    events = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: events.append(name))
    x = db.tensor(np.random.default_rng(0).standard_normal((2, 4)))
    loss = db.nn.functional.cross_entropy(model(x), [0, 2])
    queued = []
    model[4].bias.register_post_accumulate_grad_hook(  # the first hook to fire queues the callback
        lambda t: queued or queued.append(autograd.queue_callback(lambda: events.append("end"))))
    loss.backward()
    assert sorted(events[:-1]) == sorted(n for n, _ in model.named_parameters())
    assert events[-1] == "end"  # every hook fired before the pass finished
    layer_order = [e.split(".")[0] for e in events[:-1]]
    assert layer_order.index("4") < layer_order.index("2") < layer_order.index("0")


def test_hook_sees_its_own_grad_final_while_earlier_layers_are_still_pending():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))
    first_w = model[0].weight
    pending = []
    model[2].weight.register_post_accumulate_grad_hook(lambda t: pending.append(first_w.grad is None))
    model(db.tensor(np.ones((2, 3)))).sum().backward()
    assert pending == [True]


def test_queue_callback_runs_once_at_the_end_of_its_backward_even_if_that_fails():
    ran = []
    x = t64(2)
    x.register_post_accumulate_grad_hook(lambda t: [autograd.queue_callback(lambda n=n: ran.append(n))
                                                    for n in ("a", "b")])
    x.sum().backward()
    assert ran == ["a", "b"]
    t64(2).sum().backward()  # another backward (x not in it) runs nothing again
    assert ran == ["a", "b"]

    class Boom(Function):
        def forward(self, x):
            return x.sum()

        def backward(self, gy):
            autograd.queue_callback(lambda: ran.append("c"))  # a Function's backward may queue too
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        Boom.apply(t64(2)).backward()
    assert ran[-1] == "c"


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = t64(3)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)
    np.testing.assert_allclose(x.grad, 3 * 2 * h.data)
    assert (x * 2).grad is None


def test_detach_shares_data_but_cuts_the_graph():
    x = t64(3)
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    y = x * d
    y.sum().backward()
    np.testing.assert_allclose(x.grad, d.data)
    assert np.shares_memory(x.detach().data, x.data)


def test_requires_grad_only_on_floating_tensors():
    with pytest.raises(TypeError, match="floating point"):
        db.tensor([1, 2], requires_grad=True)


def test_requires_grad_flag_propagates():
    a, b = t64(2), t64(2, requires_grad=False)
    assert (a * b).requires_grad and not (b * b).requires_grad


def test_a_long_chain_does_not_hit_the_recursion_limit():
    x = t64(1)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 3000])


def test_float32_default_and_float64_on_request():
    assert db.tensor([1.0, 2.0]).dtype == np.float32
    assert db.tensor(np.array([1.0])).dtype == np.float64  # an array keeps its dtype
    assert db.tensor([1.0], dtype=np.float64).dtype == np.float64
    db.set_default_dtype(np.float64)
    assert db.tensor([1.0]).dtype == np.float64
    assert db.zeros(2).dtype == np.float64
    db.set_default_dtype(np.float32)
    assert db.randn(2, 3).dtype == np.float32


def test_float32_graph_gives_float32_gradients():
    x = db.tensor([[1.0, -2.0]], requires_grad=True)
    w = db.tensor([[0.5], [0.25]], requires_grad=True)
    ((x @ w).sigmoid() * 2).mean().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_cast_to_float64_keeps_the_graph_and_returns_a_float32_gradient():
    x = db.tensor([1.0, 2.0], requires_grad=True)
    y = x.double()
    assert y.dtype == np.float64 and not y.is_leaf
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


def test_item_float_and_bool_of_one_element_tensors():
    t = db.tensor([[3.5]])
    assert t.item() == 3.5 and float(t) == 3.5 and bool(t)
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(db.tensor([1.0, 2.0]))


def test_repr_shows_values_and_grad_flag():
    assert repr(db.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"


def test_backward_rejects_a_gradient_of_the_wrong_shape():
    with pytest.raises(RuntimeError, match=r"shape \(3,\).*shape \(2,\)"):
        (t64(2) * 2).backward(np.ones(3))


def test_backward_accepts_a_number_as_the_gradient_of_a_scalar():
    x = t64(2)
    (x * 2).sum().backward(3.0)
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


def test_a_branch_that_returns_no_gradient_still_lets_the_leaf_finish():
    class NoGrad(Function):  # claims its input but returns None for it (like a stop-gradient)
        def forward(self, x):
            return x * 1

        def backward(self, gy):
            return (None,)

    x = t64(3)
    fired = []
    x.register_post_accumulate_grad_hook(lambda t: fired.append(t.grad.copy()))
    (NoGrad.apply(x.exp()).sum() + (x * 2).sum()).backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))
    assert len(fired) == 1


def test_backward_may_return_a_bare_array_for_a_one_input_op():
    class Double(Function):
        def forward(self, x):
            return 2 * x

        def backward(self, gy):
            return 2 * gy

    x = t64(3)
    Double.apply(x).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))


def test_backward_returning_too_few_gradients_is_reported():
    class Short(Function):
        def forward(self, a, b):
            return a + b

        def backward(self, gy):
            return (gy,)

    with pytest.raises(RuntimeError, match="Short.backward returned 1 gradients for 2 inputs"):
        Short.apply(t64(2), t64(2)).sum().backward()


def test_grad_of_a_0d_leaf_is_an_array_not_a_numpy_scalar():
    w = db.tensor(np.float64(2.0), requires_grad=True)
    (w * w).backward()  # numpy turns 0-d products into scalars along the way
    assert isinstance(w.grad, np.ndarray) and w.grad.shape == () and w.grad == 4.0
    w.grad[...] = 0  # writable in place, as optimizers and allreduce need


def test_a_0d_result_is_held_as_an_ndarray():
    x = db.tensor(np.arange(3.0), requires_grad=True)
    loss = (x * x).sum()
    assert isinstance(loss.data, np.ndarray) and loss.shape == ()
    assert isinstance(db.nn.functional.cross_entropy(db.tensor(np.zeros((2, 3))), np.array([0, 1])).data,
                      np.ndarray)
