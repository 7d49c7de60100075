"""Conv1d / Conv2d: finite-difference gradients, a direct-loop NumPy reference, PyTorch layouts."""
import math

import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import nn
from distbp.nn import functional as F


def conv2d_reference(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    """The textbook definition, one output element (and group) at a time; each padding is an int
    or a (before, after) pair."""
    (sh, sw), (dh, dw) = stride, dilation
    x = np.pad(x, ((0, 0), (0, 0), *(p if isinstance(p, tuple) else (p, p) for p in padding)))
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for g in range(groups):
        for i in range(ho):
            for j in range(wo):
                patch = x[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                          j * sw:j * sw + dw * (kw - 1) + 1:dw]
                y[:, g * og:(g + 1) * og, i, j] = np.einsum("nchw,ochw->no", patch, w[g * og:(g + 1) * og])
    return y + (0 if b is None else b[None, :, None, None])


@pytest.mark.parametrize("stride,padding,kernel", [
    ((1, 1), (0, 0), (3, 3)), ((2, 1), (1, 2), (3, 2)), ((2, 3), (0, 1), (1, 2)), ((3, 3), (2, 2), (2, 2)),
])
def test_conv2d_matches_direct_loop_reference(stride, padding, kernel):
    x, w, b = t64(2, 3, 7, 6).data, t64(4, 3, *kernel).data, t64(4).data
    y = F.conv2d(db.tensor(x), db.tensor(w), db.tensor(b), stride=stride, padding=padding)
    np.testing.assert_allclose(y.numpy(), conv2d_reference(x, w, b, stride, padding), atol=1e-12)


@pytest.mark.parametrize("stride,padding,kernel,bias", [
    (1, 0, 3, True), ((2, 1), (1, 2), (3, 2), True), (2, 1, (2, 3), False), (3, 2, 2, True),
])
def test_conv2d_matches_gradcheck_with_stride_and_padding(stride, padding, kernel, bias):
    x, w = t64(2, 2, 6, 5), t64(3, 2, *((kernel, kernel) if isinstance(kernel, int) else kernel))
    args = [x, w] + ([t64(3)] if bias else [])
    assert db.gradcheck(lambda *a: F.conv2d(*a, stride=stride, padding=padding), args)


def test_conv1d_matches_gradcheck_and_equals_conv2d_of_height_one():
    x, w, b = t64(2, 3, 9), t64(4, 3, 3), t64(4)
    assert db.gradcheck(lambda *a: F.conv1d(*a, stride=2, padding=1), [x, w, b])
    y1 = F.conv1d(x, w, b, stride=2, padding=1).numpy()
    ref = conv2d_reference(x.data[:, :, None], w.data[:, :, None], b.data, (1, 2), (0, 1))[:, :, 0]
    np.testing.assert_allclose(y1, ref, atol=1e-12)


def test_conv_layers_have_torch_shapes_and_default_init_bounds():
    conv = nn.Conv2d(3, 8, (3, 2), stride=2, padding=1)
    assert conv.weight.shape == (8, 3, 3, 2) and conv.bias.shape == (8,)
    assert list(conv.state_dict()) == ["weight", "bias"]
    bound = 1 / math.sqrt(3 * 3 * 2)  # kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in))
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound
    assert nn.Conv1d(2, 5, 4, bias=False).weight.shape == (5, 2, 4)
    assert nn.Conv1d(2, 5, 4, bias=False).bias is None
    x = db.randn(2, 3, 9, 8)
    assert conv(x).shape == (2, 8, 5, 5)  # (9 + 2 - 3) // 2 + 1, (8 + 2 - 2) // 2 + 1


def test_conv2d_float32_input_gives_float32_output_and_gradients():
    conv = nn.Conv2d(1, 2, 3)
    x = db.randn(2, 1, 5, 5, requires_grad=True)
    conv(x).sum().backward()
    assert conv(x).dtype == np.float32 and x.grad.dtype == np.float32 and conv.weight.grad.dtype == np.float32


def test_conv_rejects_bad_shapes_with_clear_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="input has 2 channels"):
        conv(db.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="does not fit"):
        conv(db.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 4, 0)


def _assert_matches_torch(torch, tmod, mod, xshape):
    """With torch's weights loaded, outputs and input/weight/bias gradients agree in float64."""
    tmod = tmod.double()
    mod.double().load_state_dict({k: v.detach().numpy() for k, v in tmod.state_dict().items()})
    x = np.random.default_rng(0).standard_normal(xshape)
    xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
    yt, yd = tmod(xt), mod(xd)
    (yt ** 2).sum().backward()
    (yd * yd).sum().backward()
    np.testing.assert_allclose(yd.numpy(), yt.detach().numpy(), atol=1e-10)
    for mine, theirs in [(xd.grad, xt.grad), (mod.weight.grad, tmod.weight.grad), (mod.bias.grad, tmod.bias.grad)]:
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-10)


def test_conv_matches_torch_with_its_weights():
    torch = torch_or_skip()
    cases = [(torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2)),
              nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2)), (2, 3, 7, 6)),
             (torch.nn.Conv1d(3, 4, 3, stride=2, padding=1), nn.Conv1d(3, 4, 3, stride=2, padding=1),
              (2, 3, 9))]
    for tmod, mod, shape in cases:
        _assert_matches_torch(torch, tmod, mod, shape)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_small_cnn_matches_gradcheck_in_train_and_eval_modes(mode):
    db.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Dropout(0.3), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))
    model[1].running_mean[...] = [0.2, -0.1]
    model[1].running_var[...] = [1.5, 0.7]
    getattr(model, mode)()
    assert all(m.training == (mode == "train") for m in model.modules())

    def fn(x, *params):
        db.manual_seed(11)  # the same dropout mask at every evaluation
        return model(x)

    assert db.gradcheck(fn, [t64(3, 1, 4, 4), *model.parameters()])


# dilation, groups, padding='same'/'valid': (nd, input shape, weight shape, kwargs, the zero padding
# those kwargs mean, per spatial axis (before, after); worked out by hand from PyTorch's rules)
NEW_ARGS = {
    "dilation-2d": (2, (2, 3, 9, 8), (4, 3, 3, 2), {"stride": (2, 1), "padding": (1, 2), "dilation": 2},
                    ((1, 1), (2, 2))),
    "dilation-1d": (1, (2, 3, 11), (4, 3, 3), {"stride": 2, "padding": 1, "dilation": 2}, ((1, 1),)),
    "groups2": (2, (2, 4, 7, 6), (6, 2, 3, 2), {"stride": (1, 2), "padding": 1, "groups": 2},
                ((1, 1), (1, 1))),
    "depthwise-2d": (2, (2, 3, 7, 6), (6, 1, 3, 3), {"stride": 2, "dilation": (1, 2), "groups": 3},
                     ((0, 0), (0, 0))),
    "depthwise-1d": (1, (2, 3, 9), (6, 1, 3), {"padding": 1, "groups": 3}, ((1, 1),)),
    "same-odd": (2, (2, 3, 7, 6), (4, 3, 3, 5), {"padding": "same"}, ((1, 1), (2, 2))),
    # even effective kernels: PyTorch pads the odd one out at the bottom / right
    "same-even-dilated": (2, (2, 3, 7, 6), (4, 3, 4, 2), {"padding": "same", "dilation": (1, 3)},
                          ((1, 2), (1, 2))),
    "same-even-1d": (1, (2, 3, 10), (4, 3, 4), {"padding": "same"}, ((1, 2),)),
    "same-dilated-groups-1d": (1, (2, 4, 10), (4, 2, 3), {"padding": "same", "dilation": 2, "groups": 2},
                               ((2, 2),)),
    "valid": (2, (2, 3, 7, 6), (4, 3, 3, 2), {"padding": "valid"}, ((0, 0), (0, 0))),
}


def _reference_new_args(nd, x, w, b, kwargs, pads):
    """conv2d_reference of a NEW_ARGS case; a 1-d one as 2-d of height 1."""
    stride, dilation, groups = kwargs.get("stride", 1), kwargs.get("dilation", 1), kwargs.get("groups", 1)
    if nd == 1:
        y = conv2d_reference(x[:, :, None], w[:, :, None], b, (1, stride), ((0, 0), *pads), (1, dilation), groups)
        return y[:, :, 0]
    stride, dilation = (v if isinstance(v, tuple) else (v, v) for v in (stride, dilation))
    return conv2d_reference(x, w, b, stride, pads, dilation, groups)


@pytest.mark.parametrize("case", NEW_ARGS)
def test_conv_dilation_groups_and_string_padding_match_direct_loop_reference(case):
    nd, xshape, wshape, kwargs, pads = NEW_ARGS[case]
    x, w, b = t64(*xshape).data, t64(*wshape).data, t64(wshape[0]).data
    y = getattr(F, f"conv{nd}d")(db.tensor(x), db.tensor(w), db.tensor(b), **kwargs)
    np.testing.assert_allclose(y.numpy(), _reference_new_args(nd, x, w, b, kwargs, pads), atol=1e-12)
    if kwargs.get("padding") == "same":
        assert y.shape[2:] == xshape[2:]


@pytest.mark.parametrize("case", NEW_ARGS)
def test_conv_dilation_groups_and_string_padding_match_gradcheck(case):
    nd, xshape, wshape, kwargs, _ = NEW_ARGS[case]
    conv = getattr(F, f"conv{nd}d")
    assert db.gradcheck(lambda *a: conv(*a, **kwargs), [t64(*xshape), t64(*wshape), t64(wshape[0])])


@pytest.mark.parametrize("case", NEW_ARGS)
def test_conv_dilation_groups_and_string_padding_match_torch_with_its_weights(case):
    torch = torch_or_skip()
    nd, xshape, wshape, kwargs, _ = NEW_ARGS[case]
    args = (xshape[1], wshape[0], wshape[2:])
    _assert_matches_torch(torch, getattr(torch.nn, f"Conv{nd}d")(*args, **kwargs),
                          getattr(nn, f"Conv{nd}d")(*args, **kwargs), xshape)


def test_grouped_conv_has_torch_weight_shape_init_and_repr():
    conv = nn.Conv2d(6, 4, 3, padding="same", dilation=2, groups=2, bias=False)
    assert conv.weight.shape == (4, 3, 3, 3) and conv.bias is None
    bound = 1 / math.sqrt(3 * 3 * 3)  # fan_in = in_channels / groups * kh * kw
    assert 0.8 * bound < np.abs(conv.weight.data).max() <= bound
    assert repr(conv) == ("Conv2d(6, 4, kernel_size=(3, 3), stride=(1, 1), padding=same, dilation=(2, 2), "
                          "groups=2, bias=False)")
    assert repr(nn.Conv1d(2, 3, 4)) == "Conv1d(2, 3, kernel_size=(4,), stride=(1,))"
    assert repr(nn.Conv1d(2, 3, 4, padding=1)) == "Conv1d(2, 3, kernel_size=(4,), stride=(1,), padding=(1,))"


def test_conv_rejects_groups_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv1d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(4, 4, 3, groups=0)
    x = db.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="input has 4 channels but the weight expects 6"):
        F.conv2d(x, db.randn(4, 3, 3, 3), groups=2)
    with pytest.raises(ValueError, match="output channels are not divisible by groups=2"):
        F.conv2d(x, db.randn(3, 2, 3, 3), groups=2)


def test_conv_rejects_padding_same_with_stride():
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(2, 2, 3, stride=(1, 2), padding="same")
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        F.conv1d(db.randn(1, 2, 8), db.randn(2, 2, 3), stride=2, padding="same")


def test_conv_rejects_unknown_padding_string():
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        nn.Conv1d(2, 2, 3, padding="full")
    with pytest.raises(ValueError, match="Invalid padding string 'Same'"):
        F.conv2d(db.randn(1, 2, 5, 5), db.randn(2, 2, 3, 3), padding="Same")


def test_conv_rejects_padding_modes_other_than_zeros():
    assert nn.Conv2d(2, 2, 3, padding_mode="zeros").padding_mode == "zeros"
    with pytest.raises(ValueError, match="padding_mode='reflect' is not supported"):
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")


def test_conv_rejects_a_dilated_kernel_larger_than_the_input():
    with pytest.raises(ValueError, match="kernel 3 with dilation 3 with padding 0 does not fit an input of size 6"):
        F.conv1d(db.randn(1, 2, 6), db.randn(2, 2, 3), dilation=3)
    with pytest.raises(ValueError, match="dilation must be positive"):
        F.conv2d(db.randn(1, 2, 6, 6), db.randn(2, 2, 3, 3), dilation=(1, 0))


# unbatched inputs: (C, L) for Conv1d, (C, H, W) for Conv2d
UNBATCHED = {
    "conv1d": (1, (3, 9), (4, 3, 3), {"stride": 2, "padding": 1, "dilation": 2}),
    "conv2d": (2, (3, 7, 6), (4, 3, 3, 2), {"stride": (2, 1), "padding": (1, 2)}),
    "conv2d-same-groups": (2, (4, 6, 5), (6, 2, 3, 3), {"padding": "same", "groups": 2}),
}


@pytest.mark.parametrize("case", UNBATCHED)
def test_unbatched_conv_matches_gradcheck_and_a_batch_of_one(case):
    nd, xshape, wshape, kwargs = UNBATCHED[case]
    conv = getattr(F, f"conv{nd}d")
    x, w, b = t64(*xshape), t64(*wshape), t64(wshape[0])
    assert db.gradcheck(lambda *a: conv(*a, **kwargs), [x, w, b])
    y = conv(x, w, b, **kwargs)
    np.testing.assert_array_equal(y.numpy(), conv(db.tensor(x.data[None]), w, b, **kwargs).numpy()[0])
    mod = getattr(nn, f"Conv{nd}d")(xshape[0], wshape[0], wshape[2:], **kwargs)
    assert mod(db.randn(*xshape)).shape == y.shape


@pytest.mark.parametrize("case", UNBATCHED)
def test_unbatched_conv_matches_torch_with_its_weights(case):
    torch = torch_or_skip()
    nd, xshape, wshape, kwargs = UNBATCHED[case]
    args = (xshape[0], wshape[0], wshape[2:])
    _assert_matches_torch(torch, getattr(torch.nn, f"Conv{nd}d")(*args, **kwargs),
                          getattr(nn, f"Conv{nd}d")(*args, **kwargs), xshape)


def test_conv_rejects_inputs_of_other_ranks():
    with pytest.raises(ValueError, match=r"conv2d: expected a 3-D \(unbatched\) or 4-D \(batched\) input"):
        nn.Conv2d(3, 4, 3)(db.randn(3, 5))
    with pytest.raises(ValueError, match=r"conv1d: expected a 2-D \(unbatched\) or 3-D \(batched\) input"):
        F.conv1d(db.randn(1, 3, 5, 5), db.randn(4, 3, 3))
