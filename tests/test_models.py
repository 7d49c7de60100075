"""The registry and its model zoo: sizes follow the dataset, gradients are right, bad options are one
clear error."""
import numpy as np
import pytest

import distbp as db
import distbp.nn.functional as F
from distbp import nn, optim
from distbp.training import registry
from distbp.training.registry import build_model


def test_mlp_layer_sizes_and_parameter_count():
    m = build_model("mlp", (64,), 10, hidden=[32, 16])
    shapes = [tuple(p.shape) for p in m.parameters()]
    assert shapes == [(32, 64), (32,), (16, 32), (16,), (10, 16), (10,)]
    default = build_model("mlp", (64,), 10)
    assert sum(p.data.size for p in default.parameters()) == 64 * 128 + 128 + 128 * 10 + 10


def test_linear_model_is_one_affine_map():
    m = build_model("linear", (3,), 2)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    w, b = m[1].weight.data, m[1].bias.data
    np.testing.assert_allclose(m(db.tensor(x)).numpy(), x @ w.T + b, rtol=1e-6)


def test_mlp_loss_gradient_matches_finite_differences():
    db.set_default_dtype(np.float64)
    m = build_model("mlp", (4,), 3, hidden=[5], activation="tanh")
    y = np.array([0, 2, 1])

    x = db.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    db.gradcheck(lambda x: F.cross_entropy(m(x), y, reduction="sum"), [x])
    # the parameters are perturbed in place, so the model itself is the function of its weights
    db.gradcheck(lambda w1, w3: F.cross_entropy(m(x), y, reduction="sum"), [m[1].weight, m[3].weight])


@pytest.mark.parametrize("name", ["cnn", "gru", "lstm"])
def test_image_models_map_a_batch_to_one_row_of_outputs_each(name):
    m = build_model(name, (64,), 10, hidden=[8], image_shape=(1, 8, 8))
    out = m(db.tensor(np.zeros((3, 64), np.float32)))
    assert out.shape == (3, 10)


def test_recurrent_model_reads_image_rows_as_time_steps():
    db.set_default_dtype(np.float64)
    m = build_model("gru", (12,), 2, hidden=[3], image_shape=(1, 3, 4))
    x = np.random.default_rng(1).standard_normal((2, 12))
    out, _ = m[1].rnn(db.tensor(x.reshape(2, 3, 4)))        # rows (N, H=3 steps, W=4 features)
    expected = out[:, -1].numpy() @ m[2].weight.data.T + m[2].bias.data
    np.testing.assert_allclose(m(db.tensor(x)).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("name, cell", [("gru", nn.GRU), ("lstm", nn.LSTM)])
def test_recurrent_models_are_layer_lists_rows_then_last_output_then_head(name, cell):
    # a layer list, so a pipeline can cut it between any two layers; each layer passes one tensor on
    m = build_model(name, (24,), 5, hidden=[7], image_shape=(2, 3, 4))
    assert isinstance(m, nn.Sequential) and len(m) == 3
    assert isinstance(m[1].rnn, cell) and (m[1].rnn.input_size, m[1].rnn.hidden_size) == (8, 7)
    assert (m[2].in_features, m[2].out_features) == (7, 5)
    x = np.arange(2 * 24.0).reshape(2, 24)
    rows = m[0](db.tensor(x)).numpy()                        # (N, H, C*W): row i of every channel
    assert rows.shape == (2, 3, 8)
    np.testing.assert_array_equal(rows[1, 2], np.concatenate([x[1].reshape(2, 3, 4)[c, 2] for c in range(2)]))
    assert m[1](m[0](db.tensor(x))).shape == (2, 7)
    assert [k for k, _ in m.named_parameters()][-2:] == ["2.weight", "2.bias"]


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_model_loss_gradient_matches_finite_differences(name):
    db.set_default_dtype(np.float64)
    m = build_model(name, (12,), 3, hidden=[3], image_shape=(2, 2, 3))
    y = np.array([0, 2])
    x = db.tensor(np.random.default_rng(2).standard_normal((2, 12)), requires_grad=True)
    db.gradcheck(lambda x: F.cross_entropy(m(x), y, reduction="sum"), [x])
    db.gradcheck(lambda *w: F.cross_entropy(m(x), y, reduction="sum"), list(m.parameters()))


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "resnet"}, "unknown model 'resnet'"),
    ({"name": "mlp", "activation": "gelu"}, "unknown activation 'gelu'"),
    ({"name": "mlp", "hidden": [0]}, "Invalid hidden sizes"),
    ({"name": "mlp", "dropout": 1.0}, "Invalid dropout probability: 1.0"),
    ({"name": "cnn", "input_shape": (10,)}, "cannot view inputs of shape (10,) as an image"),
    ({"name": "cnn", "input_shape": (4,)}, "at least 4x4"),
])
def test_bad_model_options_are_one_clear_error(kwargs, words):
    kwargs = {"input_shape": (64,), **kwargs}
    with pytest.raises(ValueError) as e:
        build_model(kwargs.pop("name"), kwargs.pop("input_shape"), 10, **kwargs)
    assert words in str(e.value)


def test_mlp_dropout_layers_follow_each_hidden_activation_and_are_off_in_eval():
    m = build_model("mlp", (4,), 2, hidden=[8, 8], dropout=0.5)
    kinds = [type(layer).__name__ for layer in m]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    x = db.tensor(np.ones((3, 4), np.float32))
    m.eval()
    np.testing.assert_array_equal(m(x).numpy(), m(x).numpy())


def test_cnn_batch_norm_option_puts_batchnorm_after_each_conv():
    m = build_model("cnn", (64,), 10, hidden=[8], channels=4, batch_norm=True)
    kinds = [type(layer).__name__ for layer in m]
    assert kinds[:5] == ["Reshape", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] and kinds.count("BatchNorm2d") == 2
    assert m[1].out_channels == 4 and m(db.tensor(np.zeros((2, 64), np.float32))).shape == (2, 10)
    assert "BatchNorm2d" not in [type(layer).__name__ for layer in build_model("cnn", (64,), 10)]


def test_common_options_a_model_does_not_take_are_dropped_other_unknown_options_are_errors():
    assert len(list(build_model("linear", (3,), 2, hidden=[9], activation="tanh", dropout=0.5).parameters())) == 2
    with pytest.raises(ValueError, match="model 'linear' has no option 'channels'"):
        build_model("linear", (3,), 2, channels=4)


def test_registering_a_name_twice_is_an_error_and_names_list_in_registration_order():
    assert list(registry.MODELS)[:5] == ["mlp", "linear", "cnn", "gru", "lstm"]
    with pytest.raises(ValueError, match="model 'mlp' is already registered"):
        registry.register_model("mlp")(lambda input_shape, num_outputs: None)


@pytest.mark.parametrize("name, cls", [("sgd", optim.SGD), ("adam", optim.Adam), ("adamw", optim.AdamW),
                                       ("rmsprop", optim.RMSprop)])
def test_build_optimizer_by_name(name, cls):
    params = list(nn.Linear(2, 2).parameters())
    opt = registry.build_optimizer(name, params, 0.01, weight_decay=0.1)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; choose one of sgd, adam, adamw, rmsprop"):
        registry.build_optimizer("lbfgs", params, 0.01)


def test_activations_losses_and_datasets_are_registered_by_name():
    assert isinstance(registry.activation("tanh"), nn.Tanh) and list(registry.LOSSES) == ["cross_entropy", "mse", "l1"]
    assert list(registry.DATASETS)[:4] == ["digits", "xor", "regression", "sine"]


def test_a_registered_dataset_loads_by_name():
    from distbp.data import load_dataset

    @registry.register_dataset("models_test_blobs")
    def blobs(seed):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, 90)
        return rng.standard_normal((90, 2)) + 4 * y[:, None], y, None
    try:
        data = load_dataset("models_test_blobs", seed=1)
        assert data.task == "classification" and data.num_classes == 3 and len(data.train[0]) == 63
    finally:
        del registry.DATASETS["models_test_blobs"]
