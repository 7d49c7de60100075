"""RNN (tanh/relu), LSTM and GRU, optionally bidirectional, with PyTorch's parameter names, gate
order, init and returns."""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Tensor
from ..ops import cat, getitem, permute, squeeze, stack, unsqueeze
from ..ops.rnn import gru_layer, lstm_layer, rnn_layer
from . import init
from .dropout import dropout
from .module import Module, empty_parameter


def _flip(x):
    """x reversed along time (axis 0): the reverse direction is the forward one run on this."""
    return getitem(x, slice(None, None, -1))


class _RNNBase(Module):
    """Stacked recurrent layers, optionally bidirectional. Parameters per layer k, registered in
    PyTorch's order: weight_ih_lk (G*H, in), weight_hh_lk (G*H, H), bias_ih_lk, bias_hh_lk (G*H,),
    then the same with the suffix _reverse when bidirectional; G is the number of gates (1 RNN,
    3 GRU r,z,n, 4 LSTM i,f,g,o) and `in` is input_size for k = 0, else H times the directions."""

    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 dtype=None):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"input_size, hidden_size and num_layers must be positive, got {input_size}, "
                             f"{hidden_size}, {num_layers}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        g = self._gates * hidden_size
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size * self.num_directions
            for sfx in self._suffixes():
                setattr(self, f"weight_ih_l{k}{sfx}", empty_parameter(g, n_in, dtype=dtype))
                setattr(self, f"weight_hh_l{k}{sfx}", empty_parameter(g, hidden_size, dtype=dtype))
                if bias:
                    setattr(self, f"bias_ih_l{k}{sfx}", empty_parameter(g, dtype=dtype))
                    setattr(self, f"bias_hh_l{k}{sfx}", empty_parameter(g, dtype=dtype))
        self.reset_parameters()

    def _suffixes(self):
        return ("", "_reverse")[:self.num_directions]

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():  # torch: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
            init.uniform_(p, -bound, bound)

    def _layer_params(self, k, sfx=""):
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        return [getattr(self, f"{n}_l{k}{sfx}") for n in names]

    def _check_input(self, x):
        if x.shape[2] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[2]} features, expected input_size="
                             f"{self.input_size}")
        return permute(x, 1, 0, 2) if self.batch_first else x

    def _initial(self, state, x, name):
        """Per (layer, direction) initial states, in torch's order l0, l0_reverse, l1, ..."""
        n = self.num_layers * self.num_directions
        shape = (n, x.shape[1], self.hidden_size)
        if state is None:
            xp = backend.get_array_module(x.data)
            return [xp.zeros(shape[1:], dtype=x.dtype)] * n
        if tuple(state.shape) != shape:
            raise ValueError(f"{type(self).__name__}: expected {name} of shape {shape}, "
                             f"got {tuple(state.shape)}")
        if isinstance(state, Tensor):
            return [getitem(state, i) for i in range(n)]
        return [state[i] for i in range(n)]

    def _layer(self, x, states, params):
        """One direction of one layer on sequence-first x: (output (T, B, H), final states)."""
        raise NotImplementedError

    def _run(self, x, states):
        """Every layer and direction on sequence-first x. `states` holds one _initial list per kind
        of state (h, or h and c); returns the output and each kind's stacked final states."""
        out, finals = x, []
        for k in range(self.num_layers):
            if k:  # dropout on each layer's output except the last, as torch's `dropout` argument;
                # out is (T, B, H) here, so samples are axis 1 (each one's mask keyed by its index)
                out = dropout(out, self.dropout, True, batch_axis=1) if self.dropout and self.training else out
            outs = []
            for d, sfx in enumerate(self._suffixes()):
                i = k * self.num_directions + d
                y, last = self._layer(_flip(out) if d else out, [s[i] for s in states],
                                      self._layer_params(k, sfx))
                outs.append(_flip(y) if d else y)
                finals.append(last)
            out = cat(outs, dim=2) if len(outs) > 1 else y  # features: forward's H, then reverse's
        out = permute(out, 1, 0, 2) if self.batch_first else out
        return out, [stack(list(kind)) for kind in zip(*finals)]

    def _forward(self, x, states, names):
        """Checks, initial states and _run. `states`: each kind's initial state (h, or h and c), a
        tensor or None. PyTorch's unbatched input (L, H_in), with states (layers * directions, H), runs
        as a batch of one: the batch axis is added and removed by (differentiable) reshapes."""
        if x.ndim not in (2, 3):
            layout = "batch, seq" if self.batch_first else "seq, batch"
            raise ValueError(f"{type(self).__name__} expects a 3-D input ({layout}, feature) or an unbatched "
                             f"2-D one (seq, feature), got shape {tuple(x.shape)}")
        for s, name in zip(states, names):
            if s is not None and s.ndim != x.ndim:
                kind = "unbatched 2-D" if x.ndim == 2 else "batched 3-D"
                raise ValueError(f"{type(self).__name__}: for {kind} input, {name} should also be {x.ndim}-D, "
                                 f"got shape {tuple(s.shape)}")
        unbatched, batch_dim = x.ndim == 2, 0 if self.batch_first else 1
        if unbatched:
            x, states = unsqueeze(x, batch_dim), [None if s is None else unsqueeze(s, 1) for s in states]
        x = self._check_input(x)
        out, finals = self._run(x, [self._initial(s, x, name) for s, name in zip(states, names)])
        if unbatched:
            out, finals = squeeze(out, batch_dim), [squeeze(f, 1) for f in finals]
        return out, finals

    def forward(self, x, hx=None):
        """RNN and GRU: one state, h. Returns (output, h_n)."""
        out, (h_n,) = self._forward(x, [hx], ["hx"])
        return out, h_n

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}" + (", bidirectional=True" if self.bidirectional else ""))


class RNN(_RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh). Returns (output, h_n)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'; use 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, dtype)
        self.nonlinearity = nonlinearity

    def _layer(self, x, states, params):
        out, h_n = rnn_layer(x, *states, *params, nonlinearity=self.nonlinearity)
        return out, [h_n]


class GRU(_RNNBase):
    """PyTorch's GRU (gates r, z, n). Returns (output, h_n)."""

    _gates = 3

    def _layer(self, x, states, params):
        out, h_n = gru_layer(x, *states, *params)
        return out, [h_n]


class LSTM(_RNNBase):
    """PyTorch's LSTM (gates i, f, g, o). Returns (output, (h_n, c_n))."""

    _gates = 4

    def _layer(self, x, states, params):
        out, h_n, c_n = lstm_layer(x, *states, *params)
        return out, [h_n, c_n]

    def forward(self, x, hx=None):
        out, (h_n, c_n) = self._forward(x, [None, None] if hx is None else list(hx), ["h_0", "c_0"])
        return out, (h_n, c_n)
