"""Recurrent layers as fused Functions: one node per layer over ALL time steps.

Each Function takes a sequence-first input x (T, B, I), the initial state, and PyTorch's weights
(w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,), gates stacked in PyTorch's order). The input
projection of every step is one matmul before the loop; the loop does only the hidden-hidden
product and the gate arithmetic, into preallocated arrays. Backward through time is one reverse
loop that stores each step's pre-activation gradients, then the weight gradients are again one
matmul each over all steps.
"""
from __future__ import annotations

import numpy

from ..autograd import Function
from ..backend import get_array_module


def _sigmoid_(a, xp):
    """In-place logistic function via tanh (no overflow warnings for large |a|)."""
    a *= 0.5
    xp.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


class _Recurrent(Function):
    """Shared bookkeeping: input projection before the loop, weight gradients after it."""

    def _project(self, x, w_ih, b):
        t, bsz, i = x.shape
        gi = (x.reshape(t * bsz, i) @ w_ih.T).reshape(t, bsz, -1)
        if b is not None:
            gi += b
        return gi

    def _weight_grads(self, dgh, dgi, x, h0, hs, w_ih, grads_out):
        """Fill gx, gh0's siblings: gw_ih, gw_hh, gb_ih, gb_hh from per-step gate gradients."""
        t, bsz, i = x.shape
        need = self.needs_input_grad
        gx = gw_ih = gw_hh = gb_ih = gb_hh = None
        g2i = dgi.reshape(t * bsz, -1)
        if need[0]:
            gx = (g2i @ w_ih).reshape(x.shape)
        if need[self.W_IH]:
            gw_ih = g2i.T @ x.reshape(t * bsz, i)
        if need[self.W_IH + 1]:
            xp = get_array_module(x)
            hprev = xp.concatenate([h0[None], hs[:-1]]) if t > 1 else h0[None]
            gw_hh = dgh.reshape(t * bsz, -1).T @ hprev.reshape(t * bsz, -1)
        if self.has_bias:
            gb_ih = dgi.sum(axis=(0, 1)) if need[self.W_IH + 2] else None
            gb_hh = dgh.sum(axis=(0, 1)) if need[self.W_IH + 3] else None
            return (gx, *grads_out, gw_ih, gw_hh, gb_ih, gb_hh)
        return (gx, *grads_out, gw_ih, gw_hh)


class RNNLayer(_Recurrent):
    """h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act tanh or relu. Output (T, B, H)."""

    W_IH = 2

    def forward(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
        xp = get_array_module(x)
        self.has_bias = b_ih is not None
        gi = self._project(x, w_ih, None if b_ih is None else b_ih + b_hh)
        out = gi  # each step overwrites its own slice of the projection with h_t
        h, whh_t = h0, w_hh.T
        for t in range(x.shape[0]):
            a = out[t]
            a += h @ whh_t
            if nonlinearity == "tanh":
                xp.tanh(a, out=a)
            else:
                xp.maximum(a, 0, out=a)
            h = a
        self.x, self.h0, self.out, self.w_ih, self.w_hh = x, h0, out, w_ih, w_hh
        self.tanh = nonlinearity == "tanh"
        return out

    def backward(self, gy):
        xp = get_array_module(gy)
        out, w_hh = self.out, self.w_hh
        da = xp.empty_like(out)
        dh = xp.zeros_like(out[0])
        for t in range(out.shape[0] - 1, -1, -1):
            dh += gy[t]
            d = da[t]
            if self.tanh:
                xp.multiply(out[t], out[t], out=d)
                xp.subtract(1, d, out=d)
                d *= dh
            else:
                xp.multiply(dh, out[t] > 0, out=d)
            dh = d @ w_hh
        gh0 = dh if self.needs_input_grad[1] else None
        return self._weight_grads(da, da, self.x, self.h0, out, self.w_ih, (gh0,))


class GRULayer(Function):
    """PyTorch's GRU: r = s(W_ir x + b_ir + W_hr h + b_hr), z = s(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h. Output (T, B, H).

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
                rz = gates[:2, t]
                rz -= gh[:2]
                xp.exp(rz, out=rz)
                rz += 1
                xp.reciprocal(rz, out=rz)
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
        return out

    def backward(self, gy):
        xp = get_array_module(gy)
        out, gates, hn_all, w_hh3 = self.out, self.gates, self.hn_all, self.w_hh3
        nt, bsz, hid = out.shape
        dgh = xp.empty_like(gates)    # gradient of (h W_hh^T + b_hh), gate-major, per step
        dn_all = xp.empty_like(out)   # gradient of n's pre-activation (= of W_in x + b_in)
        dh = xp.zeros_like(out[0])
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


class LSTMLayer(_Recurrent):
    """PyTorch's LSTM, gates i, f, g, o: c' = f * c + i * g, h' = o * tanh(c').

    The one output is (T, B, 2H): h_t in [..., :H] and c_t in [..., H:], so that c_n can be sliced
    off it with an ordinary getitem (a Function has a single output)."""

    W_IH = 3

    def forward(self, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
        xp = get_array_module(x)
        nt, bsz, _ = x.shape
        hid = w_hh.shape[1]
        self.has_bias = b_ih is not None
        gates = self._project(x, w_ih, None if b_ih is None else b_ih + b_hh)
        y = xp.empty((nt, bsz, 2 * hid), dtype=x.dtype)
        tc_all = xp.empty((nt, bsz, hid), dtype=x.dtype)
        h, c, whh_t = h0, c0, w_hh.T
        for t in range(nt):
            a = gates[t]
            a += h @ whh_t
            _sigmoid_(a[:, :2 * hid], xp)
            xp.tanh(a[:, 2 * hid:3 * hid], out=a[:, 2 * hid:3 * hid])
            _sigmoid_(a[:, 3 * hid:], xp)
            ct = y[t, :, hid:]
            xp.multiply(a[:, hid:2 * hid], c, out=ct)
            ct += a[:, :hid] * a[:, 2 * hid:3 * hid]
            xp.tanh(ct, out=tc_all[t])
            ht = y[t, :, :hid]
            xp.multiply(a[:, 3 * hid:], tc_all[t], out=ht)
            h, c = ht, ct
        self.x, self.h0, self.c0, self.y, self.gates, self.tc = x, h0, c0, y, gates, tc_all
        self.w_ih, self.w_hh = w_ih, w_hh
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        y, gates, tc_all, w_hh = self.y, self.gates, self.tc, self.w_hh
        nt, bsz, hid2 = y.shape
        hid = hid2 // 2
        dgates = xp.empty_like(gates)
        dh = xp.zeros((bsz, hid), dtype=gy.dtype)
        dc = xp.zeros_like(dh)
        tmp = xp.empty_like(dh)
        for t in range(nt - 1, -1, -1):
            dh += gy[t, :, :hid]
            dc += gy[t, :, hid:]
            a, d, tc = gates[t], dgates[t], tc_all[t]
            i, f, g, o = a[:, :hid], a[:, hid:2 * hid], a[:, 2 * hid:3 * hid], a[:, 3 * hid:]
            di, df, dg, do = d[:, :hid], d[:, hid:2 * hid], d[:, 2 * hid:3 * hid], d[:, 3 * hid:]
            cprev = y[t - 1, :, hid:] if t else self.c0
            # do = dh * tanh(c) * o (1 - o)
            xp.subtract(1, o, out=tmp)
            xp.multiply(dh, tc, out=do)
            do *= o
            do *= tmp
            # dc += dh * o * (1 - tanh(c)^2)
            xp.multiply(tc, tc, out=tmp)
            xp.subtract(1, tmp, out=tmp)
            tmp *= o
            tmp *= dh
            dc += tmp
            # di = dc * g * i (1 - i);  dg = dc * i * (1 - g^2);  df = dc * cprev * f (1 - f)
            xp.subtract(1, i, out=tmp)
            xp.multiply(dc, g, out=di)
            di *= i
            di *= tmp
            xp.multiply(g, g, out=tmp)
            xp.subtract(1, tmp, out=tmp)
            xp.multiply(dc, i, out=dg)
            dg *= tmp
            xp.subtract(1, f, out=tmp)
            xp.multiply(dc, cprev, out=df)
            df *= f
            df *= tmp
            dc *= f
            dh = d @ w_hh
        grads_state = (dh if self.needs_input_grad[1] else None, dc if self.needs_input_grad[2] else None)
        hs = y[..., :hid]
        return self._weight_grads(dgates, dgates, self.x, self.h0, hs, self.w_ih, grads_state)


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    args = (x, h0, w_ih, w_hh) if b_ih is None else (x, h0, w_ih, w_hh, b_ih, b_hh)
    return RNNLayer.apply(*args, nonlinearity=nonlinearity)


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None):
    args = (x, h0, w_ih, w_hh) if b_ih is None else (x, h0, w_ih, w_hh, b_ih, b_hh)
    return GRULayer.apply(*args)


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    args = (x, h0, c0, w_ih, w_hh) if b_ih is None else (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    return LSTMLayer.apply(*args)
