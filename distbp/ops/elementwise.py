"""Elementwise ops and activations. Binary ops broadcast like numpy; their backward sums the
gradient back to each input's shape with `unbroadcast`."""
from __future__ import annotations

import numpy

from ..autograd import Function, Tensor, unbroadcast
from ..autograd.tensor import _as_array
from ..backend import device_of, get_array_module, to_device
from ..kernels import fused


def _shape(x):
    return getattr(x, "shape", ())


class Add(Function):
    def forward(self, a, b):
        self.sa, self.sb = _shape(a), _shape(b)
        return a + b

    def backward(self, gy):
        na, nb = self.needs_input_grad
        return (unbroadcast(gy, self.sa) if na else None, unbroadcast(gy, self.sb) if nb else None)


class Sub(Function):
    def forward(self, a, b):
        self.sa, self.sb = _shape(a), _shape(b)
        return a - b

    def backward(self, gy):
        na, nb = self.needs_input_grad
        return (unbroadcast(gy, self.sa) if na else None, unbroadcast(-gy, self.sb) if nb else None)


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        na, nb = self.needs_input_grad
        return (unbroadcast(gy * self.b, _shape(self.a)) if na else None,
                unbroadcast(gy * self.a, _shape(self.b)) if nb else None)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        na, nb = self.needs_input_grad
        gb = unbroadcast(-gy * self.a / (self.b * self.b), _shape(self.b)) if nb else None
        return (unbroadcast(gy / self.b, _shape(self.a)) if na else None, gb)


class Pow(Function):
    """a ** b for a tensor base; the exponent may be a number or a tensor (then d/db = y log a)."""

    def forward(self, a, b):
        xp = get_array_module(a)
        self.a, self.b = a, b
        self.y = xp.power(a, b)
        return self.y

    def backward(self, gy):
        na, nb = self.needs_input_grad
        xp = get_array_module(gy)
        ga = unbroadcast(gy * self.b * xp.power(self.a, self.b - 1), _shape(self.a)) if na else None
        gb = None
        if nb:
            # log(a) is -inf/nan for a <= 0; where y is 0 the term is 0 by convention (torch does the same)
            with_log = xp.where(self.y == 0, 0, self.y * xp.log(xp.where(self.a > 0, self.a, 1)))
            gb = unbroadcast(gy * with_log, _shape(self.b))
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Exp(Function):
    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, gy):
        return (gy / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)


class Abs(Function):
    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)  # not abs(): this module's abs() is the op itself

    def backward(self, gy):
        return (gy * get_array_module(gy).sign(self.x),)


class Clip(Function):
    """Gradient passes where min <= x <= max (torch.clamp's rule: boundaries included)."""

    def forward(self, x, lo=None, hi=None):
        xp = get_array_module(x)
        self.mask = xp.ones(x.shape, dtype=bool)
        if lo is not None:
            self.mask &= x >= lo
        if hi is not None:
            self.mask &= x <= hi
        return xp.clip(x, lo, hi)

    def backward(self, gy):
        return (gy * self.mask,)


class Maximum(Function):
    """Where a == b the gradient is split evenly, as torch.maximum does."""

    def forward(self, a, b):
        xp = get_array_module(a, b)
        self.sa, self.sb = _shape(a), _shape(b)
        self.ga = (a > b) + 0.5 * (a == b)
        return xp.maximum(a, b)

    def backward(self, gy):
        na, nb = self.needs_input_grad
        ga = self.ga.astype(gy.dtype, copy=False)
        return (unbroadcast(gy * ga, self.sa) if na else None,
                unbroadcast(gy * (1 - ga), self.sb) if nb else None)


class Cast(Function):
    """Move or cast: `data` is the converted array; the gradient goes back as the input's kind."""

    def forward(self, x, data=None):
        self.dtype, self.device = x.dtype, device_of(x)
        return data

    def backward(self, gy):
        return (to_device(gy, self.device).astype(self.dtype, copy=False),)


class Relu(Function):
    def forward(self, x):
        self.y = get_array_module(x).maximum(x, 0)
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        if xp is not numpy:  # one fused kernel on the GPU (distbp/kernels.py)
            return (fused(xp, "relu_backward")(gy, self.y),)
        return (gy * (self.y > 0),)


class LeakyRelu(Function):
    def forward(self, x, negative_slope=0.01):
        xp = get_array_module(x)
        self.slope = xp.where(x > 0, 1, negative_slope).astype(x.dtype)
        return x * self.slope

    def backward(self, gy):
        return (gy * self.slope,)


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        if xp is not numpy:
            self.y = fused(xp, "sigmoid")(x)
            return self.y
        # 0.5 * (1 + tanh(x/2)) is sigmoid without overflow in exp(-x) for very negative x
        self.y = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        if xp is not numpy:
            return (fused(xp, "sigmoid_backward")(gy, self.y),)
        return (gy * self.y * (1 - self.y),)


class Tanh(Function):
    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, gy):
        xp = get_array_module(gy)
        if xp is not numpy:
            return (fused(xp, "tanh_backward")(gy, self.y),)
        return (gy * (1 - self.y * self.y),)


class Where(Function):
    def forward(self, cond, a, b):
        xp = get_array_module(a, b)
        self.cond, self.sa, self.sb = cond, _shape(a), _shape(b)
        return xp.where(cond, a, b)

    def backward(self, gy):
        _, na, nb = self.needs_input_grad
        return (None, unbroadcast(gy * self.cond, self.sa) if na else None,
                unbroadcast(gy * ~self.cond, self.sb) if nb else None)


def _tensorish(x, like):
    """Turn a list/array operand into an array matching `like`; numbers and tensors pass through."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numpy.generic) and x.ndim == 0:
        x = x.item()  # a NumPy scalar acts as a Python number: float32 * np.float64(2) stays float32
    if isinstance(x, (int, float)):
        return x
    return _as_array(x, like.data if isinstance(like, Tensor) else None)


def add(a, b):
    return Add.apply(a, _tensorish(b, a))


def sub(a, b):
    return Sub.apply(a, _tensorish(b, a))


def mul(a, b):
    return Mul.apply(a, _tensorish(b, a))


def div(a, b):
    return Div.apply(a, _tensorish(b, a))


def pow(a, b):
    return Pow.apply(a, _tensorish(b, a))


def neg(x):
    return Neg.apply(x)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def abs(x):
    return Abs.apply(x)


def clip(x, min=None, max=None):
    return Clip.apply(x, lo=min, hi=max)


clamp = clip


def maximum(a, b):
    return Maximum.apply(a, _tensorish(b, a))


def minimum(a, b):
    return -maximum(-a if isinstance(a, Tensor) else -_tensorish(a, b), -_tensorish(b, a))


def where(cond, a, b):
    cond = cond.data if isinstance(cond, Tensor) else cond
    like = a if isinstance(a, Tensor) else b
    return Where.apply(cond, _tensorish(a, like), _tensorish(b, like))


def to(x, device=None, dtype=None):
    """Tensor.to: x moved to `device` and/or cast to `dtype`, in the graph (the gradient goes back
    as x's kind); x itself when nothing changes."""
    data = x.data if device is None else to_device(x.data, device)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if data is x.data:
        return x
    return Cast.apply(x, data=data)


def relu(x):
    return Relu.apply(x)


def leaky_relu(x, negative_slope=0.01):
    return LeakyRelu.apply(x, negative_slope=negative_slope)


def sigmoid(x):
    return Sigmoid.apply(x)


def tanh(x):
    return Tanh.apply(x)
