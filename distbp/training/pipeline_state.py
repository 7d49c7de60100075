"""A pipeline's checkpoint state in the single-process layout, and back.

A checkpoint holds the whole model under its single-process names and the optimizer state keyed
by the parameter's position in the single-process `parameters()` (distbp/training/checkpoint.py).
A stage holds a slice of both: its parameters under the full model's names, its optimizer over
those parameters only, indexed 0.. in the stage's order. Mapping through the parameter NAME makes a
file written by any grid load on any other: 1 process, P stages, P stages x R replicas."""
from __future__ import annotations

from .checkpoint import Checkpoint, CheckpointError


def gather_state(stage, optimizer_state, grid, model_state=None):
    """Collective over replica 0's stages: (model state_dict, optimizer state_dict) of the whole model
    in the single-process layout on world rank 0 (replica 0, stage 0, tensor rank 0); None on every
    other rank. `optimizer_state` is the stage's optimizer's state_dict (None: no optimizer);
    `model_state` the stage's weights (default `stage.state_dict()`; with tensor parallelism, its
    shards already gathered). Replicas hold identical weights and optimizer state, and so do the
    tensor ranks once gathered: replica 0's stages of tensor rank 0 are enough."""
    if grid.replica != 0 or grid.tp_rank != 0:
        return None
    names = [n for n, _ in stage.named_parameters()]
    mine = (stage.state_dict() if model_state is None else model_state, None, None)
    if optimizer_state is not None:
        sd = optimizer_state
        if len(sd["param_groups"]) != 1:
            raise ValueError("a pipeline checkpoint holds one optimizer parameter group per stage")
        group = {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
        mine = (mine[0], {names[i]: state for i, state in sd["state"].items()}, group)
    parts = grid.pipe_comm.allgather_obj(mine)
    if grid.stage != 0:
        return None
    weights = {}
    for part, _, _ in parts:
        weights.update(part)
    full = stage.full_parameter_names
    index = {name: i for i, name in enumerate(full)}
    states = {}
    for _, by_name, _ in parts:
        states.update({index[name]: st for name, st in (by_name or {}).items()})
    group = next(g for _, _, g in parts if g is not None)
    model_state = {k: weights[k] for k in stage.full_state_keys}
    return model_state, {"state": dict(sorted(states.items())), "param_groups": [{**group, "params": list(range(len(full)))}]}


def restore_stage(ckpt: Checkpoint, stage, optimizer) -> None:
    """Load this stage's part of a checkpoint written by any grid: its weights and buffers, and its
    parameters' optimizer state found by name."""
    if set(ckpt.model) != set(stage.full_state_keys):
        missing = sorted(set(stage.full_state_keys) - set(ckpt.model))
        unexpected = sorted(set(ckpt.model) - set(stage.full_state_keys))
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model: missing keys {missing}, "
                              f"unexpected keys {unexpected}")
    own = stage.state_dict()
    try:
        stage.load_state_dict({k: ckpt.model[k] for k in own})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model: {e.args[0]}") from None
    if optimizer is None:
        return
    groups = ckpt.optimizer["param_groups"]
    if len(groups) != 1 or len(groups[0]["params"]) != len(stage.full_parameter_names):
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this optimizer: it has {len(groups)} "
                              f"parameter groups, a pipeline stage resumes from one over the whole model")
    index = {name: i for i, name in enumerate(stage.full_parameter_names)}
    names = [n for n, _ in stage.named_parameters()]
    saved = ckpt.optimizer["state"]
    local = {j: saved[index[name]] for j, name in enumerate(names) if index[name] in saved}
    group = {k: v for k, v in groups[0].items() if k != "params"}
    try:
        optimizer.load_state_dict({"state": local, "param_groups": [{**group, "params": list(range(len(names)))}]})
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this optimizer: {e.args[0]}") from None
