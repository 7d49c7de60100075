"""RNN / GRU / LSTM: step-by-step NumPy references of PyTorch's equations, finite differences
through time (multi-layer, batch-first and sequence-first), names, init, and PyTorch itself."""
import math

import numpy as np
import pytest
from conftest import torch_or_skip

import distbp as db
from distbp import nn


def sig(a):
    return 1 / (1 + np.exp(-a))


def reference(kind, x, h0, c0, params, hidden):
    """One layer, sequence-first, straight from the PyTorch docs' equations."""
    w_ih, w_hh = params[0], params[1]
    b_ih, b_hh = (params[2], params[3]) if len(params) == 4 else (0, 0)
    h, c, outs = h0, c0, []
    for xt in x:
        gi, gh = xt @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if kind == "rnn":
            h = np.tanh(gi + gh)
        elif kind == "gru":
            r = sig(gi[:, :hidden] + gh[:, :hidden])
            z = sig(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
            n = np.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
            h = (1 - z) * n + z * h
        else:
            a = gi + gh
            i, f = sig(a[:, :hidden]), sig(a[:, hidden:2 * hidden])
            g, o = np.tanh(a[:, 2 * hidden:3 * hidden]), sig(a[:, 3 * hidden:])
            c = f * c + i * g
            h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h, c


CLASSES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("num_layers,batch_first", [(1, False), (2, True)])
def test_recurrent_output_matches_stepwise_numpy_reference(kind, num_layers, batch_first):
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](3, 4, num_layers=num_layers, batch_first=batch_first)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3))  # (T, B, I)
    h0, c0 = rng.standard_normal((num_layers, 2, 4)), rng.standard_normal((num_layers, 2, 4))
    xin = db.tensor(x.transpose(1, 0, 2) if batch_first else x)
    if kind == "lstm":
        out, (h_n, c_n) = m(xin, (db.tensor(h0), db.tensor(c0)))
    else:
        out, h_n = m(xin, db.tensor(h0))
    seq, hs, cs = x, [], []
    for k in range(num_layers):
        params = [getattr(m, f"{n}_l{k}").data for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        seq, h, c = reference(kind, seq, h0[k], c0[k], params, 4)
        hs.append(h)
        cs.append(c)
    got = out.numpy().transpose(1, 0, 2) if batch_first else out.numpy()
    np.testing.assert_allclose(got, seq, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), np.stack(hs), atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(c_n.numpy(), np.stack(cs), atol=1e-12)


GRAD_CASES = [
    # kind, num_layers, batch_first, with initial state, extra kwargs
    ("rnn", 1, False, False, {}),
    ("rnn", 2, True, True, {"nonlinearity": "relu"}),
    ("rnn", 1, False, True, {"bias": False}),
    ("gru", 1, False, True, {}),
    ("gru", 2, True, True, {}),
    ("gru", 1, True, False, {"bias": False}),
    ("lstm", 1, False, True, {}),
    ("lstm", 2, True, True, {}),
    ("lstm", 2, False, False, {"bias": False}),
]


@pytest.mark.parametrize("kind,num_layers,batch_first,with_state,kw", GRAD_CASES)
def test_recurrent_layers_match_gradcheck_through_time(kind, num_layers, batch_first, with_state, kw):
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](2, 3, num_layers=num_layers, batch_first=batch_first, **kw)
    rng = np.random.default_rng(1)
    x = db.tensor(rng.standard_normal((2, 4, 2) if batch_first else (4, 2, 2)), requires_grad=True)
    states = [db.tensor(rng.standard_normal((num_layers, 2, 3)), requires_grad=True)
              for _ in range(2 if kind == "lstm" else 1)] if with_state else []
    params = list(m.parameters())

    def fn(x, *rest):
        hx = None
        if with_state:
            hx = (rest[0], rest[1]) if kind == "lstm" else rest[0]
        out, h = m(x, hx)
        if kind == "lstm":
            h, c = h
            return db.cat([out.reshape(-1), h.reshape(-1), c.reshape(-1)])
        return db.cat([out.reshape(-1), h.reshape(-1)])

    assert db.gradcheck(fn, [x, *states, *params])


def test_recurrent_dropout_between_layers_matches_gradcheck_in_train_mode():
    db.set_default_dtype(np.float64)
    m = nn.GRU(2, 3, num_layers=2, dropout=0.5)
    x = db.tensor(np.random.default_rng(2).standard_normal((3, 2, 2)), requires_grad=True)

    def fn(x, *params):
        db.manual_seed(5)
        return m(x)[0]

    assert db.gradcheck(fn, [x, *m.parameters()])
    m.eval()  # no dropout: deterministic, and still differentiable
    out1, out2 = m(x)[0].numpy(), m(x)[0].numpy()
    np.testing.assert_array_equal(out1, out2)
    assert db.gradcheck(lambda x, *params: m(x)[0], [x, *m.parameters()])


@pytest.mark.parametrize("kind,gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_parameter_names_shapes_and_init_follow_pytorch(kind, gates):
    m = CLASSES[kind](5, 16, num_layers=2)
    names = [f"{n}_l{k}" for k in range(2) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(m.state_dict()) == names
    assert m.weight_ih_l0.shape == (gates * 16, 5) and m.weight_ih_l1.shape == (gates * 16, 16)
    assert m.weight_hh_l1.shape == (gates * 16, 16) and m.bias_hh_l0.shape == (gates * 16,)
    everything = np.concatenate([p.data.ravel() for p in m.parameters()])
    bound = 1 / math.sqrt(16)
    assert np.abs(everything).max() <= bound and np.abs(everything).max() > 0.95 * bound


def test_recurrent_shapes_and_errors():
    m = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    out, (h, c) = m(db.randn(5, 7, 3))
    assert out.shape == (5, 7, 4) and h.shape == (2, 5, 4) and c.shape == (2, 5, 4)
    with pytest.raises(ValueError, match="input_size=3"):
        m(db.randn(5, 7, 2))
    with pytest.raises(ValueError, match="h_0 of shape"):
        m(db.randn(5, 7, 3), (db.randn(1, 5, 4), db.randn(2, 5, 4)))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_recurrent_layers_match_torch_with_its_weights(kind):
    torch = torch_or_skip()
    tcls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    tm = tcls(3, 4, num_layers=2, batch_first=True).double()
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](3, 4, num_layers=2, batch_first=True)
    assert list(m.state_dict()) == list(tm.state_dict())
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(3).standard_normal((2, 5, 3))
    xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
    (ot, ht), (od, hd) = tm(xt), m(xd)
    if kind == "lstm":
        ht, hd = ht[1], hd[1]  # c_n
    ((ot ** 2).sum() + ht.sum()).backward()
    ((od * od).sum() + hd.sum()).backward()
    np.testing.assert_allclose(od.numpy(), ot.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(hd.numpy(), ht.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-10)
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), atol=1e-10, err_msg=name)
