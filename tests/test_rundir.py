"""The checkpoint directory's owner: lock, run id, another run's files, unfinished .tmp files, room.
(The same through `python -m distbp.train` on 1, 2 and 4 ranks: tests/test_checkpoint_dir.py.)"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distbp import nn, optim
from distbp.distributed import SelfComm
from distbp.training import checkpoint, rundir
from distbp.training.checkpoint import CheckpointError, checkpoint_path

ROOT = Path(__file__).resolve().parents[1]


def _save(directory, step, run_id):
    model = nn.Linear(2, 1)
    checkpoint.save(checkpoint_path(directory, step), model, optim.SGD(model.parameters(), lr=0.1),
                    {"step": step, "run_id": run_id} if run_id else {"step": step}, None)
    return checkpoint_path(directory, step)


@pytest.fixture
def claims():
    made = []
    yield made
    for c in made:
        c.release()


def test_a_claim_creates_the_folder_and_signs_its_lock(tmp_path, claims):
    folder = tmp_path / "a" / "b"
    claims.append(c := rundir.claim(str(folder), SelfComm()))
    assert len(c.run_id) == 12 and c.notes == []
    info = json.loads((folder / rundir.LOCK_NAME).read_text())
    assert info["run_id"] == c.run_id and info["pid"] == os.getpid()


def test_another_process_is_refused_while_the_lock_is_held_and_admitted_after(tmp_path, claims):
    claims.append(c := rundir.claim(str(tmp_path), SelfComm()))
    probe = ("import sys; from distbp.distributed import SelfComm; from distbp.training import rundir\n"
             "try:\n    rundir.claim(sys.argv[1], SelfComm())\nexcept ValueError as e:\n    print(e)\n")

    def other():
        env = dict(os.environ, PYTHONPATH=str(ROOT), DISTBP_NO_MPI="1")
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                              env=env, timeout=120, check=True).stdout.strip()
    said = other()
    assert said == (f"--checkpoint-dir {tmp_path} is in use by another run (run {c.run_id}, pid {os.getpid()} on "
                    f"{json.loads((tmp_path / rundir.LOCK_NAME).read_text())['host']}); wait for it to end or "
                    "choose another --checkpoint-dir")
    c.release()
    assert other() == ""


def test_a_new_run_is_refused_in_a_folder_with_another_runs_checkpoints(tmp_path, claims):
    theirs = [_save(tmp_path, 10, "f00f00f00f00"), _save(tmp_path, 20, "f00f00f00f00")]
    before = [Path(p).read_bytes() for p in theirs]
    with pytest.raises(CheckpointError) as e:
        rundir.claim(str(tmp_path), SelfComm())
    assert str(e.value) == (f"--checkpoint-dir {tmp_path} holds 2 checkpoint(s) of another run (run f00f00f00f00: "
                            "ckpt-00000010.safetensors, ckpt-00000020.safetensors); continue that run with --resume, "
                            "choose another --checkpoint-dir, or give --overwrite-checkpoint-dir to delete them")
    assert [Path(p).read_bytes() for p in theirs] == before
    claims.append(c := rundir.claim(str(tmp_path), SelfComm(), resumed={"run_id": "f00f00f00f00"}))
    assert c.run_id == "f00f00f00f00"


def test_a_resume_is_refused_beside_a_third_runs_checkpoints_and_overwrite_deletes_them(tmp_path, claims):
    _save(tmp_path, 10, "aaaaaaaaaaaa")
    mine = _save(tmp_path, 5, "bbbbbbbbbbbb")
    with pytest.raises(CheckpointError, match=r"holds 1 checkpoint\(s\) of another run than the one resumed "
                                              r"\(run bbbbbbbbbbbb\) \(run aaaaaaaaaaaa: ckpt-00000010"):
        rundir.claim(str(tmp_path), SelfComm(), resumed={"run_id": "bbbbbbbbbbbb"})
    claims.append(c := rundir.claim(str(tmp_path), SelfComm(), resumed={"run_id": "bbbbbbbbbbbb"}, overwrite=True))
    assert c.notes == [(f"--overwrite-checkpoint-dir: deleted 1 checkpoint(s) of run aaaaaaaaaaaa in {tmp_path}: "
                       "ckpt-00000010.safetensors")]
    assert checkpoint.list_checkpoints(tmp_path) == [mine]


def test_resuming_a_checkpoint_without_run_id_adopts_the_files_without_one(tmp_path, claims):
    old = _save(tmp_path, 3, None)
    claims.append(c := rundir.claim(str(tmp_path), SelfComm(), resumed={"step": 3}))
    assert len(c.run_id) == 12 and checkpoint.list_checkpoints(tmp_path) == [old]
    c.release()
    with pytest.raises(CheckpointError, match="of another run"):   # a new run is not their owner
        rundir.claim(str(tmp_path), SelfComm())


def test_unfinished_tmp_files_of_a_killed_run_are_removed_and_others_kept(tmp_path, claims):
    (tmp_path / "ckpt-00000004.safetensors.tmp").write_bytes(b"half a file")
    (tmp_path / "notes.tmp").write_text("not ours")
    claims.append(c := rundir.claim(str(tmp_path), SelfComm()))
    assert c.notes == [("removed 1 unfinished checkpoint file(s) of an interrupted run: "
                       "ckpt-00000004.safetensors.tmp")]
    assert sorted(os.listdir(tmp_path)) == [rundir.LOCK_NAME, "notes.tmp"]


def test_a_destination_that_cannot_hold_checkpoints_is_refused(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(CheckpointError, match=f"cannot write checkpoints in --checkpoint-dir {blocker}/c: "):
        rundir.claim(str(blocker / "c"), SelfComm())
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=3_000_000))
    with pytest.raises(CheckpointError, match=f"--checkpoint-dir {tmp_path} has 3.0 MB free but a checkpoint needs "
                                              "about 5.0 MB; free some space or choose another --checkpoint-dir"):
        rundir.claim(str(tmp_path), SelfComm(), need_bytes=5_000_000)
    assert rundir.claim(str(tmp_path), SelfComm(), need_bytes=1_000_000).release() is None   # the lock was freed


def test_a_claim_of_this_same_process_replaces_its_own_earlier_one(tmp_path, claims):
    # runs in one process are sequential: one that ended without releasing does not block the next
    first = rundir.claim(str(tmp_path), SelfComm())
    claims.append(second := rundir.claim(str(tmp_path), SelfComm()))
    assert first.run_id != second.run_id
