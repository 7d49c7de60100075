"""`distbp.bench --tensor-parallel T`: per-rank parameter bytes counted by hand for a small MLP (the
split layers hold 1/T of their weights), and wrong combinations as one line and exit status 2."""
import json

import pytest

from distbp import bench

SIZES = [16, 8, 6, 4]   # Column 16->8, Row 8->6, a trailing Linear 6->4 whole on every rank
ITEM = 4                # float32
ARGV = ["--sizes", ",".join(map(str, SIZES)), "--batch-per-rank", "4", "--steps", "2", "--warmup", "1", "--json"]


def _bytes_per_rank(t: int) -> int:
    column = (SIZES[1] // t) * SIZES[0] + SIZES[1] // t   # rows of the weight and of the bias
    row = SIZES[2] * (SIZES[1] // t) + SIZES[2]           # columns of the weight; the bias whole
    head = SIZES[3] * SIZES[2] + SIZES[3]
    return ITEM * (column + row + head)


@pytest.mark.mpi
def test_bench_tensor_parallel_reports_the_shards_bytes_per_rank(comm, capsys):
    if comm.size % 2:   # an odd world cannot hold tensor ranks in pairs: one line, exit status 2
        assert bench.main([*ARGV, "--tensor-parallel", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "not a multiple of it" in err
        return
    assert bench.main([*ARGV, "--tensor-parallel", "2"]) == 0
    if comm.rank:
        return
    out = json.loads(capsys.readouterr().out)
    assert out["tensor_parallel"] == 2 and out["dp_size"] == comm.size // 2
    assert out["global_batch"] == 4 * comm.size // 2 and out["samples_per_sec"] > 0 and out["step_ms"] > 0
    assert out["param_bytes"] == out["grad_bytes"] == [_bytes_per_rank(2)] * comm.size
    assert out["optimizer_state_bytes"] == [0] * comm.size   # plain SGD keeps no state
    # the split layers' share: exactly half of their single-process bytes
    whole = SIZES[1] * SIZES[0] + SIZES[1] + SIZES[2] * SIZES[1]
    assert _bytes_per_rank(2) - _bytes_per_rank(1) == -ITEM * whole // 2


@pytest.mark.mpi(min_size=2)
def test_bench_tensor_parallel_cnn_splits_only_its_head(comm, capsys):
    if comm.size % 2:
        pytest.skip("tensor ranks come in pairs")
    assert bench.main([*ARGV, "--model", "cnn", "--tensor-parallel", "2"]) == 0
    if comm.rank:
        return
    out = json.loads(capsys.readouterr().out)
    # 28x28 images: conv 1->16 and 16->32 (3x3) with batch norm, whole on every rank; the head
    # Linear(32*7*7, 64) -> Linear(64, 10) split: 32 of the 64 hidden features on each rank
    trunk = (16 * 9 + 16) + 2 * 16 + (32 * 16 * 9 + 32) + 2 * 32
    head = (32 * 1568 + 32) + (10 * 32 + 10)
    assert out["model"] == "cnn" and out["param_bytes"] == [ITEM * (trunk + head)] * comm.size


@pytest.mark.parametrize("argv, words", [
    (["--tensor-parallel", "0"], "--tensor-parallel must be at least 1"),
    (["--tensor-parallel", "2", "--zero", "1"], "without --zero"),
    (["--tensor-parallel", "2", "--pipeline-stages", "2"], "without --zero, --pipeline-stages"),
    (["--tensor-parallel", "2", "--compare-bare"], "--compare-bare"),
])
def test_bench_tensor_parallel_usage_errors_are_one_line(capsys, argv, words):  # parsing only
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--model", "gru", "--tensor-parallel", "1"], "supports the models mlp and cnn"),
    (["--sizes", "16,7,4", "--tensor-parallel", "2"], "not divisible by it"),
])
def test_bench_tensor_parallel_model_errors_exit_2_in_one_line(capsys, argv, words):
    assert bench.main([*ARGV, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err
