"""Where to cut an nn.Sequential into pipeline stages: consecutive ranges of its top-level layers.

    partition(model, 2)                        # equal layer counts: [(0, 3), (3, 5)] for 5 layers
    partition(model, 2, method="parameters")   # equal parameter counts, as near as contiguity allows
    partition(model, 3, method=[2, 4])         # explicit split points: [(0, 2), (2, 4), (4, len)]
    partition(model, 2, method="balanced")     # equal multiply-adds, cutting inside a Linear: [(0, (4, 762)), ((4, 762), 9)]
    partition(model, 2, method=[(4, 762)])     # the same cut given: stage 1 starts at output feature 762 of layer 4

A split point is a layer index i (the stage starts at layer i) or a pair (i, k): the stage starts
inside layer i, an nn.Linear, at its output feature k; the stage before computes its features :k
(`stage_layers` gives each stage a `LinearPiece` of that layer). For "uniform" and "parameters"
every layer counts as one (Flatten and activations included), every stage gets at least one."""
from __future__ import annotations

from ...nn import Linear, Sequential
from ...nn.norm import _BatchNorm
from .split_linear import LinearPiece

# The zoo models that are an nn.Sequential, named here because this package may not import the zoo.
SPLITTABLE_ZOO_MODELS = ("mlp", "linear", "cnn", "gru", "lstm")


def check_pipeline_model(model) -> None:
    """Raise unless `model` can run as a pipeline: an nn.Sequential without BatchNorm."""
    if not isinstance(model, Sequential):
        raise TypeError(
            f"a pipeline splits an nn.Sequential into consecutive layers, and {type(model).__name__} is not one "
            f"(the zoo's {', '.join(SPLITTABLE_ZOO_MODELS)} are; build a model as one to split it)")
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):  # SyncBatchNorm too
            # A stage sees one micro-batch at a time, so its batch statistics (and the running
            # averages) would be those of the micro-batch, not of the batch one process normalises.
            raise TypeError(
                f"layer {name!r} is a {type(m).__name__}: in a pipeline each stage normalises one micro-batch "
                "at a time, so its statistics would differ from one process's whole-batch statistics; "
                "build the model without batch norm (e.g. cnn with batch_norm=False)")


def _key(point) -> tuple:
    """Where a split point lies, comparable: layer i's start is (i, 0), its output feature k is (i, k)."""
    return (point, 0) if isinstance(point, int) else tuple(point)


def _bounds(points, n: int) -> list:
    edges = [0, *points, n]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _uniform(n: int, k: int) -> list:
    # numpy.array_split's rule: sizes differ by at most one, the first stages take the extra layers
    base, extra = divmod(n, k)
    points, at = [], 0
    for s in range(k - 1):
        at += base + (s < extra)
        points.append(at)
    return points


def _by_parameters(sizes: list, k: int) -> list:
    """Split points minimising the largest stage's parameter count; among those, the largest layer count."""
    n = len(sizes)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    inf = float("inf")

    def best(cost):
        # f[j][i]: the least possible largest cost of the first i layers in j stages (each non-empty)
        f = [[inf] * (n + 1) for _ in range(k + 1)]
        cut = [[0] * (n + 1) for _ in range(k + 1)]
        f[0][0] = 0
        for j in range(1, k + 1):
            for i in range(j, n - (k - j) + 1):
                for c in range(j - 1, i):
                    v = max(f[j - 1][c], cost(c, i))
                    if v < f[j][i]:
                        f[j][i], cut[j][i] = v, c
        points, i = [], n
        for j in range(k, 1, -1):
            i = cut[j][i]
            points.append(i)
        return f[k][n], points[::-1]

    most, _ = best(lambda a, b: prefix[b] - prefix[a])
    # Many splits tie when layers without parameters (activations, Flatten) sit between: among the
    # splits that reach the least maximum, take the one with the most even layer counts.
    _, points = best(lambda a, b: (b - a) if prefix[b] - prefix[a] <= most else inf)
    return points


def _linear_costs(model) -> list:
    """Multiply-adds per sample of each top-level layer's forward and backward, for "balanced": an
    in x out Linear does 3 in*out (output, input gradient, weight gradient), 2 before any layer with
    parameters (its input is the data: no input gradient). Layers without parameters count 0; any
    other layer with parameters is refused (its work depends on its input's size, not known here)."""
    costs, after_params = [], False
    for name, layer in model._modules.items():
        if type(layer) is Linear:
            costs.append((3 if after_params else 2) * layer.in_features * layer.out_features)
        elif any(True for _ in layer.parameters()):
            raise ValueError(f"partition 'balanced' counts the work of nn.Linear layers only, and layer {name!r} is "
                             f"a {type(layer).__name__} with parameters; use 'parameters' or split points")
        else:
            costs.append(0)
        after_params = after_params or any(True for _ in layer.parameters())
    return costs


def _balanced(model, k: int) -> list:
    """Split points that give each stage 1/k of the multiply-adds, to one output feature of a Linear."""
    costs = _linear_costs(model)
    total, layers = sum(costs), list(model._modules.values())
    points, done, j = [], 0, 0
    for s in range(1, k):
        target = total * s / k
        while j < len(costs) and done + costs[j] < target:
            done += costs[j]
            j += 1
        if j == len(costs) or costs[j] == 0:  # only a model without any work gets here
            raise ValueError(f"the model has no Linear work to balance over {k} stages")
        feature = round((target - done) / costs[j] * layers[j].out_features)
        points.append(j if feature <= 0 else j + 1 if feature >= layers[j].out_features else (j, feature))
    keys = [_key(p) for p in points]
    if keys != sorted(set(keys)) or keys[0] <= (0, 0) or keys[-1] >= (len(model), 0):
        raise ValueError(f"cannot balance the model's work over {k} stages (the cuts {points} coincide); "
                         "use fewer stages")
    return points


def _check_points(model, points) -> None:
    n = len(model)
    for p in points:
        if isinstance(p, bool) or not (isinstance(p, int) or (isinstance(p, tuple) and len(p) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in p))):
            raise ValueError(f"split points must be layer indices (integers) or (layer, output feature) pairs, "
                             f"got {list(points)}")
        if isinstance(p, tuple):
            i, f = p
            layer = model[i] if 0 <= i < n else None
            if type(layer) is not Linear:
                raise ValueError(f"split point {i}:{f} cuts inside layer {i}, which is "
                                 f"{'not in the model' if layer is None else 'a ' + type(layer).__name__}; "
                                 "only an nn.Linear can be cut by its output features")
            if not 0 < f < layer.out_features:
                raise ValueError(f"split point {i}:{f}: layer {i} has {layer.out_features} output features; "
                                 f"cut at 1..{layer.out_features - 1}")
    keys = [_key(p) for p in points]
    if keys != sorted(set(keys)) or (keys and (keys[0] <= (0, 0) or keys[-1] >= (n, 0))):
        raise ValueError(f"split points {list(points)} must increase strictly and lie in 1..{n - 1} (the model has "
                         f"{n} layers; a stage starts at each point, and none may be empty)")


def check_bounds(model, bounds, num_stages: int) -> list:
    """`bounds` as tuples, checked: one (start, end) per stage, consecutive, covering `model`, each
    end a layer index or a (layer, output feature) split point."""
    bounds = [tuple(tuple(v) if isinstance(v, list) else v for v in b) for b in bounds]
    if len(bounds) != num_stages:
        raise ValueError(f"{len(bounds)} layer ranges for a pipeline of {num_stages} stages; "
                         "give one (start, end) per stage, e.g. partition(model, grid.num_stages)")
    if bounds[0][0] != 0 or bounds[-1][1] != len(model) or any(
            len(b) != 2 or bounds[i + 1][0] != b[1] for i, b in enumerate(bounds[:-1])):
        raise ValueError(f"layer ranges {bounds} must be consecutive and cover the model's {len(model)} layers "
                         "from 0")
    _check_points(model, [b[1] for b in bounds[:-1]])
    return bounds


def stage_layers(model, bounds, stage: int) -> list:
    """(name, module) of the layers of `stage` under `bounds`, in order: whole layers, and a LinearPiece
    of a Linear cut at either end, named as the layer (so its parameters keep the model's names)."""
    start, end = _key(bounds[stage][0]), _key(bounds[stage][1])
    out = []
    for j, (name, layer) in enumerate(model._modules.items()):
        lo, hi = max(start, (j, 0)), min(end, (j + 1, 0))
        if lo >= hi:
            continue
        if lo == (j, 0) and hi == (j + 1, 0):
            out.append((name, layer))
        else:
            out.append((name, LinearPiece(layer, lo[1], hi[1] if hi[0] == j else layer.out_features)))
    return out


def partition(model, num_stages: int, method="uniform") -> list:
    """(start, end) ranges over `model`'s top-level layers, one per stage, consecutive and covering all.

    method: "uniform" (equal layer counts), "parameters" (balanced parameter counts), "balanced"
    (equal multiply-adds of forward and backward, cutting inside a Linear by its output features;
    for models whose layers with parameters are all nn.Linear), or a list of num_stages - 1
    increasing split points (a stage starts at each): layer indices, or (layer, output feature)
    pairs that cut inside a Linear."""
    check_pipeline_model(model)
    n = len(model)
    if not isinstance(num_stages, int) or isinstance(num_stages, bool) or num_stages < 1:
        raise ValueError(f"Invalid number of pipeline stages: {num_stages!r} (expected a positive integer)")
    if num_stages > n and method in ("uniform", "parameters"):
        raise ValueError(f"cannot split a model of {n} layers into {num_stages} stages: every stage needs at "
                         f"least one layer; use at most {n} stages")
    if isinstance(method, str):
        if method == "uniform":
            return _bounds(_uniform(n, num_stages), n)
        if method == "parameters":
            sizes = [sum(p.data.size for p in layer.parameters()) for layer in model]
            return _bounds(_by_parameters(sizes, num_stages), n)
        if method == "balanced":
            return _bounds(_balanced(model, num_stages) if num_stages > 1 else [], n)
        raise ValueError(f"unknown partition method {method!r}; expected 'uniform', 'parameters', 'balanced' or a "
                         "list of split points")
    points = [tuple(p) if isinstance(p, list) else p for p in method]
    if len(points) != num_stages - 1:
        raise ValueError(f"{num_stages} stages need {num_stages - 1} split points, got {len(points)}: {points}")
    _check_points(model, points)
    return _bounds(points, n)
