"""PipelineStage.last_stats: messages and bytes sent, and activation memory held, exact for a known
model; the peak equals the schedule's most micro-batches in flight times one micro-batch's bytes.

The model is one Linear per stage (as many stages as ranks), so stage s receives width W[s] and
sends width W[s + 1]: what it sends and holds can be counted by hand."""
import numpy as np
import pytest

import distbp as db
from distbp import nn
from distbp.distributed.grid import ProcessGrid
from distbp.distributed.pipeline import PipelineStage, build_schedule, partition
from distbp.distributed.pipeline.schedule import peak_in_flight

WIDTHS = [6, 7, 9, 8, 5]
BATCH = 16  # 1, 2, 4 and 8 micro-batches of equal size, for every replica count used here
ITEM = 8    # float64


def _stage(comm, schedule, free_after):
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    grid = free_after(ProcessGrid(comm, pipeline_stages=comm.size))
    model = nn.Sequential(*[nn.Linear(WIDTHS[i], WIDTHS[i + 1]) for i in range(comm.size)])
    stage = free_after(PipelineStage(model, grid, partition(model, grid.num_stages), schedule))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((BATCH, WIDTHS[0])), rng.integers(0, WIDTHS[comm.size], BATCH)
    return grid, stage, x, y


@pytest.mark.mpi
@pytest.mark.parametrize("micro_batches", [1, 4, 8])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "1f1b-split"])
def test_messages_and_bytes_sent_are_exact(comm, free_after, schedule, micro_batches):
    grid, stage, x, y = _stage(comm, schedule, free_after)
    for _ in range(2):  # the counters are per step, not cumulative
        stage.train_step(x, y, BATCH, micro_batches)
    stats, s = stage.last_stats, grid.stage
    sends_forward, sends_backward = not grid.is_last_stage, not grid.is_first_stage
    assert stats.messages_sent == micro_batches * (sends_forward + sends_backward)
    assert stats.bytes_sent == BATCH * ITEM * (WIDTHS[s + 1] * sends_forward + WIDTHS[s] * sends_backward)
    assert stats.step_s > 0 and 0 <= stats.recv_wait_s <= stats.step_s and 0 <= stats.bubble <= 1
    if comm.size == 1:
        assert stats.recv_wait_s == 0


@pytest.mark.mpi
@pytest.mark.parametrize("micro_batches", [1, 2, 8])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_peak_activation_memory_is_peak_in_flight_times_one_micro_batch(comm, free_after, schedule, micro_batches):
    grid, stage, x, y = _stage(comm, schedule, free_after)
    stage.train_step(x, y, BATCH, micro_batches)
    stats, s = stage.last_stats, grid.stage
    per_micro_batch = set(stats.activation_bytes.values())
    assert sorted(stats.activation_bytes) == list(range(micro_batches)) and len(per_micro_batch) == 1
    one = per_micro_batch.pop()
    if not grid.is_last_stage:
        # a Linear keeps its input (the received leaf, or the first stage's slice of the batch) and
        # its output until the backward; its weight is a parameter, not an activation
        assert one == BATCH // micro_batches * ITEM * (WIDTHS[s] + WIDTHS[s + 1])
    else:
        assert one > BATCH // micro_batches * ITEM * (WIDTHS[s] + WIDTHS[s + 1])  # and the loss's arrays
    in_flight = peak_in_flight(build_schedule(schedule, grid.num_stages, micro_batches, s))
    assert stats.peak_activation_bytes == in_flight * one


@pytest.mark.mpi
@pytest.mark.parametrize("micro_batches", [1, 2, 8])
def test_split_schedule_holds_each_linear_input_and_output_gradient_until_the_weights(comm, free_after, micro_batches):
    grid, stage, x, y = _stage(comm, "1f1b-split", free_after)
    stage.train_step(x, y, BATCH, micro_batches)
    stats, s = stage.last_stats, grid.stage
    rows = BATCH // micro_batches
    # from its backward to the weight actions a micro-batch keeps the Linear's input and the gradient of
    # its output (which the bias gradient shares)
    stash = rows * ITEM * (WIDTHS[s] + WIDTHS[s + 1])
    assert stats.weight_stash_bytes == {m: stash for m in range(micro_batches)}
    one = stats.activation_bytes[0]
    held = peak = 0
    for action in build_schedule("1f1b-split", grid.num_stages, micro_batches, s):
        held += {"forward": one, "backward": stash - one, "weight": -stash}.get(action.op, 0)
        peak = max(peak, held)
    assert stats.peak_activation_bytes == peak >= micro_batches * stash


@pytest.mark.mpi
def test_one_f_one_b_holds_less_than_gpipe_on_the_first_stage(comm, free_after):
    if comm.size < 2:
        pytest.skip("a pipeline of one stage holds every micro-batch under both schedules")
    peaks = {}
    for schedule in ("gpipe", "1f1b"):
        grid, stage, x, y = _stage(comm, schedule, free_after)
        stage.train_step(x, y, BATCH, 8)
        peaks[schedule] = stage.last_stats.peak_activation_bytes
    if grid.is_first_stage:
        assert peaks["1f1b"] * 8 == peaks["gpipe"] * comm.size  # min(P, M) of M micro-batches


@pytest.mark.mpi
def test_bench_reports_the_stats_of_every_stage(comm, capsys):
    import json

    from distbp import bench
    p = comm.size
    argv = ["--sizes", "6,5,4,3,2,3", "--batch-per-rank", "8", "--steps", "2", "--warmup", "1", "--dtype", "float64",
            "--pipeline-stages", str(p), "--micro-batches", "4", "--partition", "parameters", "--json"]
    assert bench.main(argv) == 0
    if comm.rank:
        return
    out = json.loads(capsys.readouterr().out)
    assert out["pipeline_stages"] == p and out["global_batch"] == 8 and out["samples_per_sec"] > 0
    assert len(out["bubble_pct"]) == len(out["peak_activation_bytes"]) == p
    assert out["messages_per_step"] == [4 * ((s < p - 1) + (s > 0)) for s in range(p)]
    assert out["bubble_ideal_pct"] == pytest.approx(100 * (p - 1) / (4 + p - 1))


def test_bench_pipeline_usage_errors_are_one_line(capsys):  # no MPI needed: parsing only
    from distbp import bench
    for argv, words in ((["--micro-batches", "9", "--batch-per-rank", "8"], "every micro-batch needs a sample"),
                        (["--partition", "2,x"], "--partition '2,x': give uniform, parameters, balanced"),
                        (["--compare-bare"], "without --scaling or --compare-bare")):
        with pytest.raises(SystemExit):
            bench.parse_args(["--pipeline-stages", "1", *argv])
        assert words in capsys.readouterr().err
