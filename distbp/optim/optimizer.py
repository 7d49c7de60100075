"""Optimizer base: param_groups and per-parameter state with PyTorch's state_dict layout.

A subclass implements `_update(p, grad, state, group)` for one parameter; the base class loops over
groups and parameters, skips parameters with no gradient, and (de)serialises state."""
from __future__ import annotations

import copy

from .. import backend
from ..autograd import enable_grad


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        self.state = {}  # keyed by the parameter object, as torch does
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        group["params"] = list(group["params"])
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        for k in ("lr", "weight_decay", "momentum", "eps"):
            if k in group and group[k] < 0:
                raise ValueError(f"Invalid {k.replace('_', ' ')}: {group[k]}")
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
        state = self.state
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    st = state.get(p)
                    if st is None:
                        st = state[p] = {}
                    self._update(p, p.grad, st, group)
        return loss

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
                    state[index[id(p)]] = {k: (backend.to_numpy(v).copy() if backend.is_array(v) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        params = {}
        for saved, own in zip(groups, self.param_groups):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"optimizer state group has {len(saved['params'])} parameters, this "
                                 f"optimizer's group has {len(own['params'])}")
            for i, p in zip(saved["params"], own["params"]):
                params[i] = p
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            xp = backend.get_array_module(p.data)
            self.state[p] = {k: (xp.asarray(v, dtype=p.data.dtype) if backend.is_array(v) else v)
                             for k, v in st.items()}

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params"]
        return "\n".join(lines) + "\n)"
