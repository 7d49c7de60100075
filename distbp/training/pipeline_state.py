"""A pipeline's checkpoint state in the single-process layout, and back.

A checkpoint holds the whole model under its single-process names and the optimizer state keyed
by the parameter's position in the single-process `parameters()` (distbp/training/checkpoint.py).
A stage holds a slice of both: its parameters under the full model's names, its optimizer over
those parameters only, indexed 0.. in the stage's order. Mapping through the parameter NAME makes a
file written by any grid load on any other: 1 process, P stages, P stages x R replicas."""
from __future__ import annotations

import numpy

from ..distributed.pipeline.split_linear import LinearPiece
from .checkpoint import Checkpoint, CheckpointError
from .tensor_parallel_state import local_checkpoint


def _piece_shapes(stage) -> dict:
    """Parameter name -> shape of this stage's share of each Linear cut between stages (LinearPiece)."""
    return {f"{prefix}.{name}": tuple(p.shape) for prefix, module in stage.named_modules()
            if isinstance(module, LinearPiece) for name, p in module.named_parameters()}


def _merge_state(states: list, shape: tuple) -> dict:
    """One parameter's optimizer state from the stages that hold pieces of it, in stage order: the
    arrays of the piece's shape (momentum, moments) joined along the cut, the rest (step counts)
    the same on every stage."""
    merged = {}
    for key, value in states[0].items():
        if getattr(value, "shape", None) == shape:
            merged[key] = numpy.concatenate([st[key] for st in states], axis=0)
        else:
            merged[key] = value
    return merged


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
    pieces = _piece_shapes(stage)
    mine = (stage.state_dict() if model_state is None else model_state, None, None, pieces)
    if optimizer_state is not None:
        sd = optimizer_state
        if len(sd["param_groups"]) != 1:
            raise ValueError("a pipeline checkpoint holds one optimizer parameter group per stage")
        group = {k: v for k, v in sd["param_groups"][0].items() if k != "params"}
        mine = (mine[0], {names[i]: state for i, state in sd["state"].items()}, group, pieces)
    parts = grid.pipe_comm.allgather_obj(mine)
    if grid.stage != 0:
        return None
    # A Linear cut between stages (LinearPiece) comes in pieces, rows lo:hi of the whole in stage order
    weights, state_parts = {}, {}
    for part, by_name, _, shapes in parts:
        for name, value in part.items():
            weights.setdefault(name, []).append(value)
        for name, st in (by_name or {}).items():
            state_parts.setdefault(name, []).append((st, shapes.get(name)))  # shape: of this stage's rows
    weights = {name: v[0] if len(v) == 1 else numpy.concatenate(v, axis=0) for name, v in weights.items()}
    full = stage.full_parameter_names
    index = {name: i for i, name in enumerate(full)}
    states = {index[name]: v[0][0] if len(v) == 1 else _merge_state([st for st, _ in v], v[0][1])
              for name, v in state_parts.items()}
    group = next(g for _, _, g, _ in parts if g is not None)
    model_state = {k: weights[k] for k in stage.full_state_keys}
    return model_state, {"state": dict(sorted(states.items())), "param_groups": [{**group, "params": list(range(len(full)))}]}


def restore_stage(ckpt: Checkpoint, stage, optimizer) -> None:
    """Load this stage's part of a checkpoint written by any grid: its weights and buffers, and its
    parameters' optimizer state found by name (of a Linear cut between stages, this stage's rows)."""
    if _piece_shapes(stage):
        ckpt = local_checkpoint(ckpt, stage)
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
