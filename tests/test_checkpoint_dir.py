"""`python -m distbp.train` and its checkpoint folder, run as a user would on 1, 2 (and 4) ranks: one run
owns the folder, an older run's checkpoints are never spoiled unless the user says so, the destination
is checked before training, a resume trains the saved run's plan, and a changed dataset is refused.
Each case asserts the exit status, the line printed and the checkpoints left on disk."""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import train_jobs as jobs
from safetensors.numpy import load_file

from distbp.training import checkpoint

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="kills jobs found through /proc")
RANKS = [1, pytest.param(2, marks=pytest.mark.skipif(not jobs.MPIEXEC.exists(), reason="no mpiexec"))]
# xor: 700 training samples, batch 50: 14 steps an epoch
BASE = ["--no-progress", "--dataset", "xor", "--hidden", "8", "--batch-size", "50"]


def _files(folder) -> dict:
    return {os.path.basename(p): Path(p).read_bytes() for p in checkpoint.list_checkpoints(folder)}


def _owner(folder) -> str:
    owners = {checkpoint.run_id_of(p) for p in checkpoint.list_checkpoints(folder)}
    assert len(owners) == 1 and None not in owners, owners
    return owners.pop()


@pytest.mark.parametrize("ranks", [*RANKS, pytest.param(4, marks=RANKS[1].marks)])
def test_a_second_run_in_a_folder_in_use_is_refused_and_the_first_is_untouched(tmp_path, ranks):
    folder = tmp_path / "c"
    tag = f"first-{os.getpid()}-{ranks}"
    # one step an epoch, for ever: it trains (and saves every 50 steps) until it is killed
    first = jobs.start(ranks, *BASE, "--batch-size", "700", "--epochs", "1000000", "--checkpoint-every", "50",
                       "--checkpoint-dir", folder, tag=tag)
    try:
        deadline = time.monotonic() + 120
        while checkpoint.latest(folder) is None:
            assert first.poll() is None, first.communicate()[1]
            assert time.monotonic() < deadline, "the first run saved nothing in 120 s"
            time.sleep(0.05)
        owner = _owner(folder)
        second = jobs.run(ranks, *BASE, "--epochs", "1", "--checkpoint-dir", folder)
        jobs.one_line_error(second, f"--checkpoint-dir {folder} is in use by another run (run {owner}, pid ", ranks)
        assert "wait for it to end or choose another --checkpoint-dir" in second.stderr
        assert "epoch" not in second.stdout and first.poll() is None   # refused before training; the first goes on
    finally:
        jobs.kill_job(tag)                                             # kill -9, as a scheduler ends a job
        first.wait()
    saved = checkpoint.list_checkpoints(folder)
    assert saved and all(checkpoint.load(p).meta["run_id"] == owner for p in saved)   # intact, all its own
    # the kernel dropped the killed run's lock: the folder is free to resume (the plan is done at epoch 1)
    again = jobs.run(ranks, "--no-progress", "--checkpoint-dir", folder, "--resume", "--epochs", "1")
    assert again.returncode == 0, again.stderr
    assert f"checkpoint: {saved[-1]}\n" in again.stdout and "nothing left to do" in again.stdout
    assert checkpoint.list_checkpoints(folder) == saved


@pytest.mark.parametrize("ranks", RANKS)
def test_a_new_run_leaves_another_runs_checkpoints_alone_unless_told_to_overwrite(tmp_path, ranks):
    folder = tmp_path / "c"
    assert jobs.run(ranks, *BASE, "--epochs", "1", "--checkpoint-every", "5", "--checkpoint-dir", folder).returncode == 0
    before, owner = _files(folder), _owner(folder)
    assert sorted(before) == ["ckpt-00000005.safetensors", "ckpt-00000010.safetensors", "ckpt-00000014.safetensors"]
    new = jobs.run(ranks, *BASE, "--epochs", "1", "--seed", "1", "--checkpoint-dir", folder)
    jobs.one_line_error(new, f"--checkpoint-dir {folder} holds 3 checkpoint(s) of another run (run {owner}: "
                        "ckpt-00000005.safetensors, ckpt-00000010.safetensors, ckpt-00000014.safetensors); continue "
                        "that run with --resume, choose another --checkpoint-dir, or give "
                        "--overwrite-checkpoint-dir to delete them", ranks)
    assert _files(folder) == before                                   # none overwritten, none pruned
    over = jobs.run(ranks, *BASE, "--epochs", "1", "--seed", "1", "--checkpoint-every", "7", "--checkpoint-dir",
                    folder, "--overwrite-checkpoint-dir")
    assert over.returncode == 0, over.stderr
    assert f"--overwrite-checkpoint-dir: deleted 3 checkpoint(s) of run {owner} in {folder}" in over.stdout
    assert sorted(_files(folder)) == ["ckpt-00000007.safetensors", "ckpt-00000014.safetensors"]
    assert _owner(folder) != owner and f"checkpoint: {folder}/ckpt-00000014.safetensors\n" in over.stdout
    assert checkpoint.load(folder).meta["config"]["seed"] == 1        # the new run's, not the old step-14 file


@pytest.mark.parametrize("ranks", RANKS)
def test_the_destination_is_checked_before_training_and_unfinished_files_are_removed(tmp_path, ranks):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    bad = jobs.run(ranks, *BASE, "--epochs", "50", "--checkpoint-dir", blocker / "c")
    jobs.one_line_error(bad, f"cannot write checkpoints in --checkpoint-dir {blocker}/c: Not a directory", ranks)
    assert "epoch" not in bad.stdout                                  # not after the training: before it
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "ckpt-00000003.safetensors.tmp").write_bytes(b"half a checkpoint of a killed run")
    ok = jobs.run(ranks, *BASE, "--epochs", "1", "--checkpoint-dir", folder)
    assert ok.returncode == 0, ok.stderr
    assert "removed 1 unfinished checkpoint file(s) of an interrupted run: ckpt-00000003.safetensors.tmp" in ok.stdout
    assert sorted(os.listdir(folder)) == ["ckpt-00000014.safetensors", "distbp-run.lock"]


def _same(a, b):
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize("ranks", RANKS)
def test_resume_trains_the_saved_runs_plan_and_says_when_nothing_is_left(tmp_path, ranks):
    plan = [*BASE, "--epochs", "3", "--checkpoint-every", "4", "--keep-checkpoints", "50", "--optimizer", "adam",
            "--lr", "0.01"]                                           # 42 steps
    ref, part, other = tmp_path / "ref", tmp_path / "part", tmp_path / "other"
    assert jobs.run(ranks, *plan, "--checkpoint-dir", ref).returncode == 0
    assert jobs.run(ranks, *plan, "--steps", "10", "--checkpoint-dir", part, "--log-dir", part).returncode == 0
    saved = _files(part)
    # --steps is part of the saved plan: that run is complete
    done = jobs.run(ranks, "--no-progress", "--checkpoint-dir", part, "--resume")
    assert done.returncode == 0, done.stderr
    assert "nothing left to do: the run is at step 10 of its 10" in done.stdout
    assert f"checkpoint: {part}/ckpt-00000010.safetensors\n" in done.stdout and _files(part) == saved
    # nothing to do in another folder: the path printed is the one resumed from, and nothing is written
    fork = jobs.run(ranks, "--no-progress", "--resume", part / "ckpt-00000010.safetensors", "--checkpoint-dir", other)
    assert fork.returncode == 0 and f"checkpoint: {part}/ckpt-00000010.safetensors\n" in fork.stdout, fork.stderr
    assert checkpoint.list_checkpoints(other) == []
    # lift the cap only: 3 epochs, a checkpoint every 4 steps, all kept, the same log -- the saved run's plan
    more = jobs.run(ranks, "--no-progress", "--checkpoint-dir", part, "--resume", "--steps", "0")
    assert more.returncode == 0, more.stderr
    assert "42 steps of global batch 50" in more.stdout
    assert sorted(_files(part)) == sorted([*_files(ref), "ckpt-00000010.safetensors"])
    assert all(_same(ref / name, part / name) for name in _files(ref))   # the same ranks: bitwise
    steps = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(1, 43))
    # a setting that decides the result cannot change on resume
    changed = jobs.run(ranks, "--no-progress", "--checkpoint-dir", part, "--resume", "--batch-size", "20")
    jobs.one_line_error(changed, "was written with batch_size=50 but this run asks for batch_size=20", ranks)


@pytest.mark.parametrize("ranks", RANKS)
def test_a_resume_on_changed_data_is_refused(tmp_path, ranks):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    rows = [f"{a:.5f},{b:.5f},{c:.5f},{'yes' if a + c > 0 else 'no'}\n" for a, b, c in X]
    data = tmp_path / "d.csv"
    data.write_text("a,b,c,label\n" + "".join(rows))
    args = ["--no-progress", "--dataset", data, "--model", "linear", "--batch-size", "20", "--checkpoint-dir",
            tmp_path / "c"]
    assert jobs.run(ranks, *args, "--steps", "5").returncode == 0
    path = checkpoint.latest(tmp_path / "c")
    flipped = rows.copy()
    flipped[7] = flipped[7].replace("yes", "no") if "yes" in flipped[7] else flipped[7].replace("no", "yes")
    data.write_text("a,b,c,label\n" + "".join(flipped))
    refused = jobs.run(ranks, *args, "--resume", "--steps", "0")
    jobs.one_line_error(refused, f"--dataset {data} is not the data checkpoint {path} was trained on: the ", ranks)
    assert "split differs in its labels; resume with the same data" in refused.stderr
    data.write_text("a,b,c,label\n" + "".join(rows[:-1]))
    fewer = jobs.run(ranks, *args, "--resume", "--steps", "0")
    jobs.one_line_error(fewer, "differs in its number of samples", ranks)
    assert checkpoint.list_checkpoints(tmp_path / "c") == [path]       # nothing written by the refused runs
    data.write_text("a,b,c,label\n" + "".join(rows))
    assert jobs.run(ranks, *args, "--resume", "--steps", "0").returncode == 0


@pytest.mark.parametrize("ranks", RANKS)
def test_runs_without_a_checkpoint_dir_each_get_their_own_folder_and_resume_continues_the_newest(tmp_path, ranks):
    plan = [*BASE, "--epochs", "1"]                                  # 14 steps
    for n in (1, 2):   # the same command twice: two runs, side by side, neither refused nor touched
        result = jobs.run(ranks, *plan, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"checkpoint: checkpoints/run-{n}/ckpt-00000014.safetensors\n" in result.stdout
    first = _files(tmp_path / "checkpoints" / "run-1")
    more = jobs.run(ranks, "--no-progress", "--resume", "--epochs", "2", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "resumed from checkpoints/run-2/ckpt-00000014.safetensors" in more.stdout
    assert "checkpoint: checkpoints/run-2/ckpt-00000028.safetensors\n" in more.stdout
    assert _files(tmp_path / "checkpoints" / "run-1") == first and not (tmp_path / "checkpoints" / "run-3").exists()
