"""The fused kernels' formulas (distbp/kernels.py), evaluated with NumPy, equal the unfused NumPy code
of the ops and optimizers they replace on a GPU. On CuPy the same formula text is what cupy.fuse
compiles; tests/test_cuda.py checks the compiled kernels on a GPU."""
import numpy as np
import pytest

import distbp as db
import distbp.nn.functional as F
from distbp import kernels
from distbp.optim.adam import adam_update
from distbp.optim.sgd import sgd_update

rng = np.random.default_rng(0)


def _k(name):
    return kernels.fused(np, name)


def _forward_backward(fn, x, gy, *args):
    """fn's output and the gradient gy sends back to x, through distbp's CPU ops."""
    xt = db.tensor(x, requires_grad=True)
    y = fn(xt, *args)
    y.backward(gy)
    return y.data, xt.grad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_kernels_equal_the_ops_numpy_code(dtype):
    x, gy = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((3, 5)).astype(dtype)
    x[0, 0] = 0.0  # relu's gradient at 0 is 0
    for fn, fwd, bwd in ((F.sigmoid, "sigmoid", "sigmoid_backward"), (F.tanh, None, "tanh_backward"),
                         (F.relu, None, "relu_backward")):
        y, gx = _forward_backward(fn, x, gy)
        if fwd:
            np.testing.assert_array_equal(_k(fwd)(x), y)
        got = _k(bwd)(gy, y)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, gx)


def test_loss_kernels_equal_the_ops_numpy_code():
    x, t = rng.standard_normal((4, 3)), (rng.random((4, 3)) > 0.5).astype(np.float64)
    gy = np.array(0.7)
    total, gx = _forward_backward(F.binary_cross_entropy_with_logits, x, gy, db.tensor(t), "sum")
    np.testing.assert_allclose(_k("bce_with_logits")(x, t).sum(), total, rtol=1e-15)
    np.testing.assert_array_equal(_k("bce_with_logits_backward")(gy, x, t), gx)
    _, gx = _forward_backward(F.mse_loss, x, gy, db.tensor(t))
    np.testing.assert_array_equal(_k("mse_backward")(gy / x.size, x - t), gx)


def _state(shape=(4, 3)):
    return [rng.standard_normal(shape) for _ in range(3)]


def test_sgd_kernel_equals_plain_sgd():
    p, g, _ = _state()
    want = p - 0.1 * g
    _k("sgd")(p, g, 0.1)
    np.testing.assert_array_equal(p, want)


@pytest.mark.parametrize("nesterov, dampening, wd", [(False, 0.1, 0.01), (False, 0.0, 0.0), (True, 0.0, 0.01)])
def test_sgd_momentum_kernels_equal_sgd_update_after_the_first_step(nesterov, dampening, wd):
    p, g, buf = _state()
    p2, buf2 = p.copy(), buf.copy()
    sgd_update(p, g, buf, lr=0.1, momentum=0.9, dampening=dampening, weight_decay=wd, nesterov=nesterov,
               first=False)
    _k("sgd_nesterov" if nesterov else "sgd_momentum")(p2, g, buf2, 0.1, 0.9, 1 - dampening, wd)
    np.testing.assert_array_equal(buf2, buf)
    np.testing.assert_allclose(p2, p, rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("decoupled, wd", [(False, 0.0), (False, 0.01), (True, 0.01)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_kernel_equals_adam_update(decoupled, wd, dtype):
    p, g, m = (a.astype(dtype) for a in _state())
    v = np.abs(rng.standard_normal(p.shape)).astype(dtype)
    p2, m2, v2 = p.copy(), m.copy(), v.copy()
    lr, b1, b2, eps, step = 0.01, 0.9, 0.999, 1e-8, 3
    adam_update(p, g, m, v, None, step=step, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                decoupled=decoupled)
    # the arguments adam_update passes on a GPU
    _k("adam")(p2, g, m2, v2, 1 - lr * wd if decoupled else 1.0, 0.0 if decoupled else wd, b1, 1 - b1, b2, 1 - b2,
               1 / (1 - b2 ** step) ** 0.5, eps, lr / (1 - b1 ** step))
    for got, want in ((p2, p), (m2, m), (v2, v)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-15 if dtype == np.float64 else 1e-6, atol=0)


def test_numpy_gets_the_plain_formula_and_every_kernel_has_one():
    assert set(kernels.FORMULAS) >= {"sigmoid", "relu_backward", "adam", "sgd", "bce_with_logits"}
    for name in kernels.FORMULAS:
        assert kernels.fused(np, name).__name__ == name
