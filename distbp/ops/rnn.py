"""Recurrent layers as fused Functions: one node per layer over ALL time steps.

Each Function takes a sequence-first input x (T, B, I), the initial state, and PyTorch's weights
(w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,), gates stacked in PyTorch's order). The input
projection of every step is one matmul before the loop; the loop does only the hidden-hidden
product and the gate arithmetic, into preallocated arrays. Backward through time is one reverse
loop that stores each step's pre-activation gradients, then the weight gradients are again one
matmul each over all steps. A bidirectional layer's reverse direction is the same Function run
on the time-reversed sequence (nn.rnn flips its input and output), so these run forward in time only.

Each is a multi-output Function: the output sequence (T, B, H) and the final state(s) h_n (and c_n),
each (B, H). backward receives one gradient per output (zeros for an output nothing used).
"""
from __future__ import annotations

import numpy

from ..autograd import Function
from ..backend import get_array_module


class RNNLayer(Function):
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu. Outputs: the sequence
    (T, B, H) and h_n (B, H)."""

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
        xp = get_array_module(x)
        nt, bsz, n_in = x.shape
        self.has_bias = b_ih is not None
        out = (x.reshape(nt * bsz, n_in) @ w_ih.T).reshape(nt, bsz, -1)
        if b_ih is not None:
            out += b_ih + b_hh
        h, whh_t = h0, w_hh.T
        for t in range(nt):  # each step overwrites its slice of the input projection with h_t
            a = out[t]
            a += h @ whh_t
            if nonlinearity == "tanh":
                xp.tanh(a, out=a)
            else:
                xp.maximum(a, 0, out=a)
            h = a
        self.x, self.h0, self.out, self.w_ih, self.w_hh = x, h0, out, w_ih, w_hh
        self.tanh = nonlinearity == "tanh"
        return out, out[-1].copy()

    def backward(self, gy, gh_n):
        xp = get_array_module(gy)
        out, w_hh, x = self.out, self.w_hh, self.x
        nt, bsz, n_in = x.shape
        da = xp.empty_like(out)  # gradient of each step's pre-activation
        dh = gh_n.copy()  # the gradient reaching h_t from later steps and h_n (never gh_n itself: not ours)
        for t in range(nt - 1, -1, -1):
            dh += gy[t]
            d = da[t]
            if self.tanh:
                xp.multiply(out[t], out[t], out=d)
                xp.subtract(1, d, out=d)
                d *= dh
            else:
                xp.multiply(dh, out[t] > 0, out=d)
            dh = d @ w_hh
        need = self.needs_input_grad
        flat = da.reshape(nt * bsz, -1)
        gx = gw_ih = gw_hh = None
        if need[0]:
            gx = (flat @ self.w_ih).reshape(x.shape)
        if need[2]:
            gw_ih = flat.T @ x.reshape(nt * bsz, n_in)
        if need[3]:
            hprev = xp.concatenate([self.h0[None], out[:-1]]) if nt > 1 else self.h0[None]
            gw_hh = flat.T @ hprev.reshape(nt * bsz, -1)
        gh0 = dh if need[1] else None
        if self.has_bias:
            return gx, gh0, gw_ih, gw_hh, *_both_biases(flat.sum(axis=0) if need[4] or need[5] else None, need[4:])
        return gx, gh0, gw_ih, gw_hh


def _both_biases(gb, needs):
    """The gradients of b_ih and b_hh, which are equal (both add to the same pre-activation): one
    array each, since a Function returns a distinct array per input (no two leaves share one)."""
    need_ih, need_hh = needs
    return (gb if need_ih else None), ((gb.copy() if need_ih else gb) if need_hh else None)


def _sigmoid_of_negated_(xp, neg_a, b) -> None:
    """neg_a <- sigmoid(-neg_a + b) in place: neg_a holds -a (the input part of a gate, stored
    negated) and b is the hidden part, so s(a + b) = 1 / (1 + exp(neg_a - b)) in three in-place ops."""
    neg_a -= b
    xp.exp(neg_a, out=neg_a)
    neg_a += 1
    xp.reciprocal(neg_a, out=neg_a)


class GRULayer(Function):
    """PyTorch's GRU: r = s(W_ir x + b_ir + W_hr h + b_hr), z = s(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h. Outputs: the sequence
    (T, B, H) and h_n (B, H).

    NOTE: gates are kept gate-major, (3, T, B, H), so every per-step elementwise op runs on
    contiguous (B, H) blocks (strided slices of a (B, 3H) row were ~3x slower per op), and r and z
    are stored NEGATED before the sigmoid so that s = 1 / (1 + exp(-a)) costs three in-place ops."""

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
        xp = get_array_module(x)
        nt, bsz, n_in = x.shape
        hid = w_hh.shape[1]
        self.has_bias = b_ih is not None
        w_ih3 = w_ih.reshape(3, hid, n_in)
        w_hh3t = w_hh.reshape(3, hid, hid).transpose(0, 2, 1)  # (3, H_in, H_out): h @ w_hh3t[k]
        gates = xp.matmul(x.reshape(1, nt * bsz, n_in), w_ih3.transpose(0, 2, 1)).reshape(3, nt, bsz, hid)
        if b_ih is not None:
            gates += b_ih.reshape(3, 1, 1, hid)
            gates[:2] += b_hh[:2 * hid].reshape(2, 1, 1, hid)  # r, z add b_hh outside the product
            b_hn = b_hh[2 * hid:]
        xp.negative(gates[:2], out=gates[:2])
        out = xp.empty((nt, bsz, hid), dtype=x.dtype)
        hn_all = xp.empty_like(out)  # W_hn h + b_hn, needed for r's gradient
        gh = xp.empty((3, bsz, hid), dtype=x.dtype)
        tmp = xp.empty((bsz, hid), dtype=x.dtype)
        h = h0
        with numpy.errstate(over="ignore"):  # exp(-a) may overflow to inf: s(a) is then exactly 0
            for t in range(nt):
                xp.matmul(h, w_hh3t, out=gh)
                _sigmoid_of_negated_(xp, gates[:2, t], gh[:2])
                r, z, n, hn = gates[0, t], gates[1, t], gates[2, t], hn_all[t]
                if b_ih is not None:
                    xp.add(gh[2], b_hn, out=hn)
                else:
                    hn[...] = gh[2]
                xp.multiply(r, hn, out=tmp)
                n += tmp
                xp.tanh(n, out=n)
                ht = out[t]
                xp.subtract(h, n, out=ht)
                ht *= z
                ht += n
                h = ht
        self.x, self.h0, self.out, self.gates, self.hn_all = x, h0, out, gates, hn_all
        self.w_ih3, self.w_hh3 = w_ih3, w_hh.reshape(3, hid, hid)
        return out, out[-1].copy()

    def backward(self, gy, gh_n):
        xp = get_array_module(gy)
        out, gates, hn_all, w_hh3 = self.out, self.gates, self.hn_all, self.w_hh3
        nt, bsz, hid = out.shape
        dgh = xp.empty_like(gates)    # gradient of (h W_hh^T + b_hh), gate-major, per step
        dn_all = xp.empty_like(out)   # gradient of n's pre-activation (= of W_in x + b_in)
        dh = gh_n.copy()
        tmp = xp.empty_like(dh)
        rec = xp.empty((3, bsz, hid), dtype=gy.dtype)
        for t in range(nt - 1, -1, -1):
            dh += gy[t]
            r, z, n, hn = gates[0, t], gates[1, t], gates[2, t], hn_all[t]
            hprev = out[t - 1] if t else self.h0
            dr, dz, dhn, dn = dgh[0, t], dgh[1, t], dgh[2, t], dn_all[t]
            xp.subtract(1, z, out=tmp)
            tmp *= dh                        # dh * (1 - z)
            xp.multiply(n, n, out=dn)
            xp.subtract(1, dn, out=dn)
            dn *= tmp                        # dn = dh (1 - z)(1 - n^2)
            xp.subtract(hprev, n, out=dz)
            dz *= z
            dz *= tmp                        # dz = dh (h - n) z (1 - z)
            xp.multiply(dn, r, out=dhn)      # d(W_hn h + b_hn) = dn r
            xp.subtract(1, r, out=dr)
            dr *= hn
            dr *= dhn                        # dr = dn hn r (1 - r)
            dh *= z
            xp.matmul(dgh[:, t], w_hh3, out=rec)
            dh += rec[0]
            dh += rec[1]
            dh += rec[2]
        need = self.needs_input_grad
        x, w_ih3 = self.x, self.w_ih3
        n_in = x.shape[2]
        flat = dgh.reshape(3, nt * bsz, hid)
        gw_ih = gw_hh = gb_ih = gb_hh = gx = None
        if need[3]:
            hprev = xp.concatenate([self.h0[None], out[:-1]]) if nt > 1 else self.h0[None]
            gw_hh = xp.matmul(flat.transpose(0, 2, 1), hprev.reshape(1, nt * bsz, hid)).reshape(3 * hid, hid)
        if self.has_bias and need[5]:
            gb_hh = flat.sum(axis=1).reshape(-1)
        dgh[2] = dn_all  # now the gradient of the input projection (x W_ih^T + b_ih)
        if need[0]:
            gx = xp.matmul(flat, w_ih3).sum(axis=0).reshape(x.shape)
        if need[2]:
            gw_ih = xp.matmul(flat.transpose(0, 2, 1), x.reshape(1, nt * bsz, n_in)).reshape(3 * hid, n_in)
        if self.has_bias and need[4]:
            gb_ih = flat.sum(axis=1).reshape(-1)
        gh0 = dh if need[1] else None
        if self.has_bias:
            return gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh
        return gx, gh0, gw_ih, gw_hh


class LSTMLayer(Function):
    """PyTorch's LSTM, gates i, f, g, o: c' = f * c + i * g, h' = o * tanh(c'). Outputs: the sequence
    (T, B, H), h_n and c_n (B, H). As in GRULayer the gates are kept gate-major, here reordered to i, f, o, g so the three sigmoid gates are one block, stored negated
    before the sigmoid (s = 1 / (1 + exp(-a)) in three in-place ops)."""

    ORDER = (0, 1, 3, 2)  # storage order i, f, o, g  <-  PyTorch's i, f, g, o

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
        xp = get_array_module(x)
        nt, bsz, n_in = x.shape
        hid = w_hh.shape[1]
        order = list(self.ORDER)
        self.has_bias = b_ih is not None
        w_ih4 = w_ih.reshape(4, hid, n_in)[order]
        w_hh4 = w_hh.reshape(4, hid, hid)[order]
        gates = xp.matmul(x.reshape(1, nt * bsz, n_in), w_ih4.transpose(0, 2, 1)).reshape(4, nt, bsz, hid)
        if b_ih is not None:
            gates += (b_ih + b_hh).reshape(4, 1, 1, hid)[order]
        xp.negative(gates[:3], out=gates[:3])
        out = xp.empty((nt, bsz, hid), dtype=x.dtype)
        c_all = xp.empty_like(out)
        tc_all = xp.empty((nt, bsz, hid), dtype=x.dtype)
        gh = xp.empty((4, bsz, hid), dtype=x.dtype)
        tmp = xp.empty((bsz, hid), dtype=x.dtype)
        w_hh4t = w_hh4.transpose(0, 2, 1)
        h, c = h0, c0
        with numpy.errstate(over="ignore"):  # exp(-a) may overflow to inf: s(a) is then exactly 0
            for t in range(nt):
                xp.matmul(h, w_hh4t, out=gh)
                _sigmoid_of_negated_(xp, gates[:3, t], gh[:3])
                i, f, o, g = gates[0, t], gates[1, t], gates[2, t], gates[3, t]
                g += gh[3]
                xp.tanh(g, out=g)
                ct, ht, tc = c_all[t], out[t], tc_all[t]
                xp.multiply(f, c, out=ct)
                xp.multiply(i, g, out=tmp)
                ct += tmp
                xp.tanh(ct, out=tc)
                xp.multiply(o, tc, out=ht)
                h, c = ht, ct
        self.x, self.h0, self.c0, self.out, self.c_all, self.gates, self.tc = x, h0, c0, out, c_all, gates, tc_all
        self.w_ih4, self.w_hh4 = w_ih4, w_hh4
        return out, out[-1].copy(), c_all[-1].copy()

    def backward(self, gy, gh_n, gc_n):
        xp = get_array_module(gy)
        out, c_all, gates, tc_all, w_hh4 = self.out, self.c_all, self.gates, self.tc, self.w_hh4
        nt, bsz, hid = out.shape
        dgates = xp.empty_like(gates)
        dh = gh_n.copy()  # copies: the grad_outputs are not ours to write into
        dc = gc_n.copy()
        tmp = xp.empty_like(dh)
        rec = xp.empty((4, bsz, hid), dtype=gy.dtype)
        for t in range(nt - 1, -1, -1):
            dh += gy[t]
            i, f, o, g = gates[0, t], gates[1, t], gates[2, t], gates[3, t]
            di, df, do, dg = dgates[0, t], dgates[1, t], dgates[2, t], dgates[3, t]
            tc = tc_all[t]
            cprev = c_all[t - 1] if t else self.c0
            xp.subtract(1, o, out=tmp)
            xp.multiply(dh, tc, out=do)
            do *= o
            do *= tmp                        # do = dh tanh(c) o (1 - o)
            xp.multiply(tc, tc, out=tmp)
            xp.subtract(1, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp                        # dc += dh o (1 - tanh(c)^2)
            xp.subtract(1, i, out=tmp)
            xp.multiply(dc, g, out=di)
            di *= i
            di *= tmp                        # di = dc g i (1 - i)
            xp.multiply(g, g, out=tmp)
            xp.subtract(1, tmp, out=tmp)
            xp.multiply(dc, i, out=dg)
            dg *= tmp                        # dg = dc i (1 - g^2)
            xp.subtract(1, f, out=tmp)
            xp.multiply(dc, cprev, out=df)
            df *= f
            df *= tmp                        # df = dc c_prev f (1 - f)
            dc *= f
            xp.matmul(dgates[:, t], w_hh4, out=rec)
            rec.sum(axis=0, out=dh)
        need = self.needs_input_grad
        x = self.x
        n_in = x.shape[2]
        back = list(self.ORDER)  # the permutation is its own inverse
        flat = dgates.reshape(4, nt * bsz, hid)
        gx = gw_ih = gw_hh = gb = None
        if need[0]:
            gx = xp.matmul(flat, self.w_ih4).sum(axis=0).reshape(x.shape)
        if need[3]:
            gw_ih = xp.matmul(flat.transpose(0, 2, 1), x.reshape(1, nt * bsz, n_in))
            gw_ih = gw_ih[back].reshape(4 * hid, n_in)
        if need[4]:
            hprev = xp.concatenate([self.h0[None], out[:-1]]) if nt > 1 else self.h0[None]
            gw_hh = xp.matmul(flat.transpose(0, 2, 1), hprev.reshape(1, nt * bsz, hid))
            gw_hh = gw_hh[back].reshape(4 * hid, hid)
        grads_state = (dh if need[1] else None, dc if need[2] else None)
        if self.has_bias:
            gb = flat.sum(axis=1)[back].reshape(-1) if need[5] or need[6] else None
            return (gx, *grads_state, gw_ih, gw_hh, *_both_biases(gb, need[5:]))
        return (gx, *grads_state, gw_ih, gw_hh)


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One direction of one RNN layer on sequence-first x: (output (T, B, H), h_n (B, H))."""
    args = (x, h0, w_ih, w_hh) if b_ih is None else (x, h0, w_ih, w_hh, b_ih, b_hh)
    return RNNLayer.apply(*args, nonlinearity=nonlinearity)


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    """One direction of one GRU layer on sequence-first x: (output (T, B, H), h_n (B, H))."""
    args = (x, h0, w_ih, w_hh) if b_ih is None else (x, h0, w_ih, w_hh, b_ih, b_hh)
    return GRULayer.apply(*args)


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """One direction of one LSTM layer on sequence-first x: (output (T, B, H), h_n, c_n (B, H))."""
    args = (x, h0, c0, w_ih, w_hh) if b_ih is None else (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return LSTMLayer.apply(*args)
