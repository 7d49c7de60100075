"""Pipeline model parallelism: an nn.Sequential split into consecutive stages on different ranks, each
batch cut into micro-batches whose activations flow forward and gradients backward between
neighbouring stages, composed with data parallelism (world = stages x replicas, see ProcessGrid).

    partition       where to cut the model (equal layers, balanced parameters, equal work, or given points)
    LinearPiece     one stage's output features of a Linear cut between stages
    build_schedule  each stage's actions for one step ("gpipe", "1f1b"), checked by check_schedules
    PipelineStage   one rank's stage: runs its schedule, sums gradients over its replicas

See docs/model_parallel.md."""
from .partition import partition
from .schedule import (
    SCHEDULES,
    Action,
    ScheduleError,
    build_schedule,
    build_schedules,
    check_schedules,
    format_schedules,
    peak_in_flight,
    simulate_schedules,
)
from .split_linear import LinearPiece
from .stage import PipelineStage, PipelineStats, PipelineStepResult

__all__ = ["SCHEDULES", "Action", "LinearPiece", "PipelineStage", "PipelineStats", "PipelineStepResult", "ScheduleError",
           "build_schedule", "build_schedules", "check_schedules", "format_schedules", "partition",
           "peak_in_flight", "simulate_schedules"]
