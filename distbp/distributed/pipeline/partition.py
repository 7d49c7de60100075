"""Where to cut an nn.Sequential into pipeline stages: consecutive ranges of its top-level layers.

    partition(model, 2)                        # equal layer counts: [(0, 3), (3, 5)] for 5 layers
    partition(model, 2, method="parameters")   # equal parameter counts, as near as contiguity allows
    partition(model, 3, method=[2, 4])         # explicit split points: [(0, 2), (2, 4), (4, len)]

Every layer counts as one (Flatten and activations included), every stage gets at least one."""
from __future__ import annotations

from ...nn import Sequential
from ...nn.norm import _BatchNorm

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


def partition(model, num_stages: int, method="uniform") -> list:
    """(start, end) ranges over `model`'s top-level layers, one per stage, consecutive and covering all.

    method: "uniform" (equal layer counts), "parameters" (balanced parameter counts), or a list of
    num_stages - 1 increasing split points (a stage starts at each)."""
    check_pipeline_model(model)
    n = len(model)
    if not isinstance(num_stages, int) or isinstance(num_stages, bool) or num_stages < 1:
        raise ValueError(f"Invalid number of pipeline stages: {num_stages!r} (expected a positive integer)")
    if num_stages > n:
        raise ValueError(f"cannot split a model of {n} layers into {num_stages} stages: every stage needs at "
                         f"least one layer; use at most {n} stages")
    if isinstance(method, str):
        if method == "uniform":
            return _bounds(_uniform(n, num_stages), n)
        if method == "parameters":
            sizes = [sum(p.data.size for p in layer.parameters()) for layer in model]
            return _bounds(_by_parameters(sizes, num_stages), n)
        raise ValueError(f"unknown partition method {method!r}; expected 'uniform', 'parameters' or a list of "
                         "split points")
    points = list(method)
    if len(points) != num_stages - 1:
        raise ValueError(f"{num_stages} stages need {num_stages - 1} split points, got {len(points)}: {points}")
    if any(not isinstance(p, int) or isinstance(p, bool) for p in points):
        raise ValueError(f"split points must be layer indices (integers), got {points}")
    if points != sorted(set(points)) or (points and (points[0] <= 0 or points[-1] >= n)):
        raise ValueError(f"split points {points} must increase strictly and lie in 1..{n - 1} (the model has {n} "
                         "layers; a stage starts at each point, and none may be empty)")
    return _bounds(points, n)
