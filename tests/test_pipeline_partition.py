"""partition: where a pipeline cuts an nn.Sequential, and the models it refuses."""
import itertools

import pytest

from distbp import nn
from distbp.distributed.pipeline.partition import partition
from distbp.training.registry import build_model


def _layers(*widths):
    """Linear layers of the given sizes with a ReLU after each but the last (Linear(a, b) has (a+1)*b parameters)."""
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def _covers(bounds, n):
    return bounds[0][0] == 0 and bounds[-1][1] == n and all(a[1] == b[0] for a, b in itertools.pairwise(bounds)) \
        and all(e > s for s, e in bounds)


def test_uniform_gives_equal_layer_counts_extras_first():
    model = build_model("mlp", (6,), 3, hidden=[8, 8])  # Flatten, Linear, ReLU, Linear, ReLU, Linear
    assert len(model) == 6
    assert partition(model, 1) == [(0, 6)]
    assert partition(model, 2) == [(0, 3), (3, 6)]
    assert partition(model, 4) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert partition(model, 6) == [(i, i + 1) for i in range(6)]


def test_parameters_balances_the_largest_stage_then_the_layer_counts():
    model = _layers(10, 40, 2, 2)   # Linear 440, ReLU, Linear 82, ReLU, Linear 6
    sizes = [440, 0, 82, 0, 6]
    # 440 | 88 whichever side the ReLU takes; with it, 2 and 3 layers beat 1 and 4
    assert partition(model, 2, "parameters") == [(0, 2), (2, 5)]
    bounds = partition(model, 3, "parameters")
    assert max(sum(sizes[s:e]) for s, e in bounds) == 440
    assert _covers(bounds, 5) and max(e - s for s, e in bounds) == 2  # as even in layers as that allows
    even = _layers(4, 4, 4, 4, 4)  # four Linear(4, 4) of 20 parameters, ReLUs between
    assert partition(even, 2, "parameters") in ([(0, 3), (3, 7)], [(0, 4), (4, 7)])  # 40 | 40, 3 or 4 layers
    four = partition(even, 4, "parameters")  # one Linear each, at most 2 layers each
    assert _covers(four, 7) and max(e - s for s, e in four) == 2
    assert all(sum(isinstance(m, nn.Linear) for m in even[s:e]) == 1 for s, e in four)


def test_parameters_handles_models_where_every_split_point_ties():
    model = nn.Sequential(nn.ReLU(), nn.Tanh(), nn.ReLU())
    assert partition(model, 3, "parameters") == [(0, 1), (1, 2), (2, 3)]
    assert partition(model, 2, "parameters") in ([(0, 2), (2, 3)], [(0, 1), (1, 3)])


def test_explicit_split_points():
    model = build_model("cnn", (64,), 10, hidden=[8], image_shape=(1, 8, 8), channels=2)
    n = len(model)
    assert partition(model, 3, [4, 7]) == [(0, 4), (4, 7), (7, n)]
    assert partition(model, 2, (1,)) == [(0, 1), (1, n)]


@pytest.mark.parametrize("stages, method, words", [
    (7, "uniform", "cannot split a model of 6 layers into 7 stages"),
    (0, "uniform", "Invalid number of pipeline stages: 0"),
    (2, "layers", "unknown partition method 'layers'"),
    (3, [2], "3 stages need 2 split points, got 1"),
    (3, [3, 3], "must increase strictly"),
    (3, [4, 2], "must increase strictly"),
    (2, [0], "lie in 1..5"),
    (2, [6], "lie in 1..5"),
    (2, [2.5], "must be layer indices"),
])
def test_bad_stages_or_split_points_are_one_clear_error(stages, method, words):
    model = build_model("mlp", (6,), 3, hidden=[8, 8])
    with pytest.raises(ValueError) as e:
        partition(model, stages, method)
    assert words in str(e.value)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_zoo_models_split_between_rows_recurrent_layer_and_head(name):
    model = build_model(name, (16,), 3, hidden=[4], image_shape=(1, 4, 4))  # ImageRows, LastOutput, Linear
    assert partition(model, 3) == [(0, 1), (1, 2), (2, 3)]
    assert partition(model, 2) == [(0, 2), (2, 3)]
    assert partition(model, 2, "parameters") == [(0, 2), (2, 3)]  # the recurrent layer outweighs the head


def test_a_model_that_is_not_a_layer_list_is_refused_naming_the_zoo_models_that_split():
    with pytest.raises(TypeError) as e:
        partition(nn.GRU(4, 4, batch_first=True), 2)
    assert "GRU is not one" in str(e.value) and "mlp, linear, cnn, gru, lstm are" in str(e.value)


def test_batch_norm_is_refused_saying_why():
    model = build_model("cnn", (64,), 10, hidden=[8], image_shape=(1, 8, 8), channels=2, batch_norm=True)
    with pytest.raises(TypeError) as e:
        partition(model, 2)
    assert "'2' is a BatchNorm2d" in str(e.value) and "one micro-batch at a time" in str(e.value)
