"""Learning-rate schedules against hand-computed values and their closed forms (and torch's, if installed)."""
import math

import numpy as np
import pytest

from distbp.nn import Parameter
from distbp.optim import SGD
from distbp.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LinearLR, MultiStepLR, StepLR
from tests.conftest import torch_or_skip


def opt(lr=1.0, groups=1):
    return SGD([{"params": [Parameter(np.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)], lr=lr)


def lrs(sched, epochs):
    """The first group's lr at epoch 0 (after construction) and after each of `epochs` step()s."""
    out = [sched.get_last_lr()[0]]
    for _ in range(epochs):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def test_steplr_hand_computed():
    np.testing.assert_allclose(lrs(StepLR(opt(), step_size=2, gamma=0.5), 6), [1, 1, .5, .5, .25, .25, .125])


def test_multisteplr_hand_computed_and_repeated_milestone_counts_twice():
    np.testing.assert_allclose(lrs(MultiStepLR(opt(), [2, 5], gamma=0.1), 6), [1, 1, .1, .1, .1, .01, .01])
    np.testing.assert_allclose(lrs(MultiStepLR(opt(), [1, 1], gamma=0.5), 2), [1, .25, .25])


def test_cosine_annealing_closed_form():
    t_max, eta_min = 4, 0.1
    got = lrs(CosineAnnealingLR(opt(), T_max=t_max, eta_min=eta_min), 8)
    # hand values: epoch 0 -> 1, 2 -> midpoint 0.55, 4 -> eta_min, then back up (period 2*T_max)
    assert got[0] == pytest.approx(1.0) and got[2] == pytest.approx(0.55) and got[4] == pytest.approx(0.1)
    assert got[8] == pytest.approx(1.0)
    want = [eta_min + (1 - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2 for e in range(9)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_linearlr_warmup_hand_computed():
    # factor 0.25 -> 1 over 4 steps: 0.25, 0.4375, 0.625, 0.8125, 1, then held
    np.testing.assert_allclose(lrs(LinearLR(opt(0.4), start_factor=0.25, total_iters=4), 5),
                               0.4 * np.array([.25, .4375, .625, .8125, 1, 1]))


def test_lambdalr_one_function_per_group():
    o = opt(1.0, groups=2)
    sched = LambdaLR(o, [lambda e: 0.5 ** e, lambda e: 1.0 / (e + 1)])
    for _ in range(3):
        sched.step()
    np.testing.assert_allclose(sched.get_last_lr(), [0.125, 2.0 / 4])
    np.testing.assert_allclose([g["lr"] for g in o.param_groups], [0.125, 0.5])
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas"):
        LambdaLR(opt(1.0, groups=2), [lambda e: 1.0])


def test_scheduler_sets_the_lr_the_optimizer_uses():
    p = Parameter(np.zeros(1))
    o = SGD([p], lr=1.0)
    sched = StepLR(o, step_size=1, gamma=0.5)
    for _ in range(3):  # steps with lr 1, 0.5, 0.25 and gradient 1
        p.grad = np.ones(1)
        o.step()
        sched.step()
    np.testing.assert_allclose(p.data, [-1.75])


def test_state_dict_round_trip_continues_identically():
    a = CosineAnnealingLR(opt(), T_max=10, eta_min=0.01)
    lrs(a, 3)
    o2 = opt()
    o2.load_state_dict(a.optimizer.state_dict())  # brings initial_lr along, as in torch
    b = CosineAnnealingLR(o2, T_max=99)
    b.load_state_dict(a.state_dict())
    assert lrs(b, 4) == lrs(a, 4)


def test_resume_with_last_epoch_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(opt(), step_size=2, last_epoch=3)


@pytest.mark.parametrize("make, message", [
    (lambda o: StepLR(o, step_size=0), "Invalid step_size: 0"),
    (lambda o: CosineAnnealingLR(o, T_max=0), "Invalid T_max: 0"),
    (lambda o: LinearLR(o, start_factor=0.0), "Invalid start_factor: 0.0"),
    (lambda o: LinearLR(o, end_factor=1.5), "Invalid end_factor: 1.5"),
])
def test_invalid_arguments_raise_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make(opt())


@pytest.mark.parametrize("name, kw", [
    ("StepLR", {"step_size": 3, "gamma": 0.3}), ("MultiStepLR", {"milestones": [2, 4, 4], "gamma": 0.5}),
    ("CosineAnnealingLR", {"T_max": 5, "eta_min": 0.05}), ("LinearLR", {"start_factor": 0.1, "total_iters": 4}),
], ids=str)
def test_matches_torch_lr_scheduler(name, kw):
    torch = torch_or_skip()
    import distbp.optim.lr_scheduler as ours
    got = lrs(getattr(ours, name)(opt(0.3), **kw), 12)
    t_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    t_sched = getattr(torch.optim.lr_scheduler, name)(t_opt, **kw)
    want = [t_sched.get_last_lr()[0]]
    for _ in range(12):
        t_opt.step()
        t_sched.step()
        want.append(t_sched.get_last_lr()[0])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-15)
