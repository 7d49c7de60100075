"""A tensor-parallel model's checkpoint state in the single-process layout, and back.

A checkpoint holds the whole model under its single-process names and the optimizer state keyed by
the parameter's position in the single-process `parameters()` (distbp/training/checkpoint.py).
`parallelize` keeps the layer names and the order of the parameters, so the names and positions
are already those of one process; only the sharded tensors differ. Saving gathers them (weights
and the optimizer's per-parameter arrays alike, which have the parameter's shape) over `tp_comm`;
resuming slices this rank's block back out, so a file written with any --tensor-parallel resumes
under any other, or on one process.
"""
from __future__ import annotations

from ..distributed.tensor_parallel import full_state_dict, gather_shards
from .checkpoint import Checkpoint


def _shard_specs(model) -> dict:
    """Full parameter name -> ShardSpec of every sliced parameter of `model`."""
    return {f"{prefix}.{name}" if prefix else name: spec
            for prefix, module in model.named_modules()
            for name, spec in getattr(module, "shard_spec", {}).items() if spec.dim is not None}


def gather_state(model, optimizer_state, tp_comm):
    """Collective over `tp_comm`: (model state_dict, optimizer state_dict) in the single-process layout
    from this rank's shards and `optimizer_state` (its optimizer's state_dict over `model`'s
    parameters, or None). `model` may be a PipelineStage: then both are its part of the model."""
    model_state = full_state_dict(model, tp_comm)
    if optimizer_state is None:
        return model_state, None
    sd = optimizer_state
    params = list(model.named_parameters())
    names = [n for n, _ in params]
    shapes = {n: p.shape for n, p in params}
    state = {i: dict(s) for i, s in sd["state"].items()}
    # every rank holds state for the same positions with the same keys (they step together), so the
    # gathers below run in the same order on every rank of tp_comm
    keys = sorted({k for s in state.values() for k in s})
    for key in keys:
        arrays = {names[i]: s[key] for i, s in state.items()
                  if key in s and getattr(s[key], "shape", None) == shapes[names[i]]}
        full = gather_shards(model, arrays, tp_comm)
        for i, s in state.items():
            if names[i] in full:
                s[key] = full[names[i]]
    return model_state, {"state": state, "param_groups": sd["param_groups"]}


def _slice(array, spec):
    index = [slice(None)] * array.ndim
    index[spec.dim] = slice(spec.start, spec.stop)
    return array[tuple(index)].copy()


def local_checkpoint(ckpt: Checkpoint, model) -> Checkpoint:
    """`ckpt` (the single-process layout) with every sharded tensor cut to this rank's block of `model`
    (a PipelineStage: of its part; the optimizer state stays indexed by the whole model's parameters)."""
    specs = _shard_specs(model)
    names = getattr(model, "full_parameter_names", None) or [n for n, _ in model.named_parameters()]
    weights = {k: _slice(v, specs[k]) if k in specs and v.shape[specs[k].dim] == specs[k].full else v
               for k, v in ckpt.model.items()}
    state = {}
    for i, s in ckpt.optimizer["state"].items():
        name = names[i] if 0 <= i < len(names) else None
        spec, full = specs.get(name), ckpt.model.get(name)
        # an array of the parameter's full shape is per-element state (momentum, moments): slice it
        state[i] = {k: _slice(v, spec) if spec is not None and full is not None
                    and getattr(v, "shape", None) == full.shape else v for k, v in s.items()}
    return Checkpoint(ckpt.path, weights, {"state": state, "param_groups": ckpt.optimizer["param_groups"]},
                      ckpt.meta)
