"""Max and average pooling: direct-loop references, finite-difference gradients, PyTorch's tie rule,
hand-computed ceil_mode / count_include_pad / dilation / return_indices cases, PyTorch itself."""
import functools

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


# ceil_mode, dilation, return_indices, count_include_pad=False, divisor_override, unbatched inputs

def test_ceil_mode_hand_computed():
    x = db.tensor(np.arange(5.0).reshape(1, 1, 5))
    # [0 1 | 2 3 | 4]: ceil keeps the partial last window, floor drops it
    np.testing.assert_array_equal(F.max_pool1d(x, 2, ceil_mode=True).numpy(), [[[1, 3, 4]]])
    np.testing.assert_array_equal(F.max_pool1d(x, 2).numpy(), [[[1, 3]]])
    # the part of a window beyond the input (and its padding) never counts in the mean: 4 / 1
    np.testing.assert_array_equal(F.avg_pool1d(x, 2, ceil_mode=True).numpy(), [[[0.5, 2.5, 4]]])
    # padding 1: [p 0 | 1 2 | 3 4 | p]; a 4th window would start in the right padding, so there is none
    np.testing.assert_array_equal(F.max_pool1d(x, 2, 2, 1, ceil_mode=True).numpy(), [[[0, 2, 4]]])
    np.testing.assert_array_equal(F.avg_pool1d(x, 2, 2, 1, ceil_mode=True).numpy(), [[[0, 1.5, 3.5]]])
    # stride 3 > kernel 2 on 7: windows [0 1], [3 4], [6 + beyond]
    np.testing.assert_array_equal(F.avg_pool1d(db.tensor(np.arange(7.0).reshape(1, 1, 7)), 2, 3, ceil_mode=True)
                                  .numpy(), [[[0.5, 3.5, 6]]])


def test_count_include_pad_false_hand_computed():
    # kernel 3, stride 2, padding 1, ceil on [0..5]: windows [p 0 1], [1 2 3], [3 4 5], [5 p + beyond]
    x = db.tensor(np.arange(6.0).reshape(1, 1, 6))
    np.testing.assert_allclose(F.avg_pool1d(x, 3, 2, 1, ceil_mode=True).numpy(), [[[1 / 3, 2, 4, 2.5]]])
    np.testing.assert_allclose(F.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False).numpy(),
                               [[[0.5, 2, 4, 5]]])
    np.testing.assert_array_equal(F.max_pool1d(x, 3, 2, 1, ceil_mode=True).numpy(), [[[1, 3, 5, 5]]])
    # 2-D, kernel 2, stride 1, padding 1 over [[1, 2], [3, 4]]: each window's mean of its real elements
    x = db.tensor(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 1, 1, count_include_pad=False).numpy()[0, 0],
                               [[1, 1.5, 2], [2, 2.5, 3], [3, 3.5, 4]])
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 1, 1).numpy()[0, 0],
                               [[0.25, 0.75, 0.5], [1, 2.5, 1.5], [0.75, 1.75, 1]])
    np.testing.assert_allclose(F.avg_pool2d(x, 2, divisor_override=3).numpy(), [[[[10 / 3]]]])


def test_dilation_and_return_indices_hand_computed():
    x = db.tensor(np.array([[[5.0, 0, 1, 2, 9, 0, 3]]]), requires_grad=True)
    y, idx = F.max_pool1d(x, 2, 1, dilation=3, return_indices=True)  # windows (i, i + 3)
    np.testing.assert_array_equal(y.numpy(), [[[5, 9, 1, 3]]])
    np.testing.assert_array_equal(idx.numpy(), [[[0, 4, 2, 6]]])
    assert idx.dtype == np.int64 and not idx.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [[[1, 0, 1, 0, 1, 0, 1]]])
    # 2-D with ceil: indices are flat h * W + w in each (unpadded) channel plane
    x = db.tensor(np.array([[[[1.0, 5, 2, 0], [3, 4, 8, 1], [0, 2, 6, 7]]]]))
    y, idx = nn.MaxPool2d(2, return_indices=True, ceil_mode=True)(x)
    np.testing.assert_array_equal(y.numpy(), [[[[5, 8], [2, 7]]]])
    np.testing.assert_array_equal(idx.numpy(), [[[[1, 6], [9, 11]]]])
    # with padding: positions in the unpadded input, windows rows [-1, 0], [1, 2] x cols [-1, 0], [1, 2], [3, 4]
    y, idx = F.max_pool2d(x, 2, padding=1, return_indices=True)
    np.testing.assert_array_equal(y.numpy(), [[[[1, 5, 0], [3, 8, 7]]]])
    np.testing.assert_array_equal(idx.numpy(), [[[[0, 1, 3], [4, 6, 11]]]])
    y, idx = F.max_pool1d(db.tensor(np.array([[5.0, 0, 1, 2, 9, 0, 3]])), 3, 2, 1, return_indices=True)  # (C, L)
    np.testing.assert_array_equal(y.numpy(), [[5, 2, 9, 3]])
    np.testing.assert_array_equal(idx.numpy(), [[0, 3, 4, 6]])


# name: (kind, nd, input shape, kwargs); partial last windows with and without padding, stride > kernel
NEW_POOL = {
    "max-ceil-pad": ("max", 2, (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "max-ceil": ("max", 2, (2, 2, 7, 5), {"kernel_size": 2, "ceil_mode": True}),
    "max-ceil-stride-gt-kernel": ("max", 2, (1, 2, 7, 8), {"kernel_size": 2, "stride": (3, 3), "ceil_mode": True}),
    "max-dilation": ("max", 2, (2, 2, 7, 6), {"kernel_size": (2, 3), "stride": 1, "padding": 1,
                                              "dilation": (2, 1)}),
    "max-dilation-ceil": ("max", 2, (1, 2, 8, 7), {"kernel_size": 2, "stride": 2, "dilation": 2,
                                                   "ceil_mode": True}),
    "max1d-ceil-pad-dilation": ("max", 1, (2, 3, 10), {"kernel_size": 3, "stride": 2, "padding": 1,
                                                       "dilation": 2, "ceil_mode": True}),
    "max1d-ceil-stride-gt-kernel": ("max", 1, (2, 2, 7), {"kernel_size": 2, "stride": 3, "ceil_mode": True}),
    "avg-ceil-pad": ("avg", 2, (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "avg-ceil": ("avg", 2, (2, 2, 7, 5), {"kernel_size": 2, "ceil_mode": True}),
    "avg-ceil-pad-exclude": ("avg", 2, (2, 2, 7, 6), {"kernel_size": (3, 2), "stride": 2, "padding": 1,
                                                      "ceil_mode": True, "count_include_pad": False}),
    "avg-exclude": ("avg", 2, (2, 2, 6, 5), {"kernel_size": 3, "stride": 1, "padding": 1,
                                             "count_include_pad": False}),
    "avg-divisor": ("avg", 2, (2, 2, 6, 5), {"kernel_size": 2, "stride": 1, "padding": 1, "divisor_override": 3}),
    "avg-divisor-ceil": ("avg", 2, (2, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                                  "count_include_pad": False, "divisor_override": 5}),
    "avg1d-ceil-pad-exclude": ("avg", 1, (2, 3, 10), {"kernel_size": 3, "stride": 2, "padding": 1,
                                                      "ceil_mode": True, "count_include_pad": False}),
    "avg1d-ceil-stride-gt-kernel": ("avg", 1, (2, 2, 7), {"kernel_size": 2, "stride": 3, "ceil_mode": True}),
}
# unbatched: (C, L) and (C, H, W)
UNBATCHED = {
    "max2d": ("max", 2, (2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    "max1d": ("max", 1, (3, 9), {"kernel_size": 2, "stride": 2, "dilation": 2, "ceil_mode": True}),
    "avg2d": ("avg", 2, (2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    "avg1d": ("avg", 1, (3, 9), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
}


def _pool_fn(kind, nd):
    return getattr(F, f"{kind}_pool{nd}d")


@pytest.mark.parametrize("case", {**NEW_POOL, **UNBATCHED})
def test_new_pooling_arguments_match_gradcheck(case):
    kind, nd, shape, kw = {**NEW_POOL, **UNBATCHED}[case]
    fn = _pool_fn(kind, nd)
    assert db.gradcheck(lambda a: fn(a, **kw), [t64(*shape)])
    if kind == "max":  # the output of (output, indices) is differentiable too
        assert db.gradcheck(lambda a: fn(a, **kw, return_indices=True)[0], [t64(*shape)])


@pytest.mark.parametrize("case", UNBATCHED)
def test_unbatched_pooling_equals_a_batch_of_one(case):
    kind, nd, shape, kw = UNBATCHED[case]
    x = t64(*shape)
    y = _pool_fn(kind, nd)(x, **kw)
    np.testing.assert_array_equal(y.numpy(), _pool_fn(kind, nd)(db.tensor(x.data[None]), **kw).numpy()[0])
    if kind == "max":
        _, idx = _pool_fn(kind, nd)(x, **kw, return_indices=True)
        assert idx.shape == y.shape


@pytest.mark.parametrize("case", {**NEW_POOL, **UNBATCHED})
def test_new_pooling_arguments_match_torch(case):
    torch = torch_or_skip()
    kind, nd, shape, kw = {**NEW_POOL, **UNBATCHED}[case]
    x = np.random.default_rng(4).standard_normal(shape)
    name = f"{'Max' if kind == 'max' else 'Avg'}Pool{nd}d"
    for extra in ({}, {"return_indices": True}) if kind == "max" else ({},):
        kwargs = {**kw, **extra}
        functional = (functools.partial(getattr(torch.nn.functional, f"{kind}_pool{nd}d"), **kwargs),
                      functools.partial(_pool_fn(kind, nd), **kwargs))
        for tfn, fn in [functional, (getattr(torch.nn, name)(**kwargs), getattr(nn, name)(**kwargs))]:
            xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
            yt, yd = tfn(xt), fn(xd)
            if extra:
                (yt, it), (yd, idx) = yt, yd
                np.testing.assert_array_equal(idx.numpy(), it.numpy())
            (yt ** 3).sum().backward()
            (yd * yd * yd).sum().backward()
            assert yd.shape == tuple(yt.shape)
            np.testing.assert_allclose(yd.numpy(), yt.detach().numpy(), atol=1e-10)
            np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-10)


def test_pool_modules_take_torch_positional_arguments():
    x = t64(1, 2, 7, 6)
    # MaxPool2d(kernel_size, stride, padding, dilation, return_indices, ceil_mode), as torch
    y, idx = nn.MaxPool2d(3, 2, 1, 1, True, True)(x)
    assert y.shape == idx.shape == (1, 2, 4, 4)
    np.testing.assert_array_equal(y.numpy(), F.max_pool2d(x, 3, 2, 1, 1, True).numpy())
    # AvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    np.testing.assert_array_equal(nn.AvgPool2d(3, 2, 1, True, False, None)(x).numpy(),
                                  F.avg_pool2d(x, 3, 2, 1, True, False).numpy())
    np.testing.assert_allclose(nn.AvgPool2d(2, 2, 0, False, True, 3)(x).numpy(),
                               F.avg_pool2d(x, 2).numpy() * 4 / 3, atol=1e-14)
    x = t64(2, 9)
    y = nn.AvgPool1d(3, 2, 1, True, False)(x)  # AvgPool1d(kernel_size, stride, padding, ceil_mode, count_include_pad)
    assert y.shape == (2, 5)
    np.testing.assert_array_equal(y.numpy(), F.avg_pool1d(x, 3, 2, 1, True, False).numpy())
    assert "ceil_mode=True" in repr(nn.MaxPool1d(2, ceil_mode=True))


def test_pooling_rejects_bad_arguments_and_ranks():
    with pytest.raises(ValueError, match="must not be zero"):
        F.avg_pool2d(db.randn(1, 1, 4, 4), 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override must be an int"):
        F.avg_pool2d(db.randn(1, 1, 4, 4), 2, divisor_override=1.5)
    with pytest.raises(ValueError, match="dilation must be positive"):
        F.max_pool2d(db.randn(1, 1, 4, 4), 2, dilation=0)
    with pytest.raises(ValueError, match=r"2-D \(unbatched\) or 3-D \(batched\) input"):
        F.max_pool1d(db.randn(1, 2, 4, 4), 2)
    with pytest.raises(ValueError, match=r"3-D \(unbatched\) or 4-D \(batched\) input"):
        nn.AvgPool2d(2)(db.randn(4, 4))
    with pytest.raises(ValueError, match="kernel 3 with dilation 2 with padding 0 does not fit"):
        F.max_pool1d(db.randn(1, 1, 4), 3, dilation=2)
