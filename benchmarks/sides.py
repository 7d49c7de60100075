"""The sides of the paired benchmarks: one training step (forward, cross entropy, backward, SGD) of a
model from distbp's registry, in distbp, in PyTorch (the same architecture, translated layer by layer
by torch_mirror.py, with distbp's weights copied over) and, for the MLP, in hand-written NumPy.

Run as a worker by benchmarks/paired.py: `python benchmarks/sides.py SIDE THREADS`, SIDE one of
distbp, torch, numpy. A case is a dict: model, input_shape, num_outputs, options (the registry's
keyword options), batch, seed."""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling modules below
import paired


def registry_model(case):
    from distbp.training import registry
    return registry.build_model(case["model"], tuple(case["input_shape"]), case["num_outputs"],
                                **case.get("options", {}))


def build_distbp(case, x, y, lr, state):
    """distbp: the registry's model (seeded when `state` is None), F.cross_entropy, optim.SGD."""
    return distbp_step(registry_model, case, x, y, lr, state)


def distbp_step(make_model, case, x, y, lr, state):
    """A distbp training step on `make_model(case)` (built after seeding with the case's seed, then
    loaded with `state` unless None) and a reader of its weights: (step, params), paired.serve_steps'
    `build`. Only the public API that every revision has (tensor, optim.SGD, F.cross_entropy,
    backward), so that compare_revisions.py can run it on an older source tree too."""
    import distbp as db
    import distbp.nn.functional as F
    db.manual_seed(case.get("seed", 0))
    model = make_model(case)
    if state is not None:
        model.load_state_dict(state)
    opt = db.optim.SGD(model.parameters(), lr=lr)
    xt = db.tensor(x)

    def step():
        loss = F.cross_entropy(model(xt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def params():
        return {k: np.array(v) for k, v in model.state_dict().items()}
    return step, params


def build_torch(case, x, y, lr, state):
    """PyTorch: the mirror of the registry's model, loaded with `state` (strict), the same step."""
    import torch
    from torch_mirror import mirror
    model = mirror(registry_model(case))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def params():
        return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return step, params


def build_numpy(case, x, y, lr, state):
    """The registry's ReLU MLP by hand: the fewest NumPy calls we know for this math."""
    if case["model"] != "mlp" or case.get("options", {}).get("activation", "relu") != "relu":
        raise ValueError("the hand-written NumPy step is the ReLU MLP's only")
    names = list(state)  # Linear weight, bias, weight, bias, ... in layer order
    ws = [(state[w].copy(), state[b].copy()) for w, b in zip(names[::2], names[1::2])]
    x = x.reshape(len(x), -1)
    n = len(x)
    rows = np.arange(n)

    def step():
        acts = [x]
        h = x
        for i, (w, b) in enumerate(ws):
            z = h @ w.T
            z += b
            h = np.maximum(z, 0) if i < len(ws) - 1 else z
            acts.append(h)
        z = acts[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, y]).mean()  # noqa: F841  (computed, as a training loop would)
        g = p
        g[rows, y] -= 1
        g /= n
        for i in range(len(ws) - 1, -1, -1):
            w, b = ws[i]
            gw, gb = g.T @ acts[i], g.sum(axis=0)
            if i > 0:
                g = (g @ w) * (acts[i] > 0)
            w -= lr * gw
            b -= lr * gb

    def params():
        return {k: a.copy() for k, a in zip(names, (a for wb in ws for a in wb))}
    return step, params


SIDES = {"distbp": build_distbp, "torch": build_torch, "numpy": build_numpy}


def worker_argv(side: str, threads: int) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), side, str(threads)]


if __name__ == "__main__":
    side, threads = sys.argv[1], int(sys.argv[2])
    if side == "torch":
        import torch
        torch.set_num_threads(threads)
    paired.serve_steps(SIDES[side])
