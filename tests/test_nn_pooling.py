"""Max and average pooling: direct-loop references, finite-difference gradients, PyTorch's tie rule."""
import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import nn
from distbp.nn import functional as F


def pool_reference(x, kernel, stride, padding, kind):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    fill = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))
    return y


CASES = [  # kernel, stride, padding
    ((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)), ((3, 2), (3, 1), (0, 0)),
]


@pytest.mark.parametrize("kernel,stride,padding", CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_matches_loop_reference_and_gradcheck(kind, kernel, stride, padding):
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    x = t64(2, 2, 7, 6)
    y = fn(x, kernel, stride, padding)
    np.testing.assert_allclose(y.numpy(), pool_reference(x.data, kernel, stride, padding, kind), atol=1e-12)
    assert db.gradcheck(lambda a: fn(a, kernel, stride, padding), [x])


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool1d_matches_gradcheck_and_reference(kind):
    fn = F.max_pool1d if kind == "max" else F.avg_pool1d
    x = t64(2, 3, 9)
    ref = pool_reference(x.data[:, :, None], (1, 3), (1, 2), (0, 1), kind)[:, :, 0]
    np.testing.assert_allclose(fn(x, 3, 2, 1).numpy(), ref, atol=1e-12)
    assert db.gradcheck(lambda a: fn(a, 3, 2, 1), [x])


def test_max_pool_sends_gradient_to_first_maximum_on_ties():
    x = db.tensor(np.array([[[[1.0, 3.0], [3.0, 0.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[[0, 1], [0, 0]]]])  # row-major first of the two 3s


def test_overlapping_max_windows_accumulate_gradient():
    # 1-D [0, 5, 1]: windows [0, 5] and [5, 1] (kernel 2, stride 1) both pick the 5
    x = db.tensor(np.array([[[0.0, 5.0, 1.0]]]), requires_grad=True)
    F.max_pool1d(x, 2, 1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[0, 2, 0]]])


def test_pool_modules_default_stride_to_kernel():
    x = db.randn(2, 3, 8, 6)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 3)
    assert nn.AvgPool2d((2, 3))(x).shape == (2, 3, 4, 2)
    assert nn.MaxPool1d(3)(db.randn(2, 3, 10)).shape == (2, 3, 3)
    with pytest.raises(ValueError, match="padding"):
        nn.MaxPool2d(2, padding=2)(x)


def test_pooling_matches_torch():
    torch = torch_or_skip()
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    for name, args in [("max_pool2d", (3, 2, 1)), ("avg_pool2d", ((2, 3), (1, 2), (1, 1)))]:
        xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
        yt, yd = getattr(torch.nn.functional, name)(xt, *args), getattr(F, name)(xd, *args)
        (yt ** 2).sum().backward()
        (yd * yd).sum().backward()
        np.testing.assert_allclose(yd.numpy(), yt.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-12)
