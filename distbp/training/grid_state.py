"""A checkpoint of a run on a process grid (ZeRO, tensor ranks, pipeline stages, in any combination)
in the single-process layout, and back.

Saving undoes the splits from the innermost out, so each step sees what the one before left:

1. ZeRO: each data-parallel rank holds a slice of the optimizer state; `consolidate_state_dict`
   gives the plain optimizer's state on replica 0 (over the grid's dp_comm, one per stage and
   tensor rank). The other replicas hold the same weights and are done.
2. Tensor ranks: replica 0's T ranks of a stage gather their shards, weights and per-element
   optimizer state alike (tensor_parallel_state).
3. Stages: replica 0's tensor rank 0 of every stage sends its (now whole) part to stage 0
   (pipeline_state), which is world rank 0.

Resuming runs the other way on any grid: the whole file on every rank, cut to this rank's tensor
shards, then to its stage's parameters (found by name), then the ZeRO optimizer keeps its slice
(its load_state_dict takes the plain optimizer's state)."""
from __future__ import annotations

from . import checkpoint, pipeline_state, tensor_parallel_state


def gather_state(model, optimizer, grid, *, zero: bool, pipeline: bool):
    """Collective over the grid: (model state_dict, optimizer state_dict) of the whole model in the
    single-process layout on world rank 0, None elsewhere. `model` is a PipelineStage when
    `pipeline`, else the (tensor-parallel) model; `optimizer` None for a stage without parameters."""
    if optimizer is None:
        optimizer_state = None
    elif zero:   # collective over the optimizer's communicator (grid.dp_comm): state on replica 0
        optimizer_state = optimizer.consolidate_state_dict(to=0)
    else:
        optimizer_state = optimizer.state_dict()
    if grid.replica != 0:
        return None
    model_state = None
    if grid.tp_size > 1:
        model_state, optimizer_state = tensor_parallel_state.gather_state(model, optimizer_state, grid.tp_comm)
    if pipeline:
        return pipeline_state.gather_state(model, optimizer_state, grid, model_state)
    if grid.comm.rank != 0:
        return None
    return (model.state_dict() if model_state is None else model_state), optimizer_state


def restore(ckpt: checkpoint.Checkpoint, model, optimizer, grid, *, pipeline: bool) -> None:
    """Load this rank's part of a checkpoint written by any grid (or one process)."""
    if grid.tp_size > 1:
        ckpt = tensor_parallel_state.local_checkpoint(ckpt, model)
    if pipeline:
        pipeline_state.restore_stage(ckpt, model, optimizer)
    else:
        checkpoint.restore(ckpt, model, optimizer)
