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
@pytest.mark.parametrize("num_layers,batch_first,bidirectional", [(1, False, False), (2, True, False),
                                                                  (1, True, True), (2, False, True)])
def test_recurrent_output_matches_stepwise_numpy_reference(kind, num_layers, batch_first, bidirectional):
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](3, 4, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional)
    nd = 2 if bidirectional else 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 3))  # (T, B, I)
    h0, c0 = rng.standard_normal((num_layers * nd, 2, 4)), rng.standard_normal((num_layers * nd, 2, 4))
    xin = db.tensor(x.transpose(1, 0, 2) if batch_first else x)
    if kind == "lstm":
        out, (h_n, c_n) = m(xin, (db.tensor(h0), db.tensor(c0)))
    else:
        out, h_n = m(xin, db.tensor(h0))
    seq, hs, cs = x, [], []
    for k in range(num_layers):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][:nd]):  # the reverse direction reads time backwards
            params = [getattr(m, f"{n}_l{k}{sfx}").data for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            o, h, c = reference(kind, seq[::-1] if d else seq, h0[k * nd + d], c0[k * nd + d], params, 4)
            outs.append(o[::-1] if d else o)
            hs.append(h)
            cs.append(c)
        seq = np.concatenate(outs, axis=2)
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


def gradcheck_module(kind, m, seq, batch, with_state):
    """gradcheck of output, h_n (and c_n) w.r.t. input, initial states and every parameter."""
    rng = np.random.default_rng(1)
    shape = (batch, seq, m.input_size) if m.batch_first else (seq, batch, m.input_size)
    x = db.tensor(rng.standard_normal(shape), requires_grad=True)
    n_states = m.num_layers * (2 if m.bidirectional else 1)
    states = [db.tensor(rng.standard_normal((n_states, batch, m.hidden_size)), requires_grad=True)
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


@pytest.mark.parametrize("kind,num_layers,batch_first,with_state,kw", GRAD_CASES)
def test_recurrent_layers_match_gradcheck_through_time(kind, num_layers, batch_first, with_state, kw):
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](2, 3, num_layers=num_layers, batch_first=batch_first, **kw)
    gradcheck_module(kind, m, seq=4, batch=2, with_state=with_state)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_bidirectional_layers_match_gradcheck_through_time(kind, batch_first):
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](3, 4, num_layers=2, batch_first=batch_first, bidirectional=True)
    gradcheck_module(kind, m, seq=5, batch=2, with_state=True)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_dropout_between_layers_matches_gradcheck_in_train_mode(bidirectional):
    db.set_default_dtype(np.float64)
    m = nn.GRU(2, 3, num_layers=2, dropout=0.5, bidirectional=bidirectional)
    x = db.tensor(np.random.default_rng(2).standard_normal((3, 2, 2)), requires_grad=True)

    def fn(x, *params):
        db.manual_seed(5)
        return m(x)[0]

    assert db.gradcheck(fn, [x, *m.parameters()])
    m.eval()  # no dropout: deterministic, and still differentiable
    out1, out2 = m(x)[0].numpy(), m(x)[0].numpy()
    np.testing.assert_array_equal(out1, out2)
    assert db.gradcheck(lambda x, *params: m(x)[0], [x, *m.parameters()])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_dropout_is_one_mask_on_each_layers_whole_output(bidirectional):
    """Train mode equals layer 0, then dropout of its (T, B, D*H) output, then layer 1, each layer a
    one-layer module with the same weights: the directions above share the dropped input."""
    db.set_default_dtype(np.float64)
    m = nn.GRU(2, 3, num_layers=2, dropout=0.5, bidirectional=bidirectional)
    layers = [nn.GRU(n_in, 3, bidirectional=bidirectional) for n_in in (2, 3 * m.num_directions)]
    for k, layer in enumerate(layers):
        layer.load_state_dict({name: m.state_dict()[name.replace("_l0", f"_l{k}")] for name in layer.state_dict()})
    x = db.tensor(np.random.default_rng(2).standard_normal((3, 2, 2)))
    db.manual_seed(5)
    got = m(x)[0].numpy()
    db.manual_seed(5)
    want = layers[1](nn.functional.dropout(layers[0](x)[0], 0.5, batch_axis=1))[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-14)
    assert not np.allclose(got, m.eval()(x)[0].numpy())  # the mask did drop something


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


@pytest.mark.parametrize("kind,gates", [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_bidirectional_parameter_names_shapes_and_init_follow_pytorch(kind, gates):
    m = CLASSES[kind](5, 16, num_layers=2, bidirectional=True)
    names = [f"{n}_l{k}{sfx}" for k in range(2) for sfx in ("", "_reverse")
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert list(m.state_dict()) == names  # torch's order: layer by layer, forward then reverse
    assert m.weight_ih_l0_reverse.shape == (gates * 16, 5)
    assert m.weight_ih_l1.shape == m.weight_ih_l1_reverse.shape == (gates * 16, 32)  # both directions in
    assert m.weight_hh_l1_reverse.shape == (gates * 16, 16) and m.bias_ih_l1_reverse.shape == (gates * 16,)
    everything = np.concatenate([p.data.ravel() for p in m.parameters()])
    bound = 1 / math.sqrt(16)
    assert np.abs(everything).max() <= bound and np.abs(everything).max() > 0.95 * bound
    assert "bidirectional=True" in repr(m) and "bidirectional" not in repr(CLASSES[kind](5, 16))


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_bidirectional_state_dict_keys_match_torch(kind):
    torch = torch_or_skip()
    tcls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    tm = tcls(3, 4, 2, bidirectional=True)
    m = CLASSES[kind](3, 4, 2, bidirectional=True)
    assert list(m.state_dict()) == list(tm.state_dict())
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: tuple(v.shape) for k, v in tm.state_dict().items()}


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
    with pytest.raises(TypeError, match="proj_size"):  # LSTM projections are not implemented
        nn.LSTM(3, 4, proj_size=2)


def test_bidirectional_shapes_and_errors():
    m = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    out, (h, c) = m(db.randn(5, 7, 3))
    assert out.shape == (5, 7, 8) and h.shape == (4, 5, 4) and c.shape == (4, 5, 4)
    with pytest.raises(ValueError, match=r"h_0 of shape \(4, 5, 4\)"):
        m(db.randn(5, 7, 3), (db.randn(2, 5, 4), db.randn(4, 5, 4)))
    out, h = nn.GRU(3, 4, bidirectional=True)(db.randn(7, 5, 3), db.randn(2, 5, 4))
    assert out.shape == (7, 5, 8) and h.shape == (2, 5, 4)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("batch_first,bidirectional", [(True, False), (True, True), (False, True)])
def test_recurrent_layers_match_torch_with_its_weights(kind, batch_first, bidirectional):
    torch = torch_or_skip()
    tcls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    tm = tcls(3, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional).double()
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](3, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    assert list(m.state_dict()) == list(tm.state_dict())
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3) if batch_first else (5, 2, 3))
    states = [rng.standard_normal((4 if bidirectional else 2, 2, 4)) for _ in range(2 if kind == "lstm" else 1)]
    xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    sd = [db.tensor(s, requires_grad=True) for s in states]
    (ot, ht), (od, hd) = (tm(xt, tuple(st)), m(xd, tuple(sd))) if kind == "lstm" else (tm(xt, *st), m(xd, *sd))
    finals = [(ht, hd)] if kind != "lstm" else list(zip(ht, hd))  # h_n, and c_n for LSTM
    ((ot ** 2).sum() + sum(t.sum() for t, _ in finals)).backward()
    ((od * od).sum() + sum(d.sum() for _, d in finals)).backward()
    np.testing.assert_allclose(od.numpy(), ot.detach().numpy(), atol=1e-12)
    for t, d in finals:
        np.testing.assert_allclose(d.numpy(), t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-10)
    for t, d in zip(st, sd):
        np.testing.assert_allclose(d.grad, t.grad.numpy(), atol=1e-10)
    tparams = dict(tm.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), atol=1e-10, err_msg=name)


# unbatched input (L, H_in) with states (num_layers * directions, H), whatever batch_first says
UNBATCHED = [  # kind, num_layers, batch_first, bidirectional
    ("rnn", 2, False, False), ("gru", 1, True, True), ("lstm", 2, True, False), ("lstm", 1, False, True),
]


def _unbatched_run(kind, m, x, states):
    """(output, h_n[, c_n]) of m on x with initial states (None: zeros)."""
    if kind == "lstm":
        out, (h, c) = m(x, None if states is None else tuple(states))
        return out, h, c
    return m(x, None if states is None else states[0])


@pytest.mark.parametrize("kind,num_layers,batch_first,bidirectional", UNBATCHED)
def test_unbatched_recurrent_input_matches_gradcheck_and_a_batch_of_one(kind, num_layers, batch_first,
                                                                        bidirectional):
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](2, 3, num_layers=num_layers, batch_first=batch_first, bidirectional=bidirectional)
    rng = np.random.default_rng(6)
    n = num_layers * (2 if bidirectional else 1)
    x = db.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    states = [db.tensor(rng.standard_normal((n, 3)), requires_grad=True) for _ in range(2 if kind == "lstm" else 1)]

    def fn(x, *states_and_params):
        outs = _unbatched_run(kind, m, x, states_and_params[:len(states)])
        return db.cat([o.reshape(-1) for o in outs])

    assert db.gradcheck(fn, [x, *states, *m.parameters()])
    for s in (states, None):
        got = _unbatched_run(kind, m, x, s)
        xb = db.tensor(x.data[None] if batch_first else x.data[:, None])
        want = _unbatched_run(kind, m, xb, None if s is None else [db.tensor(t.data[:, None]) for t in s])
        assert got[0].shape == (4, 3 * (2 if bidirectional else 1)) and got[1].shape == (n, 3)
        np.testing.assert_array_equal(got[0].numpy(), want[0].numpy()[0 if batch_first else slice(None)]
                                      .reshape(got[0].shape))
        for g, w in zip(got[1:], want[1:]):
            np.testing.assert_array_equal(g.numpy(), w.numpy()[:, 0])


def test_unbatched_recurrent_input_errors():
    with pytest.raises(ValueError, match="for unbatched 2-D input, hx should also be 2-D"):
        nn.GRU(2, 3)(db.randn(4, 2), db.randn(1, 1, 3))
    with pytest.raises(ValueError, match="for batched 3-D input, c_0 should also be 3-D"):
        nn.LSTM(2, 3)(db.randn(4, 1, 2), (db.randn(1, 1, 3), db.randn(1, 3)))
    with pytest.raises(ValueError, match=r"expected h_0 of shape \(2, 1, 3\)"):
        nn.LSTM(2, 3, bidirectional=True)(db.randn(4, 2), (db.randn(1, 3), db.randn(2, 3)))
    with pytest.raises(ValueError, match="got shape"):
        nn.RNN(2, 3)(db.randn(4))


@pytest.mark.parametrize("kind,num_layers,batch_first,bidirectional", UNBATCHED)
def test_unbatched_recurrent_input_matches_torch_with_its_weights(kind, num_layers, batch_first, bidirectional):
    torch = torch_or_skip()
    tcls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    kw = {"num_layers": num_layers, "batch_first": batch_first, "bidirectional": bidirectional}
    tm = tcls(3, 4, **kw).double()
    db.set_default_dtype(np.float64)
    m = CLASSES[kind](3, 4, **kw)
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3))
    states = [rng.standard_normal((num_layers * (2 if bidirectional else 1), 4))
              for _ in range(2 if kind == "lstm" else 1)]
    for with_state in (True, False):
        xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
        st = [torch.tensor(s, requires_grad=True) for s in states]
        sd = [db.tensor(s, requires_grad=True) for s in states]
        ot, *ft = _unbatched_run(kind, tm, xt, st if with_state else None)
        od, *fd = _unbatched_run(kind, m, xd, sd if with_state else None)
        ((ot ** 2).sum() + sum((f ** 3).sum() for f in ft)).backward()
        ((od * od).sum() + sum((f * f * f).sum() for f in fd)).backward()
        for d, t in [(od, ot), *zip(fd, ft)]:
            assert d.shape == tuple(t.shape)
            np.testing.assert_allclose(d.numpy(), t.detach().numpy(), atol=1e-10)
        np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-10)
        if with_state:
            for d, t in zip(sd, st):
                np.testing.assert_allclose(d.grad, t.grad.numpy(), atol=1e-10)
        tparams = dict(tm.named_parameters())
        for name, p in m.named_parameters():
            np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), atol=1e-10, err_msg=name)
            p.grad, tparams[name].grad = None, None
