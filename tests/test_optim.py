"""Optimizers against independent NumPy loops written from torch.optim's documented update rules,
against hand-computed values, and (when torch is importable) against torch itself."""
import math

import numpy as np
import pytest

import distbp as db
from distbp.nn import Parameter
from distbp.optim import SGD, Adam, AdamW, RMSprop
from tests.conftest import torch_or_skip

P0 = np.array([0.5, -1.5, 2.0])
GRADS = [np.array([0.1, -0.2, 0.3]), np.array([-0.4, 0.5, 0.05]), np.array([0.25, 0.0, -0.6])]


def run(make_opt, p0=P0, grads=GRADS):
    """Apply the given gradients one per step; return the final parameter and the optimizer."""
    p = Parameter(p0.copy())
    opt = make_opt([p])
    for g in grads:
        p.grad = g.copy()
        opt.step()
    return p.data, opt


# ----- independent references: one loop per algorithm, straight from the formulas -----
def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, buf = p.copy(), None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def ref_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p = p.copy()
    v, a, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g ** 2
        if centered:
            a = alpha * a + (1 - alpha) * g
            denom = np.sqrt(v - a ** 2) + eps
        else:
            denom = np.sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + g / denom
            p = p - lr * buf
        else:
            p = p - lr * g / denom
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    p = p.copy()
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        vmax = np.maximum(vmax, v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


SGD_CASES = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.3},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    {"lr": 0.1, "weight_decay": 0.05},
    {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1, "nesterov": True},
]
RMSPROP_CASES = [
    {"lr": 0.01},
    {"lr": 0.01, "alpha": 0.9, "momentum": 0.5},
    {"lr": 0.01, "centered": True},
    {"lr": 0.02, "alpha": 0.8, "centered": True, "momentum": 0.9, "weight_decay": 0.1, "eps": 1e-3},
]
ADAM_CASES = [
    {"lr": 0.1},
    {"lr": 0.1, "betas": (0.8, 0.9), "eps": 1e-3},
    {"lr": 0.1, "weight_decay": 0.1},
    {"lr": 0.1, "betas": (0.5, 0.6), "amsgrad": True},
    {"lr": 0.05, "weight_decay": 0.2, "amsgrad": True},
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=str)
def test_sgd_three_steps_match_numpy_reference(kw):
    got, _ = run(lambda ps: SGD(ps, **kw))
    np.testing.assert_allclose(got, ref_sgd(P0, GRADS, **kw), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw", RMSPROP_CASES, ids=str)
def test_rmsprop_three_steps_match_numpy_reference(kw):
    got, _ = run(lambda ps: RMSprop(ps, **kw))
    np.testing.assert_allclose(got, ref_rmsprop(P0, GRADS, **kw), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_adam_three_steps_match_numpy_reference(kw):
    got, _ = run(lambda ps: Adam(ps, **kw))
    np.testing.assert_allclose(got, ref_adam(P0, GRADS, **kw), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kw", ADAM_CASES, ids=str)
def test_adamw_three_steps_match_numpy_reference_with_decoupled_decay(kw):
    kw = {"weight_decay": 1e-2, **kw}  # AdamW's default decay is on
    got, _ = run(lambda ps: AdamW(ps, **kw))
    np.testing.assert_allclose(got, ref_adam(P0, GRADS, decoupled=True, **kw), rtol=1e-12, atol=1e-14)


# ----- hand-computed values -----
def test_sgd_momentum_hand_computed_buffer_starts_at_first_gradient():
    # buf: 1, 0.9*1+1 = 1.9, 0.9*1.9+1 = 2.71;  p: -0.1, -0.29, -0.561
    got, opt = run(lambda ps: SGD(ps, lr=0.1, momentum=0.9), np.zeros(1), [np.ones(1)] * 3)
    np.testing.assert_allclose(got, [-0.561], rtol=1e-12)
    np.testing.assert_allclose(next(iter(opt.state.values()))["momentum_buffer"], [2.71], rtol=1e-12)


def test_sgd_nesterov_hand_computed():
    # steps use g + 0.5*buf with buf 1, 1.5: p = 0 - 0.1*1.5 - 0.1*1.75 = -0.325
    got, _ = run(lambda ps: SGD(ps, lr=0.1, momentum=0.5, nesterov=True), np.zeros(1), [np.ones(1)] * 2)
    np.testing.assert_allclose(got, [-0.325], rtol=1e-12)


def test_adam_constant_gradient_moves_lr_per_step():
    # with a constant g the bias-corrected moments are exactly g and g^2: each step is lr*g/(|g|+eps)
    g = np.array([2.0, -0.5])
    got, _ = run(lambda ps: Adam(ps, lr=0.01, eps=1e-8), np.zeros(2), [g] * 3)
    np.testing.assert_allclose(got, -3 * 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-10)


def test_adam_first_step_eps_is_added_after_bias_correction():
    # step 1: m_hat = g, sqrt(v_hat) = |g|  ->  p = -lr*g/(|g| + eps); eps=1 makes the placement visible
    got, _ = run(lambda ps: Adam(ps, lr=1.0, eps=1.0), np.zeros(1), [np.array([3.0])])
    np.testing.assert_allclose(got, [-3.0 / 4.0], rtol=1e-12)


def test_rmsprop_first_step_hand_computed():
    # v = 0.01*4 = 0.04, sqrt = 0.2: p = 1 - 0.01*2/0.2 = 0.9
    got, _ = run(lambda ps: RMSprop(ps, lr=0.01, eps=0.0), np.ones(1), [np.array([2.0])])
    np.testing.assert_allclose(got, [0.9], rtol=1e-12)


def test_adamw_decay_alone_shrinks_by_one_minus_lr_wd():
    # a zero gradient leaves m = v = 0 so the step is 0/eps = 0: only the decay acts
    got, _ = run(lambda ps: AdamW(ps, lr=0.1, weight_decay=0.5), np.array([4.0]), [np.zeros(1)] * 2)
    np.testing.assert_allclose(got, [4.0 * 0.95 ** 2], rtol=1e-12)


# ----- state: layout, round trip, resume -----
@pytest.mark.parametrize("make, keys", [
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9), {"momentum_buffer"}),
    (lambda ps: RMSprop(ps, momentum=0.5, centered=True), {"step", "square_avg", "momentum_buffer", "grad_avg"}),
    (lambda ps: Adam(ps, amsgrad=True), {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    (lambda ps: AdamW(ps), {"step", "exp_avg", "exp_avg_sq"}),
])
def test_state_dict_round_trip_resumes_identically(make, keys):
    _, opt = run(make, grads=GRADS[:2])
    sd = opt.state_dict()
    saved = {k: np.array(v, copy=True) for k, v in sd["state"][0].items()}
    assert set(sd["state"][0]) == keys
    if "step" in keys:  # torch's layout: a 0-d float32 array
        assert sd["state"][0]["step"].shape == () and float(sd["state"][0]["step"]) == 2.0
    # continue in the original, and in a fresh optimizer loaded from the state_dict
    p_ref = next(iter(opt.state))
    p_new = Parameter(p_ref.data.copy())
    opt_new = make([p_new])
    opt_new.load_state_dict(sd)
    for p, o in ((p_ref, opt), (p_new, opt_new)):
        p.grad = GRADS[2].copy()
        o.step()
    np.testing.assert_array_equal(p_new.data, p_ref.data)
    # loading copied the arrays: stepping opt_new did not write into the saved dict
    for k, v in sd["state"][0].items():
        np.testing.assert_array_equal(v, saved[k])


@pytest.mark.parametrize("step", [2, np.array(2.0, np.float32), np.array([2.0], np.float32)], ids=repr)
def test_load_state_dict_accepts_step_as_int_or_one_element_array(step):
    # a checkpoint may hand `step` back as a 1-element array (safetensors writers often drop 0-d)
    _, ref = run(lambda ps: Adam(ps, lr=0.1), grads=GRADS)
    _, opt = run(lambda ps: Adam(ps, lr=0.1), grads=GRADS[:2])
    sd = opt.state_dict()
    sd["state"][0]["step"] = step
    p = Parameter(next(iter(opt.state)).data.copy())
    fresh = Adam([p], lr=0.1)
    fresh.load_state_dict(sd)
    assert fresh.state[p]["step"] == 2
    p.grad = GRADS[2].copy()
    fresh.step()
    np.testing.assert_array_equal(p.data, next(iter(ref.state)).data)


def test_load_state_dict_restores_hyperparameters_and_rejects_wrong_group_count():
    p = Parameter(P0.copy())
    a = Adam([p], lr=0.5, betas=(0.8, 0.9))
    b = Adam([Parameter(P0.copy())])
    b.load_state_dict(a.state_dict())
    assert b.param_groups[0]["lr"] == 0.5 and tuple(b.param_groups[0]["betas"]) == (0.8, 0.9)
    two = Adam([{"params": [Parameter(P0.copy())]}, {"params": [Parameter(P0.copy())], "lr": 0.1}])
    with pytest.raises(ValueError, match="2 parameter groups"):
        b.load_state_dict(two.state_dict())


def test_param_groups_use_their_own_lr_and_skip_params_without_grad():
    a, b, c = (Parameter(np.ones(2)) for _ in range(3))
    opt = SGD([{"params": [a, c]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)  # c has no gradient
    opt.step()
    np.testing.assert_allclose(a.data, [0.9, 0.9])
    np.testing.assert_allclose(b.data, [0.5, 0.5])
    np.testing.assert_array_equal(c.data, [1.0, 1.0])
    assert c not in opt.state


@pytest.mark.parametrize("cls", [SGD, RMSprop, Adam, AdamW])
def test_float32_parameter_keeps_float32_state_and_values(cls):
    p = Parameter(P0.astype(np.float32))
    opt = cls([p], lr=0.01)
    for g in GRADS:
        p.grad = g.astype(np.float32)
        opt.step()
    assert p.data.dtype == np.float32
    assert all(v.dtype == np.float32 for v in opt.state[p].values() if isinstance(v, np.ndarray))


@pytest.mark.parametrize("make, message", [
    (lambda ps: SGD(ps, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda ps: SGD(ps, lr=0.1, momentum=-1), "Invalid momentum value: -1"),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), "Nesterov momentum requires"),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda ps: Adam(ps, eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (lambda ps: AdamW(ps, weight_decay=-0.01), "Invalid weight_decay value: -0.01"),
    (lambda ps: RMSprop(ps, alpha=-0.5), "Invalid alpha value: -0.5"),
    (lambda ps: RMSprop(ps, lr=float("nan")), "Invalid learning rate: nan"),
])
def test_invalid_hyperparameters_raise_naming_the_value(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make([Parameter(np.zeros(1))])


def test_training_a_linear_model_with_adam_reduces_the_loss():
    db.manual_seed(0)
    x = db.tensor(np.linspace(-1, 1, 16).reshape(-1, 1))
    y = 3 * x + 1
    model = db.nn.Linear(1, 1)
    opt = Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = db.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.01 * losses[0]


# ----- torch itself, when installed -----
@pytest.mark.parametrize("name, kw", [("SGD", kw) for kw in SGD_CASES] + [("RMSprop", kw) for kw in RMSPROP_CASES]
                         + [("Adam", kw) for kw in ADAM_CASES] + [("AdamW", kw) for kw in ADAM_CASES], ids=str)
def test_matches_torch_optim(name, kw):
    torch = torch_or_skip()
    got, _ = run(lambda ps: getattr(db.optim, name)(ps, **kw))
    p = torch.nn.Parameter(torch.tensor(P0.copy(), dtype=torch.float64))
    opt = getattr(torch.optim, name)([p], **kw)
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert math.isfinite(got.sum())


# ----- maximize: torch negates the gradient before everything else, weight decay included -----
ALL_CASES = ([("SGD", kw) for kw in SGD_CASES] + [("RMSprop", kw) for kw in RMSPROP_CASES]
             + [("Adam", kw) for kw in ADAM_CASES] + [("AdamW", kw) for kw in ADAM_CASES])


@pytest.mark.parametrize("name, kw", ALL_CASES, ids=str)
def test_maximize_equals_minimizing_the_negated_gradient(name, kw):
    cls = getattr(db.optim, name)
    got, opt = run(lambda ps: cls(ps, maximize=True, **kw))
    want, _ = run(lambda ps: cls(ps, **kw), grads=[-g for g in GRADS])
    np.testing.assert_array_equal(got, want)
    assert opt.param_groups[0]["maximize"] is True


def test_sgd_maximize_fast_path_hand_computed():
    # momentum 0, no decay (the fast path): three steps of +lr*g
    got, _ = run(lambda ps: SGD(ps, lr=0.1, maximize=True), np.zeros(2), [np.array([1.0, -2.0])] * 3)
    np.testing.assert_allclose(got, [0.3, -0.6], rtol=1e-12)


def test_sgd_maximize_weight_decay_still_pulls_toward_zero():
    # g = -1 + 0.5*1 = -0.5 -> p = 1 + 0.1*0.5 = 1.05 (negating after the decay would give 1.15)
    got, _ = run(lambda ps: SGD(ps, lr=0.1, weight_decay=0.5, maximize=True), np.ones(1), [np.ones(1)])
    np.testing.assert_allclose(got, [1.05], rtol=1e-12)


def test_sgd_maximize_momentum_hand_computed():
    # g = -1 each step: buf -1, -1.9; p = 0 + 0.1 + 0.19 = 0.29
    got, _ = run(lambda ps: SGD(ps, lr=0.1, momentum=0.9, maximize=True), np.zeros(1), [np.ones(1)] * 2)
    np.testing.assert_allclose(got, [0.29], rtol=1e-12)


def test_adam_maximize_constant_gradient_moves_up_lr_per_step():
    g = np.array([2.0, -0.5])
    got, _ = run(lambda ps: Adam(ps, lr=0.01, maximize=True), np.zeros(2), [g] * 3)
    np.testing.assert_allclose(got, 3 * 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-10)


def test_adam_maximize_l2_decay_enters_after_negation():
    # g = -(2) + 1*4 = 2 on step 1 (p=4, wd=1): the step is -lr*g/|g| = -0.1 -> 3.9 (not 4.1)
    got, _ = run(lambda ps: Adam(ps, lr=0.1, eps=0.0, weight_decay=1.0, maximize=True), np.array([4.0]),
                 [np.array([2.0])])
    np.testing.assert_allclose(got, [3.9], rtol=1e-12)


def test_adamw_maximize_keeps_the_decoupled_shrink():
    # each step: p *= 1 - 0.1*0.5, then + lr (constant g, eps 0): 4*0.95 + 0.1 = 3.9; 3.9*0.95 + 0.1 = 3.805
    got, _ = run(lambda ps: AdamW(ps, lr=0.1, eps=0.0, weight_decay=0.5, maximize=True), np.array([4.0]),
                 [np.array([2.0])] * 2)
    np.testing.assert_allclose(got, [3.805], rtol=1e-12)


def test_rmsprop_maximize_first_step_hand_computed():
    # v = 0.01*4 = 0.04, sqrt = 0.2: p = 1 + 0.01*2/0.2 = 1.1
    got, _ = run(lambda ps: RMSprop(ps, lr=0.01, eps=0.0, maximize=True), np.ones(1), [np.array([2.0])])
    np.testing.assert_allclose(got, [1.1], rtol=1e-12)


def test_maximize_is_per_group_on_the_fast_path():
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    opt = SGD([{"params": [a], "maximize": True}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, [0.1, 0.1])
    np.testing.assert_allclose(b.data, [-0.1, -0.1])


def test_maximize_survives_a_state_dict_round_trip():
    _, src = run(lambda ps: Adam(ps, lr=0.1, maximize=True), grads=GRADS[:1])
    dst = Adam([Parameter(P0.copy())], lr=0.1)
    dst.load_state_dict(src.state_dict())
    assert dst.param_groups[0]["maximize"] is True


# ----- foreach / fused / capturable / differentiable: accepted, stored, change no numbers -----
FLAG_DEFAULTS = {  # torch 2.13's param_group entries besides the hyperparameters
    SGD: {"maximize": False, "foreach": None, "differentiable": False, "fused": None},
    RMSprop: {"capturable": False, "foreach": None, "maximize": False, "differentiable": False},
    Adam: {"maximize": False, "foreach": None, "capturable": False, "differentiable": False, "fused": None,
           "decoupled_weight_decay": False},
    AdamW: {"maximize": False, "foreach": None, "capturable": False, "differentiable": False, "fused": None,
            "decoupled_weight_decay": True},
}


@pytest.mark.parametrize("cls", FLAG_DEFAULTS, ids=lambda c: c.__name__)
def test_flags_sit_in_param_groups_with_torchs_defaults(cls):
    opt = cls([Parameter(P0.copy())])
    for group in (opt.param_groups[0], opt.state_dict()["param_groups"][0]):
        assert {k: group[k] for k in FLAG_DEFAULTS[cls]} == FLAG_DEFAULTS[cls]


@pytest.mark.parametrize("cls, flags", [
    (SGD, {"foreach": True}), (SGD, {"fused": True}), (SGD, {"foreach": False, "fused": False}),
    (RMSprop, {"foreach": True}), (RMSprop, {"foreach": False}),
    (Adam, {"fused": True}), (Adam, {"foreach": True}), (AdamW, {"fused": False, "foreach": False}),
], ids=str)
def test_foreach_and_fused_change_no_numbers(cls, flags):
    kw = {"lr": 0.01, "momentum": 0.5} if cls in (SGD, RMSprop) else {"lr": 0.01}
    got, opt = run(lambda ps: cls(ps, **kw, **flags))
    want, _ = run(lambda ps: cls(ps, **kw))
    np.testing.assert_array_equal(got, want)
    assert all(opt.param_groups[0][k] is v for k, v in flags.items())


def test_rmsprop_takes_torchs_flags_by_position():
    # torch's order: ..., centered, capturable, foreach, maximize, differentiable
    got, opt = run(lambda ps: RMSprop(ps, 0.01, 0.99, 1e-8, 0.0, 0.0, False, False, None, True, False))
    want, _ = run(lambda ps: RMSprop(ps, lr=0.01, maximize=True))
    np.testing.assert_array_equal(got, want)
    assert opt.param_groups[0]["maximize"] is True and opt.param_groups[0]["foreach"] is None


def test_adam_decoupled_weight_decay_is_adamw_and_adamw_stays_decoupled_on_load():
    got, _ = run(lambda ps: Adam(ps, lr=0.1, weight_decay=0.3, decoupled_weight_decay=True))
    want, _ = run(lambda ps: AdamW(ps, lr=0.1, weight_decay=0.3))
    np.testing.assert_array_equal(got, want)
    _, plain = run(lambda ps: Adam(ps, lr=0.1, weight_decay=0.3))
    w = AdamW([Parameter(P0.copy())])
    w.load_state_dict(plain.state_dict())  # an Adam state says False; AdamW keeps True, as torch's
    assert w.param_groups[0]["decoupled_weight_decay"] is True


@pytest.mark.parametrize("make, error, message", [
    (lambda ps: SGD(ps, maximize=1), TypeError, "maximize must be a bool, got 1"),
    (lambda ps: RMSprop(ps, maximize=None), TypeError, "maximize must be a bool, got None"),
    (lambda ps: SGD(ps, foreach="yes"), TypeError, "foreach must be a bool or None, got 'yes'"),
    (lambda ps: Adam(ps, fused=0), TypeError, "fused must be a bool or None, got 0"),
    (lambda ps: RMSprop(ps, capturable=None), TypeError, "capturable must be a bool, got None"),
    (lambda ps: Adam(ps, decoupled_weight_decay="yes"), TypeError, "decoupled_weight_decay must be a bool"),
    (lambda ps: SGD(ps, differentiable=True), NotImplementedError, "differentiable=True"),
    (lambda ps: AdamW(ps, differentiable=True), NotImplementedError, "differentiable=True"),
    (lambda ps: Adam(ps, capturable=True), NotImplementedError, "capturable=True"),
    (lambda ps: RMSprop(ps, capturable=True), NotImplementedError, "capturable=True"),
    (lambda ps: SGD([{"params": ps, "capturable": True}]), NotImplementedError, "capturable=True"),
    (lambda ps: Adam(ps, fused=True, foreach=True), ValueError, "`fused` and `foreach` cannot be `True` together"),
], ids=str)
def test_invalid_flags_raise_naming_the_flag(make, error, message):
    with pytest.raises(error, match=message):
        make([Parameter(np.zeros(1))])


@pytest.mark.parametrize("name, kw", ALL_CASES, ids=str)
def test_maximize_matches_torch_optim(name, kw):
    torch = torch_or_skip()
    grads = GRADS + [0.5 * g[::-1] for g in GRADS]  # six steps
    got, _ = run(lambda ps: getattr(db.optim, name)(ps, maximize=True, **kw), grads=grads)
    p = torch.nn.Parameter(torch.tensor(P0.copy(), dtype=torch.float64))
    opt = getattr(torch.optim, name)([p], maximize=True, **kw)
    for g in grads:
        p.grad = torch.tensor(g.copy(), dtype=torch.float64)
        opt.step()
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "AdamW"])
def test_param_groups_line_up_with_torch_and_load_from_it(name):
    torch = torch_or_skip()
    theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(3))], lr=0.01, maximize=True)
    ours = getattr(db.optim, name)([Parameter(P0.copy())], lr=0.01)
    t_group, o_group = theirs.state_dict()["param_groups"][0], ours.state_dict()["param_groups"][0]
    assert list(o_group) == list(t_group)  # same keys in the same order
    ours.load_state_dict({"state": {}, "param_groups": theirs.state_dict()["param_groups"]})
    assert ours.param_groups[0]["maximize"] is True
    assert ours.state_dict()["param_groups"][0] == t_group
