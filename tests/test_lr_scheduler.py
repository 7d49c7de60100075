"""Learning-rate schedules against hand-computed values and their closed forms (and torch's, if installed)."""
import copy
import math

import numpy as np
import pytest

import distbp.optim.lr_scheduler as ours
from distbp.nn import Parameter
from distbp.optim import SGD, Adam, Optimizer
from distbp.optim.lr_scheduler import (
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
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


# ----- new schedules: hand-computed values -----
def test_exponentiallr_hand_computed():
    np.testing.assert_allclose(lrs(ExponentialLR(opt(), gamma=0.5), 4), [1, .5, .25, .125, .0625])


def test_constantlr_hand_computed():
    # 0.4 * 0.5 for epochs 0, 1, 2; the full 0.4 from total_iters = 3 on
    np.testing.assert_allclose(lrs(ConstantLR(opt(0.4), factor=0.5, total_iters=3), 5), [.2, .2, .2, .4, .4, .4])


def test_steplr_chains_on_an_lr_changed_by_hand():
    sched = StepLR(opt(), step_size=2, gamma=0.5)
    lrs(sched, 1)
    sched.optimizer.param_groups[0]["lr"] = 10.0  # torch's chainable step() decays from here
    np.testing.assert_allclose(lrs(sched, 3)[1:], [5, 5, 2.5])



def test_cosine_chains_on_an_lr_changed_by_hand():
    # T_max 2, base 1; lr set to 4 at epoch 0: ratios 1/2 then 0, then the additive step off the minimum
    # (0 + (1 - 0) * (1 - cos(pi/2)) / 2 = 0.5), then ratio 2/1 -- the closed form would give 0.5, 0, 0.5, 1
    sched = CosineAnnealingLR(opt(), T_max=2)
    sched.optimizer.param_groups[0]["lr"] = 4.0
    np.testing.assert_allclose(lrs(sched, 4)[1:], [2, 0, .5, 1], atol=1e-15)


@pytest.mark.parametrize("make", [
    lambda o: StepLR(o, step_size=3, gamma=0.5), lambda o: MultiStepLR(o, [1, 3, 3], gamma=0.5),
    lambda o: ConstantLR(o, factor=0.25, total_iters=3), lambda o: ExponentialLR(o, gamma=0.7),
    lambda o: LinearLR(o, start_factor=0.2, end_factor=0.8, total_iters=4),
    lambda o: CosineAnnealingLR(o, T_max=3, eta_min=0.1),
])
def test_closed_form_agrees_with_step_for_a_schedule_used_alone(make):
    sched = make(opt(1.0, groups=2))
    for _ in range(8):
        np.testing.assert_allclose(sched._get_closed_form_lr(), sched.get_last_lr(), rtol=1e-12, atol=1e-15)
        sched.step()


@pytest.mark.parametrize("make", [lambda o, e: LinearLR(o, start_factor=0.25, total_iters=4, last_epoch=e),
                                  lambda o, e: ExponentialLR(o, gamma=0.5, last_epoch=e),
                                  lambda o, e: CosineAnnealingLR(o, T_max=4, last_epoch=e)])
def test_constructing_with_last_epoch_keeps_the_loaded_lr(make):
    # torch's _initial_mode: these schedules leave the lr alone on the constructor's step when resuming
    o = opt()
    sched = make(o, -1)
    lrs(sched, 2)
    o2 = opt()
    o2.load_state_dict(o.state_dict())
    resumed = make(o2, 2)
    assert resumed.get_last_lr() == sched.get_last_lr() and resumed.last_epoch == 3

def test_sequentiallr_constant_then_exponential_hand_computed():
    # ConstantLR(0.1, 2 iters) for epochs 0-2 (back to 1 at its epoch 2); ExponentialLR(0.5) restarts at 3
    o = opt()
    sched = SequentialLR(o, [ConstantLR(o, factor=0.1, total_iters=2), ExponentialLR(o, gamma=0.5)], milestones=[3])
    np.testing.assert_allclose(lrs(sched, 5), [.1, .1, 1, 1, .5, .25])


def test_sequentiallr_warmup_then_step_hand_computed_per_group():
    # LinearLR 0.25 -> 1 over 2 epochs, then StepLR from epoch 2: 1, 1, 0.1 (group 2 has twice the lr)
    o = opt(1.0, groups=2)
    sched = SequentialLR(o, [LinearLR(o, start_factor=0.25, total_iters=2), StepLR(o, 2, 0.1)], milestones=[2])
    got = [sched.get_last_lr()]
    for _ in range(4):
        sched.step()
        got.append(sched.get_last_lr())
    np.testing.assert_allclose(got, [[.25, .5], [.625, 1.25], [1, 2], [1, 2], [.1, .2]])


def test_chainedscheduler_multiplies_the_factors_hand_computed():
    # ConstantLR(0.5 until epoch 2) times ExponentialLR(0.9): 0.5, 0.45, 0.81, 0.729
    o = opt()
    sched = ChainedScheduler([ConstantLR(o, factor=0.5, total_iters=2), ExponentialLR(o, gamma=0.9)])
    np.testing.assert_allclose(lrs(sched, 3), [.5, .45, .81, .729])
    assert sched.optimizer is o


def plateau_lrs(sched, metrics):
    out = [sched.get_last_lr()[0]]
    for m in metrics:
        sched.step(m)
        out.append(sched.get_last_lr()[0])
    return out


def test_reducelronplateau_patience_hand_computed():
    # patience 1: the second epoch without improvement (strictly below best, abs threshold 0) halves lr
    sched = ReduceLROnPlateau(opt(), factor=0.5, patience=1, threshold=0.0, threshold_mode="abs")
    np.testing.assert_allclose(plateau_lrs(sched, [1, 1, 1, .5, .6, .7, .8]), [1, 1, 1, .5, .5, .5, .25, .25])


def test_reducelronplateau_cooldown_hand_computed():
    # patience 0: cut on the first bad epoch, then 2 cooldown epochs count no bad epochs
    sched = ReduceLROnPlateau(opt(), factor=0.5, patience=0, cooldown=2)
    np.testing.assert_allclose(plateau_lrs(sched, [1] * 6), [1, 1, .5, .5, .5, .25, .25])


def test_reducelronplateau_min_lr_and_eps():
    sched = ReduceLROnPlateau(opt(), factor=0.1, patience=0, min_lr=0.05)
    np.testing.assert_allclose(plateau_lrs(sched, [1] * 4), [1, 1, .1, .05, .05])
    small = ReduceLROnPlateau(opt(1e-8), factor=0.5, patience=0)  # a cut of 5e-9 is below eps=1e-8: skipped
    assert plateau_lrs(small, [1, 1, 1]) == [1e-8] * 4


def test_reducelronplateau_max_mode_relative_threshold():
    # max, rel 0.1: after best 10 only > 11 improves; 10.5 and 10.9 are bad epochs (patience 1 -> cut)
    sched = ReduceLROnPlateau(opt(), mode="max", factor=0.5, patience=1, threshold=0.1)
    np.testing.assert_allclose(plateau_lrs(sched, [10, 10.5, 10.9, 11.5, 12]), [1, 1, 1, .5, .5, .5])
    assert sched.best == 11.5  # 12 < 11.5 * 1.1



def test_reducelronplateau_max_mode_absolute_threshold():
    # max, abs 0.05: after best 1 only > 1.05 improves; 1.04 is a bad epoch (patience 0 -> cut), 1.1 improves
    sched = ReduceLROnPlateau(opt(), mode="max", factor=0.5, patience=0, threshold=0.05, threshold_mode="abs")
    np.testing.assert_allclose(plateau_lrs(sched, [1, 1.04, 1.1]), [1, 1, .5, .5])
    assert sched.best == 1.1

def test_reducelronplateau_takes_a_0d_array_and_per_group_min_lr():
    o = opt(1.0, groups=2)  # lrs 1 and 2
    sched = ReduceLROnPlateau(o, factor=0.1, patience=0, min_lr=[0.5, 0.0])
    for m in (np.array(3.0), np.array(3.0)):
        sched.step(m)
    assert sched.get_last_lr() == [0.5, pytest.approx(0.2)]


def onecycle_trace(sched, steps):
    groups = sched.optimizer.param_groups
    out = [(groups[0]["lr"], groups[0].get("momentum", groups[0].get("betas", [None])[0]))]
    for _ in range(steps):
        sched.step()
        out.append((groups[0]["lr"], groups[0].get("momentum", groups[0].get("betas", [None])[0])))
    return np.array(out)


def test_onecyclelr_linear_two_phase_hand_computed_with_momentum():
    # initial 1/10 = 0.1, up to 1 by step 0.25*12 - 1 = 2, down by 0.1 a step to min 0.1/1 at step 11;
    # momentum goes the other way: 0.95 -> 0.85 -> 0.95
    sched = OneCycleLR(opt(), max_lr=1.0, total_steps=12, pct_start=0.25, anneal_strategy="linear",
                       div_factor=10.0, final_div_factor=1.0)
    got = onecycle_trace(sched, 11)
    np.testing.assert_allclose(got[:, 0], [.1, .55, 1, .9, .8, .7, .6, .5, .4, .3, .2, .1], rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], [.95, .9, .85] + [.85 + .1 * k / 9 for k in range(1, 10)], rtol=1e-12)


def test_onecyclelr_cos_hand_computed_points():
    # cos: midpoint of the rise is the mean (0.55); the fall from 1 to 0.1 over 9 steps is
    # 0.1 + 0.45 * (1 + cos(pi k / 9)): k=3 -> 0.775, k=6 -> 0.325
    sched = OneCycleLR(opt(), max_lr=1.0, total_steps=12, pct_start=0.25, div_factor=10.0, final_div_factor=1.0)
    lr = onecycle_trace(sched, 11)[:, 0]
    np.testing.assert_allclose(lr[[0, 1, 2, 5, 8, 11]], [.1, .55, 1, .775, .325, .1], rtol=1e-12)


def test_onecyclelr_three_phase_and_beta1_cycling():
    # up to 1 by step 2, back to 0.1 by step 4 (2*0.25*12 - 2), then linear to 0.01 at step 11;
    # Adam's beta1 cycles 0.95 -> 0.85 -> 0.95 and then stays; beta2 is left alone
    o = Adam([Parameter(np.zeros(1))], lr=1.0, betas=(0.5, 0.99))
    sched = OneCycleLR(o, max_lr=1.0, epochs=3, steps_per_epoch=4, pct_start=0.25, anneal_strategy="linear",
                       div_factor=10.0, final_div_factor=10.0, three_phase=True)
    got = onecycle_trace(sched, 11)
    np.testing.assert_allclose(got[:, 0], [.1, .55, 1, .55, .1] + [.1 - .09 * k / 7 for k in range(1, 8)], rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], [.95, .9, .85, .9] + [.95] * 8, rtol=1e-12)
    assert o.param_groups[0]["betas"][1] == 0.99



def test_onecyclelr_per_group_max_lr_and_momentum():
    o = opt(1.0, groups=2)
    sched = OneCycleLR(o, max_lr=[1.0, 2.0], total_steps=10, base_momentum=[0.8, 0.7], max_momentum=(0.9, 0.95))
    np.testing.assert_allclose(sched.get_last_lr(), [0.04, 0.08], rtol=1e-12)  # max_lr / 25
    np.testing.assert_allclose([g["momentum"] for g in o.param_groups], [0.9, 0.95], rtol=1e-12)
    np.testing.assert_allclose([g["min_lr"] for g in o.param_groups], [4e-6, 8e-6], rtol=1e-12)

def test_onecyclelr_steps_at_most_total_steps():
    sched = OneCycleLR(opt(), max_lr=1.0, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="Tried to step 4 times. The specified number of total steps is 3"):
        sched.step()


# ----- state_dict round trips mid-sequence, and torch's sequences -----
def sgd2(lib, torch=None):
    """SGD with momentum and two groups (lr 0.3 and 0.2), from distbp or torch."""
    if lib == "torch":
        groups = [{"params": [torch.nn.Parameter(torch.zeros(1))]},
                  {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2}]
        return torch.optim.SGD(groups, lr=0.3, momentum=0.9)
    return SGD([{"params": [Parameter(np.zeros(1))]}, {"params": [Parameter(np.zeros(1))], "lr": 0.2}], lr=0.3,
               momentum=0.9)


def adam2(lib, torch=None):
    if lib == "torch":
        return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    return Adam([Parameter(np.zeros(1))], lr=0.3)


# name -> (optimizer factory, schedule factory taking the scheduler module M and the optimizer)
SCHEDULES = {
    "StepLR": (sgd2, lambda M, o: M.StepLR(o, step_size=3, gamma=0.3)),
    "MultiStepLR": (sgd2, lambda M, o: M.MultiStepLR(o, milestones=[2, 4, 4], gamma=0.5)),
    "CosineAnnealingLR": (sgd2, lambda M, o: M.CosineAnnealingLR(o, T_max=7, eta_min=0.05)),
    "LinearLR": (sgd2, lambda M, o: M.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=6)),
    "ExponentialLR": (sgd2, lambda M, o: M.ExponentialLR(o, gamma=0.9)),
    "ConstantLR": (sgd2, lambda M, o: M.ConstantLR(o, factor=0.3, total_iters=4)),
    "SequentialLR": (sgd2, lambda M, o: M.SequentialLR(o, [M.LinearLR(o, start_factor=0.1, total_iters=5),
                                                          M.CosineAnnealingLR(o, T_max=10, eta_min=1e-3),
                                                          M.ExponentialLR(o, gamma=0.8)], milestones=[5, 17])),
    "SequentialLR-constant-step": (sgd2, lambda M, o: M.SequentialLR(
        o, [M.ConstantLR(o, factor=0.5, total_iters=3), M.StepLR(o, 4, 0.5), M.MultiStepLR(o, [2, 5, 5], 0.3)],
        milestones=[6, 14])),
    "ChainedScheduler": (sgd2, lambda M, o: M.ChainedScheduler([
        M.ConstantLR(o, factor=0.5, total_iters=4), M.ExponentialLR(o, gamma=0.9),
        M.CosineAnnealingLR(o, T_max=8), M.StepLR(o, 3, 0.7)])),
    "ChainedScheduler-of-SequentialLR": (sgd2, lambda M, o: M.ChainedScheduler([
        M.SequentialLR(o, [M.ConstantLR(o, 0.5, 3), M.ExponentialLR(o, 0.9)], [4]), M.LinearLR(o, 0.2)],
        optimizer=o)),
    "OneCycleLR-cos": (sgd2, lambda M, o: M.OneCycleLR(o, max_lr=[1.0, 0.5], total_steps=30)),
    "OneCycleLR-linear-3phase-beta1": (adam2, lambda M, o: M.OneCycleLR(
        o, max_lr=1.0, epochs=5, steps_per_epoch=6, pct_start=0.25, anneal_strategy="linear", three_phase=True,
        base_momentum=0.8, max_momentum=0.9)),
}
PLATEAUS = {
    "min-rel": {"patience": 2},
    "max-abs-cooldown-min_lr": {"mode": "max", "threshold_mode": "abs", "threshold": 0.05, "patience": 2,
                                "cooldown": 1, "factor": 0.5, "min_lr": [0.01, 0.05]},
    "eps": {"patience": 0, "factor": 0.5, "eps": 0.02, "cooldown": 3},
}
METRICS = list(np.random.default_rng(0).random(30))


def trace(make_opt, make_sched, steps, lib="distbp", torch=None, resume_at=None):
    """(lr of every group, momentum or beta1 of the first group) at construction and after each step();
    with resume_at, both state_dicts are deep-copied there (as a checkpoint is) into a new optimizer and
    scheduler -- scheduler built first, then the optimizer state and the scheduler state loaded, torch's
    order -- which run the remaining steps."""
    M = torch.optim.lr_scheduler if lib == "torch" else ours
    o = make_opt(lib, torch)
    sched = make_sched(M, o)
    plateau = isinstance(sched, M.ReduceLROnPlateau)

    def record():
        g = sched.optimizer.param_groups[0]
        return list(sched.get_last_lr()), g["betas"][0] if "betas" in g else g["momentum"]

    out = [record()]
    for i in range(steps):
        if i == resume_at:
            opt_state, sched_state = copy.deepcopy(o.state_dict()), copy.deepcopy(sched.state_dict())
            o = make_opt(lib, torch)
            sched = make_sched(M, o)
            o.load_state_dict(opt_state)
            sched.load_state_dict(sched_state)
        o.step()
        sched.step(METRICS[i]) if plateau else sched.step()
        out.append(record())
    return out


ALL = {**SCHEDULES,
       **{f"ReduceLROnPlateau-{k}": (sgd2, lambda M, o, kw=kw: M.ReduceLROnPlateau(o, **kw))
          for k, kw in PLATEAUS.items()}}


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_mid_sequence_continues_identically(name):
    make_opt, make_sched = ALL[name]
    assert trace(make_opt, make_sched, 30, resume_at=11) == trace(make_opt, make_sched, 30)


def test_composite_state_dict_nests_the_schedulers_states_and_is_left_intact():
    o = opt()
    sched = SequentialLR(o, [ConstantLR(o, 0.5, 2), ExponentialLR(o, 0.9)], [3])
    sd = sched.state_dict()
    assert [s["last_epoch"] for s in sd["_schedulers"]] == [0, -1] and "optimizer" not in sd
    sched.load_state_dict(sd)
    assert "_schedulers" in sd


@pytest.mark.parametrize("make, error, message", [
    (lambda o: ConstantLR(o, factor=1.5), ValueError, r"Invalid factor: 1.5 \(must be in \[0, 1\]\)"),
    (lambda o: ConstantLR(o, total_iters=0), ValueError, "Invalid total_iters: 0"),
    (lambda o: SequentialLR(o, [ExponentialLR(o, 0.9)] * 2, milestones=[]), ValueError, "one milestone fewer"),
    (lambda o: SequentialLR(o, [], milestones=[]), ValueError, "at least one scheduler"),
    (lambda o: SequentialLR(o, [ReduceLROnPlateau(o)], []), ValueError, "does not support ReduceLROnPlateau"),
    (lambda o: ChainedScheduler([ExponentialLR(opt(), 0.9)], optimizer=o), ValueError, "same optimizer"),
    (lambda o: ChainedScheduler([object()], optimizer=o), TypeError, "no `optimizer` attribute"),
    (lambda o: ReduceLROnPlateau(o, factor=1.0), ValueError, "Invalid factor: 1.0"),
    (lambda o: ReduceLROnPlateau(o, mode="avg"), ValueError, "Invalid mode: 'avg'"),
    (lambda o: ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "Invalid threshold_mode: 'pct'"),
    (lambda o: ReduceLROnPlateau(o, min_lr=[0, 0]), ValueError, "expected 1 min_lrs, got 2"),
    (lambda o: OneCycleLR(o, 1.0), ValueError, "either total_steps OR"),
    (lambda o: OneCycleLR(o, 1.0, total_steps=0), ValueError, "Invalid total_steps: 0"),
    (lambda o: OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=1.5), ValueError, "Invalid steps_per_epoch: 1.5"),
    (lambda o: OneCycleLR(o, 1.0, 10, pct_start=1), ValueError, "Invalid pct_start: 1"),
    (lambda o: OneCycleLR(o, 1.0, 10, anneal_strategy="exp"), ValueError, "Invalid anneal_strategy: 'exp'"),
    (lambda o: OneCycleLR(o, [1.0, 2.0], 10), ValueError, "max_lr must have one value per param group"),
    (lambda o: OneCycleLR(Optimizer([Parameter(np.zeros(1))], {"lr": 0.1}), 1.0, 10), ValueError,
     "must support momentum or beta1"),
], ids=str)
def test_new_schedules_reject_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make(opt())


@pytest.mark.parametrize("name", SCHEDULES)
def test_matches_torch_lr_sequence_exactly_across_a_round_trip(name):
    torch = torch_or_skip()
    make_opt, make_sched = SCHEDULES[name]
    want = trace(make_opt, make_sched, 30, "torch", torch)
    assert trace(make_opt, make_sched, 30, resume_at=11) == want
    assert trace(make_opt, make_sched, 30, "torch", torch, resume_at=11) == want  # torch's own round trip agrees


@pytest.mark.parametrize("name", PLATEAUS)
def test_reducelronplateau_matches_torch_exactly_across_a_round_trip(name):
    torch = torch_or_skip()
    make_sched = ALL[f"ReduceLROnPlateau-{name}"][1]
    want = trace(sgd2, make_sched, 30, "torch", torch)
    assert len({tuple(lr) for lr, _ in want}) > 2  # the metrics do cut the lr more than once
    assert trace(sgd2, make_sched, 30, resume_at=11) == want


@pytest.mark.parametrize("last_epoch", [3, 5])
@pytest.mark.parametrize("name", ["StepLR", "CosineAnnealingLR", "LinearLR", "ExponentialLR", "ConstantLR"])
def test_resuming_with_last_epoch_matches_torch(name, last_epoch):
    torch = torch_or_skip()
    kw = {"StepLR": {"step_size": 3, "gamma": 0.5}, "CosineAnnealingLR": {"T_max": 6, "eta_min": 0.01},
          "LinearLR": {"start_factor": 0.2}, "ExponentialLR": {"gamma": 0.9}, "ConstantLR": {"factor": 0.5}}[name]
    got = []
    for lib, M in (("distbp", ours), ("torch", torch.optim.lr_scheduler)):
        o = sgd2(lib, torch)
        sched = getattr(M, name)(o, **kw)
        for _ in range(last_epoch):
            o.step()
            sched.step()
        o2 = sgd2(lib, torch)
        o2.load_state_dict(o.state_dict())
        sched = getattr(M, name)(o2, last_epoch=last_epoch, **kw)
        seq = [list(sched.get_last_lr())]
        for _ in range(8):
            o2.step()
            sched.step()
            seq.append(list(sched.get_last_lr()))
        got.append(seq)
    assert got[0] == got[1]
