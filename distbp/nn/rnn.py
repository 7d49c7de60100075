"""RNN (tanh/relu), LSTM and GRU with PyTorch's parameter names, gate order, init and returns."""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Tensor
from ..ops import getitem, permute, stack
from ..ops.rnn import gru_layer, lstm_layer, rnn_layer
from . import init
from .dropout import dropout
from .linear import empty_parameter
from .module import Module


class _RNNBase(Module):
    """Stacked unidirectional recurrent layers. Parameters per layer k, registered in PyTorch's
    order: weight_ih_lk (G*H, in), weight_hh_lk (G*H, H), bias_ih_lk, bias_hh_lk (G*H,), where G
    is the number of gates (1 RNN, 3 GRU r,z,n, 4 LSTM i,f,g,o)."""

    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, dtype=None):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError(f"input_size, hidden_size and num_layers must be positive, got {input_size}, "
                             f"{hidden_size}, {num_layers}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in range [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        g = self._gates * hidden_size
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", empty_parameter(g, n_in, dtype=dtype))
            setattr(self, f"weight_hh_l{k}", empty_parameter(g, hidden_size, dtype=dtype))
            if bias:
                setattr(self, f"bias_ih_l{k}", empty_parameter(g, dtype=dtype))
                setattr(self, f"bias_hh_l{k}", empty_parameter(g, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():  # torch: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
            init.uniform_(p, -bound, bound)

    def _layer_params(self, k):
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        return [getattr(self, f"{n}_l{k}") for n in names]

    def _check_input(self, x):
        if x.ndim != 3:
            layout = "batch, seq" if self.batch_first else "seq, batch"
            raise ValueError(f"{type(self).__name__} expects a 3-D input ({layout}, feature), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[2]} features, expected input_size="
                             f"{self.input_size}")
        return permute(x, 1, 0, 2) if self.batch_first else x

    def _initial(self, state, x, name):
        bsz = x.shape[1]
        shape = (self.num_layers, bsz, self.hidden_size)
        if state is None:
            xp = backend.get_array_module(x.data)
            return [xp.zeros(shape[1:], dtype=x.dtype)] * self.num_layers
        if tuple(state.shape) != shape:
            raise ValueError(f"{type(self).__name__}: expected {name} of shape {shape}, "
                             f"got {tuple(state.shape)}")
        if isinstance(state, Tensor):
            return [getitem(state, k) for k in range(self.num_layers)]
        return [state[k] for k in range(self.num_layers)]

    def _between_layers(self, out):
        # dropout on each layer's output except the last, as torch's `dropout` argument
        return dropout(out, self.dropout, True) if self.dropout and self.training else out

    def _output(self, out):
        return permute(out, 1, 0, 2) if self.batch_first else out

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}")


class RNN(_RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh). Returns (output, h_n)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'; use 'tanh' or 'relu'")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, x, hx=None):
        x = self._check_input(x)
        h0 = self._initial(hx, x, "hx")
        out, h_n = x, []
        for k in range(self.num_layers):
            out = rnn_layer(self._between_layers(out) if k else out, h0[k], *self._layer_params(k),
                            nonlinearity=self.nonlinearity)
            h_n.append(getitem(out, -1))
        return self._output(out), stack(h_n)


class GRU(_RNNBase):
    """PyTorch's GRU (gates r, z, n). Returns (output, h_n)."""

    _gates = 3

    def forward(self, x, hx=None):
        x = self._check_input(x)
        h0 = self._initial(hx, x, "hx")
        out, h_n = x, []
        for k in range(self.num_layers):
            out = gru_layer(self._between_layers(out) if k else out, h0[k], *self._layer_params(k))
            h_n.append(getitem(out, -1))
        return self._output(out), stack(h_n)


class LSTM(_RNNBase):
    """PyTorch's LSTM (gates i, f, g, o). Returns (output, (h_n, c_n))."""

    _gates = 4

    def forward(self, x, hx=None):
        x = self._check_input(x)
        h0 = self._initial(None if hx is None else hx[0], x, "h_0")
        c0 = self._initial(None if hx is None else hx[1], x, "c_0")
        out, h_n, c_n = x, [], []
        for k in range(self.num_layers):
            y = lstm_layer(self._between_layers(out) if k else out, h0[k], c0[k], *self._layer_params(k))
            out = getitem(y, (slice(None), 0))   # y: (T, 2, B, H), h_t at [t, 0], c_t at [t, 1]
            h_n.append(getitem(y, (-1, 0)))
            c_n.append(getitem(y, (-1, 1)))
        return self._output(out), (stack(h_n), stack(c_n))
