"""A Linear cut between pipeline stages (LinearPiece), and the partitions that cut inside a Linear."""
import copy
import itertools

import numpy as np
import pytest

import distbp as db
from distbp import nn
from distbp.autograd import defer_weight_grads
from distbp.distributed.pipeline.partition import check_bounds, partition, stage_layers
from distbp.distributed.pipeline.split_linear import LinearPiece
from distbp.gradcheck import gradcheck
from distbp.training.registry import build_model


@pytest.fixture(autouse=True)
def float64():
    db.set_default_dtype(np.float64)
    yield
    db.set_default_dtype(np.float32)


def _chain(linear, cuts):
    """The pieces of `linear` between consecutive cuts, applied in turn (what the stages run)."""
    edges = [0, *cuts, linear.out_features]
    return [LinearPiece(linear, a, b) for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("cuts", [[3], [1], [6], [2, 5], [1, 2, 3, 4, 5, 6]])
def test_pieces_in_turn_equal_the_linear_forward_and_backward(cuts):
    db.manual_seed(0)
    linear = nn.Linear(5, 7)
    pieces = _chain(linear, cuts)
    x = np.random.default_rng(1).standard_normal((4, 5))
    g = np.random.default_rng(2).standard_normal((4, 7))
    a = db.tensor(x, requires_grad=True)
    (linear(a) * db.tensor(g)).sum().backward()
    b = db.tensor(x, requires_grad=True)
    out = b
    for p in pieces:
        out = p(out)
    assert out.shape == (4, 7)
    np.testing.assert_allclose(out.data, linear(db.tensor(x)).data, rtol=0, atol=1e-13)
    (out * db.tensor(g)).sum().backward()
    np.testing.assert_allclose(b.grad, a.grad, rtol=0, atol=1e-13)
    weight = np.concatenate([p.weight.grad for p in pieces])
    bias = np.concatenate([p.bias.grad for p in pieces])
    np.testing.assert_allclose(weight, linear.weight.grad, rtol=0, atol=1e-13)
    np.testing.assert_allclose(bias, linear.bias.grad, rtol=0, atol=1e-13)


def test_a_piece_passes_its_input_on_with_the_features_it_computed():
    db.manual_seed(0)
    linear = nn.Linear(3, 4)
    head, tail = _chain(linear, [1])
    x = db.tensor(np.arange(6.0).reshape(2, 3))
    mid = head(x)
    assert mid.shape == (2, 4)          # [x | feature 0]
    np.testing.assert_array_equal(mid.data[:, :3], x.data)
    assert tail(mid).shape == (2, 4)    # the layer's whole output
    assert head.shard_spec["weight"].start == 0 and head.shard_spec["weight"].stop == 1
    assert tail.shard_spec["bias"].full == 4


@pytest.mark.parametrize("bias", [True, False])
def test_piece_gradients_match_finite_differences(bias):
    db.manual_seed(0)
    linear = nn.Linear(4, 5, bias=bias)
    head, middle, tail = _chain(linear, [2, 3])
    rng = np.random.default_rng(0)
    x = db.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    params = [t for p in (head, middle, tail) for t in p.parameters()]
    assert gradcheck(lambda x, *_: tail(middle(head(x))), [x, *params])


def test_deferred_weight_gradients_of_pieces_equal_the_immediate_ones():
    db.manual_seed(0)
    linear = nn.Linear(6, 4)
    xs = [np.random.default_rng(i).standard_normal((3, 6)) for i in range(3)]
    grads = []
    for defer in (False, True):
        head, tail = _chain(copy.deepcopy(linear), [1])
        with defer_weight_grads() if defer else _nothing():
            for x in xs:
                tail(head(db.tensor(x, requires_grad=True))).sum().backward()
        grads.append([head.weight.grad, head.bias.grad, tail.weight.grad, tail.bias.grad])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_a_piece_must_be_part_of_the_layer():
    linear = nn.Linear(3, 4)
    for lo, hi in ((0, 4), (2, 2), (3, 5), (-1, 2)):
        with pytest.raises(ValueError, match="piece of a Linear"):
            LinearPiece(linear, lo, hi)


def _costs_of(model, bounds):
    """Multiply-adds per sample of each stage, counted from the pieces the stages hold."""
    total = []
    for s in range(len(bounds)):
        work = 0
        for name, layer in stage_layers(model, bounds, s):
            first = all(not list(m.parameters()) for m in list(model._modules.values())[:int(name)])
            rows = layer.hi - layer.lo if isinstance(layer, LinearPiece) else getattr(layer, "out_features", 0)
            work += (2 if first else 3) * getattr(layer, "in_features", 0) * rows
        total.append(work)
    return total


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_balanced_gives_every_stage_equal_work_to_one_output_feature(stages):
    model = build_model("mlp", (784,), 10, hidden=[2048, 2048, 2048, 2048])
    bounds = partition(model, stages, "balanced")
    costs = _costs_of(model, bounds)
    one_row = 3 * 2048  # a feature of a 2048-input Linear, forward and backward
    assert sum(costs) == 2 * 784 * 2048 + 3 * (3 * 2048 * 2048 + 2048 * 10)
    assert max(costs) - min(costs) <= 2 * one_row, costs
    # the best cut at layer boundaries is far less even (41:59 for two stages)
    if stages == 2:
        assert any(isinstance(end, tuple) for _, end in bounds)
        by_layers = _costs_of(model, partition(model, 2, "parameters"))
        assert max(by_layers) - min(by_layers) > 100 * one_row


def test_balanced_cuts_at_the_nearest_output_feature_or_at_a_boundary():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    # costs 2*16, 3*16, 3*16 of 128: a half is 64, 32 after layer 0, and layer 2's features cost 12
    # each: 3 of them give 68 | 60, 2 would give 56 | 72
    assert partition(model, 2, "balanced") == [(0, (2, 3)), ((2, 3), 5)]
    same = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4))  # 48 + 18 per feature of 120
    assert partition(same, 2, "balanced") == [(0, (2, 1)), ((2, 1), 3)]
    even = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4))  # 48 | 48: the layer boundary
    assert partition(even, 2, "balanced") == [(0, 1), (1, 3)]


def test_three_stages_may_share_one_linear():
    model = nn.Sequential(nn.Linear(2, 9))
    bounds = partition(model, 3, [(0, 3), (0, 6)])
    assert bounds == [(0, (0, 3)), ((0, 3), (0, 6)), ((0, 6), 1)]
    pieces = [stage_layers(model, bounds, s) for s in range(3)]
    assert [[(n, p.lo, p.hi) for n, p in layers] for layers in pieces] == [[("0", 0, 3)], [("0", 3, 6)], [("0", 6, 9)]]


def test_stage_layers_keeps_whole_layers_whole():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bounds = partition(model, 2, [(2, 1)])
    first = stage_layers(model, bounds, 0)
    assert [n for n, _ in first] == ["0", "1", "2"]
    assert first[0][1] is model[0] and isinstance(first[2][1], LinearPiece)
    second = stage_layers(model, bounds, 1)
    assert [n for n, _ in second] == ["2", "3", "4"] and second[2][1] is model[4]


@pytest.mark.parametrize("points, message", [
    ([(1, 2)], "only an nn.Linear can be cut"),            # layer 1 is a ReLU
    ([(2, 0)], "cut at 1..3"),
    ([(2, 4)], "cut at 1..3"),
    ([(9, 1)], "not in the model"),
    ([(2, 2), 2], "must increase strictly"),
    ([(2, 1.5)], "split points must be"),
])
def test_bad_split_points_inside_a_layer(points, message):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=message):
        partition(model, len(points) + 1, points)


def test_balanced_counts_linear_layers_only():
    model = build_model("cnn", (1, 8, 8), 3)
    with pytest.raises(ValueError, match="counts the work of nn.Linear layers only"):
        partition(model, 2, "balanced")


def test_check_bounds_refuses_gaps_and_takes_lists():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    assert check_bounds(model, [[0, [2, 1]], [[2, 1], 3]], 2) == [(0, (2, 1)), ((2, 1), 3)]
    with pytest.raises(ValueError, match="consecutive"):
        check_bounds(model, [(0, 1), (2, 3)], 2)
    with pytest.raises(ValueError, match="2 stages"):
        check_bounds(model, [(0, 3)], 2)
