"""Every layer and loss, run the same way on 'cpu' and on 'cuda', for the GPU tests.

tests/test_cuda.py runs these on a real GPU (cupy); tests/test_cuda_standin.py runs them on the
numpy-backed stand-in (tests/cupy_standin.py), which checks dispatch and placement, not CUDA.
Each case builds its module from a fixed seed in float64, so both devices start from the same weights.
"""
from __future__ import annotations

import numpy as np

import distbp as db
from distbp import backend, nn

# name -> (module factory, input shape); an int input shape's tuple ends with "int"
LAYERS = {
    "linear": (lambda: nn.Linear(6, 4), (5, 6)),
    "conv1d": (lambda: nn.Conv1d(2, 3, 3, padding=1), (2, 2, 7)),
    "conv2d": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5)),
    "maxpool1d": (lambda: nn.MaxPool1d(2), (2, 3, 6)),
    "avgpool1d": (lambda: nn.AvgPool1d(2), (2, 3, 6)),
    "maxpool2d": (lambda: nn.MaxPool2d(2), (2, 2, 4, 4)),
    "avgpool2d": (lambda: nn.AvgPool2d(2), (2, 2, 4, 4)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(4), (5, 4)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (2, 3, 3, 3)),
    "embedding": (lambda: nn.Embedding(7, 3), (5, "int")),
    "rnn": (lambda: nn.RNN(3, 4, batch_first=True), (2, 5, 3)),
    "lstm": (lambda: nn.LSTM(3, 4, num_layers=2), (5, 2, 3)),
    "gru": (lambda: nn.GRU(3, 4, batch_first=True), (2, 5, 3)),
    "relu": (nn.ReLU, (4, 5)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), (4, 5)),
    "sigmoid": (nn.Sigmoid, (4, 5)),
    "tanh": (nn.Tanh, (4, 5)),
    "softmax": (lambda: nn.Softmax(dim=1), (4, 5)),
    "log_softmax": (lambda: nn.LogSoftmax(dim=1), (4, 5)),
    "flatten": (nn.Flatten, (2, 3, 4)),
    "dropout": (lambda: nn.Dropout(0.3), (4, 5)),
    "mlp": (lambda: nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)), (4, 6)),
}

# name -> (loss module, prediction shape, target kind)
LOSSES = {
    "mse": (nn.MSELoss, (4, 3), "real"),
    "l1": (nn.L1Loss, (4, 3), "real"),
    "cross_entropy": (nn.CrossEntropyLoss, (4, 5), "class"),
    "bce": (nn.BCELoss, (4, 3), "prob"),
    "bce_with_logits": (nn.BCEWithLogitsLoss, (4, 3), "binary"),
}


def layer_input(shape, seed=1):
    rng = np.random.default_rng(seed)
    if shape[-1] == "int":
        return rng.integers(0, 7, shape[:-1])
    return rng.standard_normal(shape)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def run_layer(name: str, device: str) -> dict:
    """Forward and backward of LAYERS[name] on `device`: host copies of the output, the input's and
    every parameter's gradient, and the devices the gradients were on."""
    factory, shape = LAYERS[name]
    db.manual_seed(0)
    module = factory().double().to(device)
    x_host = layer_input(shape)
    x = db.tensor(x_host, requires_grad=x_host.dtype.kind == "f", device=device)
    out = _first(module(x))
    weight = np.random.default_rng(2).standard_normal(out.shape)
    (out * db.tensor(weight, device=device)).sum().backward()
    grads = {n: p.grad for n, p in module.named_parameters()}
    if x.requires_grad:
        grads["input"] = x.grad
    return {"out": out.numpy(), "grads": {n: backend.to_numpy(g) for n, g in grads.items()},
            "devices": {n: backend.device_of(g) for n, g in grads.items()},
            "buffers": {n: backend.to_numpy(b) for n, b in module.state_dict().items()}}


def loss_inputs(shape, kind, seed=3):
    rng = np.random.default_rng(seed)
    pred = rng.standard_normal(shape)
    if kind == "class":
        return pred, rng.integers(0, shape[1], shape[0])
    if kind == "prob":
        return 1 / (1 + np.exp(-pred)), rng.random(shape)
    if kind == "binary":
        return pred, (rng.random(shape) > 0.5).astype(np.float64)
    return pred, rng.standard_normal(shape)


def run_loss(name: str, device: str) -> dict:
    cls, shape, kind = LOSSES[name]
    pred_host, target_host = loss_inputs(shape, kind)
    pred = db.tensor(pred_host, requires_grad=True, device=device)
    target = db.tensor(target_host, device=device)
    loss = cls()(pred, target)
    loss.backward()
    return {"out": loss.numpy(), "grads": {"input": backend.to_numpy(pred.grad)},
            "devices": {"input": backend.device_of(pred.grad)}}


def assert_same(cpu: dict, gpu: dict, rtol=1e-10, atol=1e-10) -> None:
    """Equal outputs and gradients, every gradient on the GPU."""
    np.testing.assert_allclose(gpu["out"], cpu["out"], rtol=rtol, atol=atol)
    assert gpu["grads"].keys() == cpu["grads"].keys()
    for name in cpu["grads"]:
        np.testing.assert_allclose(gpu["grads"][name], cpu["grads"][name], rtol=rtol, atol=atol, err_msg=name)
        assert gpu["devices"][name] == "cuda", f"gradient of {name} is on {gpu['devices'][name]}"
    for name in cpu.get("buffers", {}):  # BatchNorm's running statistics too
        np.testing.assert_allclose(gpu["buffers"][name], cpu["buffers"][name], rtol=rtol, atol=atol, err_msg=name)


OPTIMIZERS = {
    "sgd": lambda ps: db.optim.SGD(ps, lr=0.1),
    "sgd_momentum": lambda ps: db.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd_nesterov": lambda ps: db.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda ps: db.optim.Adam(ps, lr=0.01, weight_decay=0.01),
    "adamw": lambda ps: db.optim.AdamW(ps, lr=0.01),
    "adam_amsgrad": lambda ps: db.optim.Adam(ps, lr=0.01, amsgrad=True),
    "rmsprop": lambda ps: db.optim.RMSprop(ps, lr=0.01, momentum=0.5),
}


def run_optimizer(name: str, device: str, steps: int = 3) -> dict:
    """`steps` steps of a small MLP with optimizer `name`: the final weights, on the host."""
    db.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3)).double().to(device)
    opt = OPTIMIZERS[name](list(model.parameters()))
    rng = np.random.default_rng(4)
    for _ in range(steps):
        x = db.tensor(rng.standard_normal((4, 6)), device=device)
        y = db.tensor(rng.integers(0, 3, 4), device=device)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {n: backend.to_numpy(v) for n, v in model.state_dict().items()}
