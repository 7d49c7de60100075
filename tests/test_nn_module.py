"""Module, Parameter, Sequential, ModuleList, Linear and activations: PyTorch's registration rules,
parameter order, state_dict keys and shapes, load_state_dict errors, gradients through layers."""
from collections import OrderedDict

import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(3, 2, bias=False)
        self.scale = nn.Parameter(np.ones(2, dtype=np.float32))
        self.register_buffer("count", np.zeros(1))
        self.note = "plain attribute"

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


def test_parameters_are_registered_in_assignment_order_with_dotted_names():
    m = TwoLayer()
    assert [n for n, _ in m.named_parameters()] == ["scale", "fc1.weight", "fc1.bias", "fc2.weight"]
    assert len(list(m.parameters())) == 4
    assert [n for n, _ in m.named_buffers()] == ["count"]
    assert [n for n, _ in m.named_children()] == ["fc1", "act", "fc2"]
    assert m.note == "plain attribute"


def test_state_dict_keys_shapes_and_copies():
    m = TwoLayer()
    sd = m.state_dict()
    assert list(sd) == ["scale", "count", "fc1.weight", "fc1.bias", "fc2.weight"]
    assert sd["fc1.weight"].shape == (3, 4) and sd["fc1.bias"].shape == (3,) and sd["fc2.weight"].shape == (2, 3)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["fc1.weight"][...] = 7  # a copy: the model is untouched
    assert not np.any(m.fc1.weight.numpy() == 7)


def test_sequential_state_dict_keys_follow_torch():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list(m.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    named = nn.Sequential(OrderedDict([("hidden", nn.Linear(3, 4)), ("out", nn.Linear(4, 1))]))
    assert list(named.state_dict()) == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert len(m) == 3 and isinstance(m[1], nn.ReLU) and len(m[:2]) == 2


def test_load_state_dict_round_trips_into_a_fresh_model():
    a, b = TwoLayer(), TwoLayer()
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    x = db.tensor(np.random.default_rng(0).standard_normal((2, 4)))
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_load_state_dict_keeps_the_parameter_objects_and_dtype():
    m = nn.Linear(2, 2)
    w = m.weight
    m.load_state_dict({"weight": np.ones((2, 2)), "bias": np.zeros(2)})  # float64 arrays in
    assert m.weight is w and w.dtype == np.float32
    np.testing.assert_array_equal(w.numpy(), np.ones((2, 2)))


def test_load_state_dict_reports_missing_and_unexpected_keys():
    m = nn.Linear(2, 2)
    with pytest.raises(KeyError, match=r"missing keys \['bias'\].*unexpected keys \['extra'\]"):
        m.load_state_dict({"weight": np.zeros((2, 2)), "extra": np.zeros(1)})
    missing, unexpected = m.load_state_dict({"weight": np.zeros((2, 2))}, strict=False)
    assert missing == ["bias"] and unexpected == []


def test_load_state_dict_reports_a_shape_mismatch_by_key():
    with pytest.raises(ValueError, match=r"size mismatch for weight.*\(3, 2\).*\(2, 2\)"):
        nn.Linear(2, 2).load_state_dict({"weight": np.zeros((3, 2)), "bias": np.zeros(2)})


def test_linear_shapes_default_init_bounds_and_forward():
    lin = nn.Linear(5, 3)
    assert lin.weight.shape == (3, 5) and lin.bias.shape == (3,)
    assert lin.weight.dtype == np.float32 and lin.weight.requires_grad
    bound = 1 / np.sqrt(5)  # torch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
    assert np.abs(lin.weight.numpy()).max() <= bound and np.abs(lin.bias.numpy()).max() <= bound
    assert np.abs(lin.weight.numpy()).max() > bound / 2  # drawn, not left at zero
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(lin(db.tensor(x)).numpy(), x @ lin.weight.numpy().T + lin.bias.numpy(), rtol=1e-6)
    assert nn.Linear(5, 3, bias=False).bias is None
    assert list(nn.Linear(5, 3, bias=False).state_dict()) == ["weight"]


def test_gradcheck_through_a_sequential_mlp():
    db.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2),
                          nn.LeakyReLU(0.1))
    params = list(model.parameters())

    def f(x, *ps):
        return model(x)
    db.gradcheck(f, [t64(2, 3)] + params)


def test_activation_modules_match_their_functions():
    x = t64(2, 3)
    F = nn.functional
    for mod, fn in [(nn.ReLU(), F.relu), (nn.Sigmoid(), F.sigmoid), (nn.Tanh(), F.tanh),
                    (nn.Softmax(dim=0), lambda x: F.softmax(x, 0)), (nn.LogSoftmax(1), lambda x: F.log_softmax(x, 1)),
                    (nn.LeakyReLU(0.3), lambda x: F.leaky_relu(x, 0.3))]:
        np.testing.assert_array_equal(mod(x).numpy(), fn(x).numpy())
    np.testing.assert_array_equal(nn.Identity()(x).numpy(), x.numpy())
    assert nn.Flatten()(t64(2, 3, 4)).shape == (2, 12)


def test_shared_parameter_is_listed_once_and_gets_both_gradients():
    lin = nn.Linear(3, 3)
    m = nn.Sequential(lin, nn.Tanh(), lin)
    assert len(list(m.parameters())) == 2
    m(db.tensor(np.ones((1, 3)))).sum().backward()
    assert lin.weight.grad.shape == (3, 3)


def test_module_list_registers_its_modules():
    ml = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 1)])
    ml.append(nn.Linear(1, 1))
    assert len(ml) == 3 and isinstance(ml[2], nn.Linear)
    assert [n for n, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]


def test_train_eval_zero_grad_and_requires_grad_():
    m = TwoLayer()
    m.eval()
    assert not m.training and not m.fc1.training
    m.train()
    assert m.fc2.training
    m(db.tensor(np.ones((1, 4)))).sum().backward()
    assert m.fc1.weight.grad is not None
    m.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(m.fc1.weight.grad, 0)
    m.zero_grad()
    assert m.fc1.weight.grad is None
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())


def test_reassigning_and_deleting_attributes_updates_registration():
    m = TwoLayer()
    m.fc2 = nn.Linear(3, 5)
    assert m.state_dict()["fc2.weight"].shape == (5, 3) and "fc2.bias" in m.state_dict()
    m.fc2 = None  # replacing a module by a plain value unregisters it
    assert "fc2.weight" not in m.state_dict()
    del m.scale
    assert "scale" not in m.state_dict()
    m.count = np.ones(1)  # re-assigning a buffer keeps it a buffer
    np.testing.assert_array_equal(m.state_dict()["count"], [1.0])


def test_assigning_before_super_init_explains_the_fix():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_module_to_float64_casts_parameters_in_place():
    m = nn.Linear(2, 2)
    w = m.weight
    m.double()
    assert m.weight is w and w.dtype == np.float64
    assert m(db.tensor(np.ones((1, 2)))).dtype == np.float64


def test_missing_attribute_error_names_the_module():
    with pytest.raises(AttributeError, match="'Linear' object has no attribute 'nope'"):
        _ = nn.Linear(1, 1).nope


def test_replacing_a_submodule_keeps_its_place_in_the_order():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    setattr(model, "1", nn.Tanh())
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear"]
    assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    lin = model[0]
    lin.weight = nn.Parameter(np.zeros((3, 2), dtype=np.float32))
    assert list(dict(lin.named_parameters())) == ["weight", "bias"]


def test_calling_a_module_runs_its_forward_and_a_subclass_may_define_call():
    class Double(nn.Module):
        def forward(self, x):
            return x * 2

    class Triple(Double):  # inherits nothing to change: forward is overridden
        def forward(self, x):
            return x * 3

    class Logged(Double):  # its own __call__ wins over the forward shortcut
        def __call__(self, x):
            return self.forward(x) + 1

    x = db.tensor([1.0])
    assert Double()(x).item() == 2 and Triple()(x).item() == 3 and Logged()(x).item() == 3
    with pytest.raises(NotImplementedError):
        nn.Module()(x)


def test_a_forward_assigned_to_an_instance_is_what_calling_it_runs_as_in_torch():
    import copy
    lin, other = nn.Linear(2, 2), nn.Linear(2, 2)
    x = db.tensor(np.ones((1, 2), dtype=np.float32))
    original = lin.forward
    lin.forward = lambda inp: original(inp) * 0 + 7
    np.testing.assert_array_equal(lin(x).data, 7)
    assert type(lin) is nn.Linear  # no class swap: calling looks forward up on the instance
    assert list(lin.state_dict()) == ["weight", "bias"]
    np.testing.assert_array_equal(copy.deepcopy(lin)(x).data, 7)
    assert not np.all(other(x).data == 7)  # other instances of the class are untouched
    del lin.forward  # back to the class's forward
    np.testing.assert_allclose(lin(x).data, original(x).data)


def test_a_forward_assigned_to_the_class_later_is_what_calling_runs():
    class Double(nn.Module):
        def forward(self, x):
            return x * 2

    m = Double()
    x = db.tensor([1.0])
    assert m(x).item() == 2
    Double.forward = lambda self, x: x * 5
    assert m(x).item() == 5 and Double()(x).item() == 5


# ----- forward hooks: the same registrations on a distbp and a torch module give the same events -----

def _recorder(base, log):
    """A module class of library `base` whose forward(x, scale=1) logs its arguments."""

    class Rec(base):
        def forward(self, x, scale=1):
            log.append(("forward", float(x), scale))
            return x * scale

    return Rec


def _hook_scenario(lib):
    """Events of one run; `lib` is distbp or torch. Covers order, prepend, rewriting and remove."""
    log = []
    base, tensor = (nn.Module, db.tensor) if lib == "distbp" else (_torch().nn.Module, _torch().tensor)
    m = _recorder(base, log)()
    m.register_forward_pre_hook(lambda mod, args: log.append(("pre1", float(args[0]))))
    m.register_forward_pre_hook(lambda mod, args: args[0] + 1)  # a non-tuple: becomes (x + 1,)
    m.register_forward_pre_hook(lambda mod, args: log.append(("pre0", float(args[0]))), prepend=True)
    m.register_forward_pre_hook(lambda mod, args, kwargs: ((args[0] * 10,), {"scale": 2}), with_kwargs=True)
    h1 = m.register_forward_hook(lambda mod, args, out: log.append(("post1", float(args[0]), float(out))))
    m.register_forward_hook(lambda mod, args, out: out + 100)
    m.register_forward_hook(lambda mod, args, out: log.append(("post0", float(out))), prepend=True)
    m.register_forward_hook(lambda mod, args, kwargs, out: log.append(("kw", dict(kwargs), float(out))),
                            with_kwargs=True)
    log.append(("result", float(m(tensor([1.0])))))
    h1.remove()
    h1.remove()  # removing twice is harmless
    with m.register_forward_hook(lambda mod, args, out: log.append(("scoped", float(out)))):
        log.append(("result", float(m(tensor([2.0])))))
    log.append(("result", float(m(tensor([3.0]), scale=3))))
    return log


def _torch():
    from conftest import torch_or_skip
    return torch_or_skip()


def test_forward_hooks_run_in_torchs_order_and_rewrite_args_and_output_as_torchs():
    ours = _hook_scenario("distbp")
    assert ours == _hook_scenario("torch")
    assert ours[:7] == [("pre0", 1.0), ("pre1", 1.0), ("forward", 20.0, 2), ("post0", 40.0),
                        ("post1", 20.0, 40.0), ("kw", {"scale": 2}, 140.0), ("result", 140.0)]


@pytest.mark.parametrize("lib", ["distbp", "torch"])
def test_always_call_hook_runs_when_forward_raises_and_the_error_propagates(lib):
    seen = []

    class Boom(nn.Module if lib == "distbp" else _torch().nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    m = Boom()
    m.register_forward_hook(lambda mod, args, out: seen.append(("plain", out)))
    m.register_forward_hook(lambda mod, args, out: seen.append(("always", out)), always_call=True)
    m.register_forward_hook(lambda mod, args, out: 1 / 0, always_call=True)
    with pytest.warns(UserWarning, match="division by zero"), pytest.raises(ValueError, match="boom"):
        m(1.0)
    assert seen == [("always", None)]


def test_a_bad_with_kwargs_pre_hook_return_raises_torchs_error():
    m = nn.Identity()
    m.register_forward_pre_hook(lambda mod, args, kwargs: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match=r"tuple of \(new_args, new_kwargs\)"):
        m(db.tensor([1.0, 2.0, 3.0]))


def test_hooks_on_nested_modules_run_when_the_outer_module_is_called():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    names, shapes = [], {}

    def record(name):
        def hook(mod, args, out):
            names.append(name)
            shapes[name] = out.shape
        return hook

    for name, layer in model.named_modules():
        layer.register_forward_hook(record(name))
    handle = model[1].register_forward_hook(lambda mod, args, out: out * 0)  # zero the hidden layer
    out = model(db.tensor(np.ones((4, 2), dtype=np.float32)))
    assert names == ["0", "1", "2", ""] and shapes == {"0": (4, 3), "1": (4, 3), "2": (4, 1), "": (4, 1)}
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(model[2].bias.numpy(), (4, 1)))
    handle.remove()
    assert not np.allclose(model(db.tensor(np.ones((4, 2), dtype=np.float32))).numpy(), out.numpy())


def test_hooks_apply_to_a_forward_assigned_to_the_instance_and_gradients_flow_through_them():
    db.set_default_dtype(np.float64)
    lin = nn.Linear(3, 2)
    lin.forward = lambda x: x.sum(1, keepdim=True) * lin.weight.sum()
    lin.register_forward_pre_hook(lambda mod, args: args[0] * 2)
    lin.register_forward_hook(lambda mod, args, out: out + args[0].mean())
    x = t64(4, 3)
    want = (2 * x.numpy()).sum(1, keepdims=True) * lin.weight.numpy().sum() + (2 * x.numpy()).mean()
    np.testing.assert_allclose(lin(x).numpy(), want)
    assert db.gradcheck(lambda x, w: lin(x), [x, lin.weight])


def test_a_deep_copy_keeps_its_hooks_and_they_run_in_a_process_that_registered_none(monkeypatch):
    import copy
    import pickle

    from distbp.nn import module
    lin = nn.Linear(2, 2)
    lin.register_forward_hook(_zero_output)
    for clone in (copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))):
        monkeypatch.setattr(module, "_hooks_seen", False)  # as in a fresh process that only loads models
        twin = clone(lin)
        assert twin(db.tensor(np.ones((1, 2), dtype=np.float32))).numpy().tolist() == [[0.0, 0.0]]


def _zero_output(module, args, output):
    return output * 0
