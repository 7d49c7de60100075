"""Optimizer base: param_groups and per-parameter state with PyTorch's state_dict layout.

A subclass implements `_update(p, grad, state, group)` for one parameter; the base class loops over
groups and parameters, skips parameters with no gradient, and (de)serialises state.

torch's implementation switches (`foreach`, `fused`, `capturable`, `differentiable`) are accepted
and kept in param_groups, as torch keeps them, so signatures and state_dicts line up; none changes a
number here. `capturable` (CUDA graphs) and `differentiable` (autograd through the step) have no
meaning in distbp, so True raises NotImplementedError."""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy

from .. import backend
from ..autograd import enable_grad

# hyperparameters that must be >= 0, with torch's wording for the error
_NONNEGATIVE = {"lr": "learning rate", "eps": "epsilon value", "momentum": "momentum value",
                "weight_decay": "weight_decay value"}
# flags that must be a bool (or None, where torch lets the implementation choose)
_FLAGS = {"maximize": False, "foreach": True, "fused": True, "capturable": False, "differentiable": False}
_UNSUPPORTED = {"capturable": "there are no CUDA graphs to capture",
                "differentiable": "optimizer steps record no autograd graph"}


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        self.state = defaultdict(dict)  # keyed by the parameter object; a defaultdict as in torch
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        group["params"] = list(group["params"])
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        for k, name in _NONNEGATIVE.items():
            if k in group and group[k] < 0:
                raise ValueError(f"Invalid {name}: {group[k]}")
        _check_flags(group)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient. Updates act on .data arrays directly, so
        they record no graph."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict) -> None:
        """Update one group's parameters that have a gradient; a subclass may override it with a
        faster loop for a common case (plain SGD does)."""
        state = self.state
        for p in group["params"]:
            if p.grad is not None:
                st = state.get(p)
                if st is None:
                    st = state[p] = {}
                self._update(p, p.grad, st, group)

    def _update(self, p, grad, state, group) -> None:
        raise NotImplementedError

    # ----- state: torch layout, parameters as indices, arrays as host numpy -----
    def state_dict(self) -> dict:
        index = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: _pack(k, v) for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        params = load_param_groups(self.param_groups, state_dict)
        self.state = defaultdict(dict)
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {k: _unpack(k, v, p.data) for k, v in st.items()}

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


def load_param_groups(param_groups: list, state_dict: dict) -> dict:
    """Check that a saved state's groups match `param_groups`, copy the saved hyperparameters into
    them, and return {saved parameter index: parameter}."""
    groups = state_dict["param_groups"]
    if len(groups) != len(param_groups):
        raise ValueError(f"optimizer state has {len(groups)} parameter groups, this optimizer has "
                         f"{len(param_groups)}")
    params = {}
    for saved, own in zip(groups, param_groups):
        if len(saved["params"]) != len(own["params"]):
            raise ValueError(f"optimizer state group has {len(saved['params'])} parameters, this "
                             f"optimizer's group has {len(own['params'])}")
        params.update({int(i): p for i, p in zip(saved["params"], own["params"])})
        own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
    return params


def _check_flags(group: dict) -> None:
    for k, none_ok in _FLAGS.items():
        v = group.get(k)
        if k not in group or (v is None and none_ok):
            continue
        if not isinstance(v, bool):
            raise TypeError(f"{k} must be a bool{' or None' if none_ok else ''}, got {v!r}")
        if v and k in _UNSUPPORTED:
            raise NotImplementedError(f"{k}=True is not supported by distbp: {_UNSUPPORTED[k]}")
    if group.get("fused") and group.get("foreach"):
        raise ValueError("`fused` and `foreach` cannot be `True` together.")


def _pack(key, value):
    """One state entry as torch saves it: arrays as host numpy copies; `step`, kept as a Python int
    while training (no device round trip per step), as torch's 0-d float32 tensor."""
    if key == "step":
        return numpy.array(float(value), dtype=numpy.float32)
    return backend.to_numpy(value).copy() if backend.is_array(value) else value


def _unpack(key, value, like):
    """The inverse of _pack: arrays onto the parameter's device and dtype, `step` back to an int."""
    if key == "step":  # accepts an int, a 0-d or 1-element array, or a torch tensor
        return round(float(value.item() if hasattr(value, "item") else value))
    if backend.is_array(value):  # a copy, so stepping never writes into the caller's state_dict
        return backend.get_array_module(like).array(value, dtype=like.dtype, copy=True)
    return value
