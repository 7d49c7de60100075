"""queue_callback: valid only while a backward runs, and owned by that backward call (a nested one
owns its own); DistributedDataParallel queues its finishing step from the backward it belongs to."""
import warnings

import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import autograd, nn
from distbp.distributed import DistributedDataParallel, SelfComm


def test_queue_callback_outside_backward_raises():
    with pytest.raises(RuntimeError, match="while a backward pass runs"):
        autograd.queue_callback(lambda: None)


def test_a_nested_backward_owns_its_callbacks_and_the_outer_keeps_its_own():
    events = []
    inner_x = t64(2)

    def hook(t):
        autograd.queue_callback(lambda: events.append("outer end"))
        inner_x.register_post_accumulate_grad_hook(
            lambda _: autograd.queue_callback(lambda: events.append("inner end")))
        (inner_x * 3).sum().backward()  # re-entrant: a backward started from a hook
        events.append("inner returned")

    x = t64(2)
    x.register_post_accumulate_grad_hook(hook)
    (x * 2).sum().backward()
    assert events == ["inner end", "inner returned", "outer end"]
    np.testing.assert_array_equal(inner_x.grad, np.full(2, 3.0))


def test_a_callback_may_queue_another_on_the_same_backward():
    events = []
    x = t64(2)
    x.register_post_accumulate_grad_hook(lambda t: autograd.queue_callback(
        lambda: (events.append("first"), autograd.queue_callback(lambda: events.append("second")))))
    x.sum().backward()
    assert events == ["first", "second"]
    with pytest.raises(RuntimeError):  # and once that backward is over, queueing is refused again
        autograd.queue_callback(lambda: None)


def test_ddp_finishes_in_the_backward_its_step_belongs_to_not_in_an_unrelated_one():
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    plain = nn.Linear(3, 2)
    wrapped = nn.Linear(3, 2)
    wrapped.load_state_dict(plain.state_dict())
    ddp = DistributedDataParallel(wrapped, SelfComm())
    x = db.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    out = ddp(x)  # forward arms the step ...
    w = t64(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... but an unrelated backward must not finish it (and warn)
        (w * w).sum().backward()
    np.testing.assert_allclose(w.grad, 2 * w.data)
    assert wrapped.weight.grad is None
    out.sum().backward()  # the step's own backward finishes it
    plain(x).sum().backward()
    np.testing.assert_allclose(wrapped.weight.grad, plain.weight.grad, rtol=1e-12)
    np.testing.assert_allclose(wrapped.bias.grad, plain.bias.grad, rtol=1e-12)
    ddp(x).sum().backward()  # and the next step works as usual (its gradients add to the first's)
    np.testing.assert_allclose(wrapped.weight.grad, 2 * plain.weight.grad, rtol=1e-12)
