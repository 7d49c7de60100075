"""Checkpoints: exact round trips, atomic files, newest/prune, and one clear error per bad file."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import distbp as db
from distbp import nn, optim
from distbp.distributed import SelfComm
from distbp.training import checkpoint
from distbp.training.checkpoint import CheckpointError, checkpoint_path


def _trained(model_sizes=(4, 3, 2), opt="sgd"):
    db.manual_seed(0)
    model = nn.Sequential(nn.Linear(*model_sizes[:2]), nn.ReLU(), nn.Linear(*model_sizes[1:]))
    params = list(model.parameters())
    o = optim.SGD(params, lr=0.1, momentum=0.9) if opt == "sgd" else optim.Adam(params, lr=0.01)
    for _ in range(2):
        o.zero_grad()
        (model(db.tensor(np.ones((5, model_sizes[0]), np.float32))) ** 2).sum().backward()
        o.step()
    return model, o


def test_round_trip_restores_weights_optimizer_state_and_meta_exactly(tmp_path):
    model, opt = _trained()
    meta = {"step": 7, "epoch": 1, "batch": 3, "rng": db.get_rng_state(), "config": {"lr": 0.1}}
    path = str(tmp_path / "ck.safetensors")
    checkpoint.save(path, model, opt, meta, SelfComm())
    ck = checkpoint.load(path)
    assert ck.meta == meta                                 # the PCG64 state's 128-bit integers survive JSON
    fresh, fresh_opt = _trained((4, 3, 2))
    for p in fresh.parameters():
        p.data[...] = 0
    checkpoint.restore(ck, fresh, fresh_opt)
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert np.array_equal(a, b), k
    sa, sb = opt.state_dict(), fresh_opt.state_dict()
    for i in sa["state"]:
        assert np.array_equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
    assert sa["param_groups"] == sb["param_groups"]


def test_adam_state_round_trips_and_the_next_step_is_identical(tmp_path):
    model, opt = _trained(opt="adam")
    path = str(tmp_path / "a.safetensors")
    checkpoint.save(path, model, opt, {"step": 2}, None)
    other, other_opt = _trained(opt="sgd")
    other_opt = optim.Adam(list(other.parameters()), lr=0.01)
    checkpoint.restore(checkpoint.load(path), other, other_opt)
    for m, o in ((model, opt), (other, other_opt)):
        o.zero_grad()
        (m(db.tensor(np.ones((5, 4), np.float32))) ** 2).sum().backward()
        o.step()
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert np.array_equal(a, b)


def test_file_is_plain_safetensors_with_readable_metadata(tmp_path):
    model, opt = _trained()
    path = str(tmp_path / "ck.safetensors")
    checkpoint.save(path, model, opt, {"step": 1}, None)
    tensors = load_file(path)
    assert np.array_equal(tensors["model/0.weight"], model.state_dict()["0.weight"])
    assert "optim/0/momentum_buffer" in tensors
    assert not os.path.exists(path + ".tmp")


def test_latest_and_prune_order_by_step_and_ignore_unfinished_files(tmp_path):
    model, opt = _trained()
    for step in (5, 40, 300):
        checkpoint.save(checkpoint_path(tmp_path, step), model, opt, {"step": step}, None)
    (tmp_path / "ckpt-00000999.safetensors.tmp").write_bytes(b"half")
    assert checkpoint.latest(tmp_path) == checkpoint_path(tmp_path, 300)
    assert checkpoint.load(tmp_path).meta["step"] == 300       # a folder means its newest file
    checkpoint.prune(tmp_path, keep=2)
    assert [os.path.basename(p) for p in checkpoint.list_checkpoints(tmp_path)] == [
        "ckpt-00000040.safetensors", "ckpt-00000300.safetensors"]
    assert checkpoint.latest(tmp_path / "missing") is None


@pytest.fixture
def saved(tmp_path):
    model, opt = _trained()
    path = str(tmp_path / "ck.safetensors")
    checkpoint.save(path, model, opt, {"step": 1}, None)
    return path


def test_truncated_file_is_reported_with_its_name(saved):
    data = Path(saved).read_bytes()
    Path(saved).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {saved} is truncated or corrupt"):
        checkpoint.load(saved)


def test_flipped_byte_in_a_tensor_fails_the_checksum(saved):
    data = bytearray(Path(saved).read_bytes())
    data[-3] ^= 0xFF
    Path(saved).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        checkpoint.load(saved)


def test_garbage_and_missing_files_and_foreign_safetensors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path)
    other = str(tmp_path / "other.safetensors")
    save_file({"w": np.zeros(2, np.float32)}, other, metadata={"x": json.dumps(1)})
    with pytest.raises(CheckpointError, match="not a distbp checkpoint"):
        checkpoint.load(other)


def test_checkpoint_of_another_model_names_file_and_mismatch(saved):
    db.manual_seed(0)
    wider = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match=r"does not fit this model.*size mismatch for 0.weight"):
        checkpoint.restore(checkpoint.load(saved), wider)
    deeper = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2), nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="missing keys"):
        checkpoint.restore(checkpoint.load(saved), deeper)


def test_buffers_such_as_batchnorm_running_stats_round_trip(tmp_path):
    db.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model(db.tensor(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)))   # updates the stats
    running = model[1].running_mean.copy()
    assert np.abs(running).sum() > 0
    path = str(tmp_path / "bn.safetensors")
    checkpoint.save(path, model, None, {}, None)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    checkpoint.restore(checkpoint.load(path), fresh)
    np.testing.assert_array_equal(fresh[1].running_mean, running)
    assert "model/1.running_var" in load_file(path)


# ----- the checksum covers the whole file; a failed save leaves no .tmp; pruning keeps to one run -----
def _meta(step=1, run_id=None):
    meta = {"step": step, "epoch": 0, "batch": step, "rng": db.get_rng_state(), "config": {"lr": 0.25}}
    return meta if run_id is None else {**meta, "run_id": run_id}


def test_every_flipped_byte_is_an_error_naming_the_file(tmp_path):
    model, opt = _trained()
    path = str(tmp_path / "ck.safetensors")
    checkpoint.save(path, model, opt, _meta(step=7), None)
    data = Path(path).read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    # the classes of bytes a flip can hit, each checked below (with every other byte)
    header = data[8:header_end].decode()
    places = {"header length": 0, "header syntax": 8, "tensor name": 8 + header.index("model/0.weight"),
              "step in meta": 8 + header.index('\\"step\\": 7') + len('\\"step\\": '),
              "optimizer lr": 8 + header.index('\\"lr\\": 0.1') + len('\\"lr\\": 0.'),
              "momentum": 8 + header.index('\\"momentum\\": 0.9') + len('\\"momentum\\": 0.'),
              "checksum": 8 + header.index("sha256:") + len("sha256:"), "tensor bytes": header_end + 5,
              "last byte": len(data) - 1}
    assert all(0 <= i < len(data) for i in places.values())
    loaded = []
    for i in range(len(data)):
        for mask in (0x01, 0xFF):
            spoiled = bytearray(data)
            spoiled[i] ^= mask
            Path(path).write_bytes(bytes(spoiled))
            try:
                checkpoint.load(path)
                loaded.append((i, mask))
            except CheckpointError as e:
                assert path in str(e)
    assert loaded == []
    Path(path).write_bytes(data)
    assert checkpoint.load(path).meta["step"] == 7   # the intact file still loads


def test_a_changed_hyperparameter_in_the_metadata_fails_the_checksum(tmp_path):
    model, opt = _trained()
    path = str(tmp_path / "ck.safetensors")
    checkpoint.save(path, model, opt, _meta(), None)
    data = Path(path).read_bytes()
    assert data.count(b'\\"lr\\": 0.1') == 1
    Path(path).write_bytes(data.replace(b'\\"lr\\": 0.1', b'\\"lr\\": 0.7'))   # same length: valid safetensors
    assert load_file(path)                                           # a plain reader sees nothing wrong
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is corrupt: its checksum does not match"):
        checkpoint.load(path)


def test_a_checkpoint_of_the_first_format_still_loads_and_its_tensors_are_checked(tmp_path):
    model, opt = _trained()
    tensors, metadata = checkpoint.pack(model, opt, _meta(step=3))
    del metadata["checksum"]
    metadata.update(format="distbp-checkpoint/1", crc32=checkpoint._crc(tensors))
    path = str(tmp_path / "old.safetensors")
    save_file(tensors, path, metadata=metadata)
    ck = checkpoint.load(path)
    assert ck.meta["step"] == 3 and np.array_equal(ck.model["0.weight"], model.state_dict()["0.weight"])
    data = bytearray(Path(path).read_bytes())
    data[-3] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum does not match"):
        checkpoint.load(path)


def test_a_failed_save_removes_its_tmp_and_keeps_the_old_file(tmp_path, monkeypatch):
    model, opt = _trained()
    path = str(tmp_path / "ck.safetensors")
    checkpoint.save(path, model, opt, _meta(step=1), SelfComm())

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {path}: No space left on device"):
        checkpoint.save(path, model, opt, _meta(step=2), SelfComm())
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.safetensors"]           # no .tmp left to fill the disk
    assert checkpoint.load(path).meta["step"] == 1


def test_prune_deletes_only_the_old_checkpoints_of_its_own_run(tmp_path):
    model, opt = _trained()
    for step, run in ((1, "aaa"), (2, "bbb"), (3, "aaa"), (4, "aaa"), (5, None), (6, "bbb")):
        checkpoint.save(checkpoint_path(tmp_path, step), model, opt, _meta(step, run), None)
    (tmp_path / "ckpt-00000009.safetensors").write_bytes(b"\x00" * 20)   # unreadable: nobody's
    assert [checkpoint.run_id_of(p) for p in checkpoint.list_checkpoints(tmp_path)] == [
        "aaa", "bbb", "aaa", "aaa", None, "bbb", None]
    checkpoint.prune(tmp_path, 1, "aaa")
    assert [int(os.path.basename(p)[5:13]) for p in checkpoint.list_checkpoints(tmp_path)] == [2, 4, 5, 6, 9]


def test_prune_never_deletes_the_file_just_saved_after_a_resume_of_an_older_one(tmp_path):
    model, opt = _trained()
    for step in (8, 9, 10, 3):   # 3: saved after resuming the run from an older checkpoint
        checkpoint.save(checkpoint_path(tmp_path, step), model, opt, _meta(step, "aaa"), None)
    checkpoint.prune(tmp_path, 2, "aaa", upto=3)
    assert len(checkpoint.list_checkpoints(tmp_path)) == 4
    checkpoint.save(checkpoint_path(tmp_path, 4), model, opt, _meta(4, "aaa"), None)
    checkpoint.prune(tmp_path, 1, "aaa", upto=4)
    assert [int(os.path.basename(p)[5:13]) for p in checkpoint.list_checkpoints(tmp_path)] == [4, 8, 9, 10]
