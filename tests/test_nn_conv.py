"""Conv1d / Conv2d: finite-difference gradients, a direct-loop NumPy reference, PyTorch layouts."""
import math

import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import nn
from distbp.nn import functional as F


def conv2d_reference(x, w, b, stride, padding):
    """The textbook definition, one output element at a time."""
    (sh, sw), (ph, pw) = stride, padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            y[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
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


def test_conv_matches_torch_with_its_weights():
    torch = torch_or_skip()
    cases = [(torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2)),
              nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2)), (2, 3, 7, 6)),
             (torch.nn.Conv1d(3, 4, 3, stride=2, padding=1), nn.Conv1d(3, 4, 3, stride=2, padding=1),
              (2, 3, 9))]
    for tmod, mod, shape in cases:
        tmod = tmod.double()
        mod.double().load_state_dict({k: v.detach().numpy() for k, v in tmod.state_dict().items()})
        x = np.random.default_rng(0).standard_normal(shape)
        xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
        yt, yd = tmod(xt), mod(xd)
        (yt ** 2).sum().backward()
        (yd * yd).sum().backward()
        np.testing.assert_allclose(yd.numpy(), yt.detach().numpy(), atol=1e-10)
        np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(mod.weight.grad, tmod.weight.grad.numpy(), atol=1e-10)
        np.testing.assert_allclose(mod.bias.grad, tmod.bias.grad.numpy(), atol=1e-10)


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
