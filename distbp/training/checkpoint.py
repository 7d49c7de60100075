"""Checkpoints: one `.safetensors` file per save, written atomically by rank 0.

Tensors: `model/<state_dict key>` (weights and buffers) and `optim/<param index>/<state name>`
(optimizer state arrays). The index is the parameter's position in the single-process model's
`parameters()`, whatever grid wrote the file: pipeline stages map it to and from parameter names
(distbp/training/pipeline_state.py), so a run resumes on another grid. Metadata (strings): `format`, `meta` (JSON: step, epoch, position in the
epoch, RNG state, config, run id -- whatever the trainer passes), `optimizer` (JSON: param_groups and
non-array state) and `checksum`: a SHA-256 of every tensor (name, dtype, shape, bytes) and of the
canonical JSON of all the other metadata, so a flipped byte anywhere is caught, not trained on.
Files of the first format (`distbp-checkpoint/1`, a CRC32 of the tensors only) still load.
`safetensors.numpy.load_file` reads the file with no distbp installed.

`save` is a collective: every rank calls it, rank 0 writes `<path>.tmp`, fsyncs, renames it over
`<path>`, and all ranks meet at a barrier, so a crash leaves the old file or the new one, never a torn
one; a failed write deletes its `.tmp`. `load` reads on the host; `load_shared` reads on rank 0 and broadcasts what it read."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import zlib
from dataclasses import dataclass

import numpy

from .. import backend

FORMAT = "distbp-checkpoint/2"
LEGACY_FORMAT = "distbp-checkpoint/1"   # its crc32 covers the tensors only
_NAME = re.compile(r"^ckpt-(\d+)\.safetensors$")
TMP_NAME = re.compile(r"^ckpt-\d+\.safetensors\.tmp$")   # what `write_atomic` leaves when killed mid-save


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


@dataclass
class Checkpoint:
    path: str
    model: dict          # state_dict: key -> numpy array
    optimizer: dict      # torch-layout optimizer state_dict ({"state": ..., "param_groups": ...})
    meta: dict


def checkpoint_path(directory: str, step: int) -> str:
    return os.path.join(directory, f"ckpt-{int(step):08d}.safetensors")


def _contiguous(array) -> numpy.ndarray:
    # not numpy.ascontiguousarray: it turns a 0-d array (e.g. num_batches_tracked) into shape (1,)
    array = numpy.asarray(array)
    return array if array.flags.c_contiguous else array.copy(order="C")


def _checksum(tensors: dict, metadata: dict) -> str:
    """SHA-256 of the whole content: every tensor's name, dtype, shape and bytes, and the canonical
    JSON of every other metadata entry (so the optimizer's lr or the step cannot change unseen)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != "checksum"}, sort_keys=True).encode())
    for key in sorted(tensors):
        array = _contiguous(tensors[key])
        digest.update(json.dumps([key, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.reshape(-1).view(numpy.uint8))
    return "sha256:" + digest.hexdigest()


def _crc(tensors: dict) -> str:
    """The first format's checksum (tensors only)."""
    crc = 0
    for key in sorted(tensors):
        crc = zlib.crc32(key.encode(), crc)
        crc = zlib.crc32(_contiguous(tensors[key]).tobytes(), crc)
    return f"{crc:08x}"


def _jsonable(value):
    if isinstance(value, (numpy.generic,)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def pack(model, optimizer, meta: dict) -> tuple[dict, dict]:
    """(tensors, metadata) for safetensors from a model, an optimizer (or None) and trainer metadata."""
    return pack_state(model.state_dict(), optimizer.state_dict() if optimizer is not None else None, meta)


def pack_state(model_state: dict, optimizer_state: dict | None, meta: dict) -> tuple[dict, dict]:
    """`pack` from a model's state_dict and an optimizer's (torch layout), e.g. gathered from pipeline
    stages (distbp/training/pipeline_state.py)."""
    tensors = {f"model/{k}": _contiguous(v) for k, v in model_state.items()}
    opt = {"param_groups": [], "scalars": {}}
    if optimizer_state is not None:
        sd = optimizer_state
        opt["param_groups"] = sd["param_groups"]
        for index, state in sd["state"].items():
            for name, value in state.items():
                if backend.is_array(value):
                    tensors[f"optim/{index}/{name}"] = _contiguous(backend.to_numpy(value))
                else:
                    opt["scalars"].setdefault(str(index), {})[name] = value
    metadata = {"format": FORMAT, "meta": json.dumps(meta, default=_jsonable),
                "optimizer": json.dumps(opt, default=_jsonable)}
    metadata["checksum"] = _checksum(tensors, metadata)
    return tensors, metadata


def write_atomic(path: str, data: bytes) -> None:
    """Write bytes so that `path` is either the old file or the complete new one, never a torn one.
    A failed write deletes its `.tmp`: left behind, it would hold the space the next save needs."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the data is already synced
        pass


def save(path: str, model, optimizer, meta: dict, comm=None, state=None) -> None:
    """Collective save: rank 0 writes `path` atomically while the other ranks wait for its outcome.
    `state`: (model state_dict, optimizer state_dict) to write instead of `model`'s and `optimizer`'s
    (needed on rank 0 only).

    A failed write (no space, no permission) raises CheckpointError on every rank, so none hangs."""
    failure = None
    if comm is None or comm.is_root:
        from safetensors.numpy import save as st_save
        tensors, metadata = pack(model, optimizer, meta) if state is None else pack_state(*state, meta)
        try:
            write_atomic(path, st_save(tensors, metadata=metadata))
        except OSError as e:
            failure = f"cannot write checkpoint {path}: {e.strerror or e}"
    if comm is not None:
        failure = comm.bcast_obj(failure)   # doubles as the barrier
    if failure:
        raise CheckpointError(failure)


def load(path: str) -> Checkpoint:
    """Read and verify a checkpoint into host numpy arrays."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = latest(path)
        if found is None:
            raise CheckpointError(f"no checkpoint (ckpt-*.safetensors) in folder {path}")
        path = found
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as e:  # noqa: BLE001 - the Rust reader raises its own types for each kind of damage
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({reason})") from None
    if metadata.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise CheckpointError(f"{path} is a safetensors file but not a distbp checkpoint "
                              f"(format {metadata.get('format')!r}, expected {FORMAT!r})")
    if (metadata.get("checksum") != _checksum(tensors, metadata) if metadata["format"] == FORMAT
            else metadata.get("crc32") != _crc(tensors)):
        raise CheckpointError(f"checkpoint {path} is corrupt: its checksum does not match its contents")
    try:
        meta, opt = json.loads(metadata["meta"]), json.loads(metadata["optimizer"])
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has damaged metadata ({e})") from None
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    state = {}
    for index, scalars in opt["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in opt["param_groups"]]
    return Checkpoint(path=path, model=model, optimizer={"state": state, "param_groups": groups}, meta=meta)


def load_shared(path: str, directory: str, comm) -> Checkpoint:
    """Collective: rank 0 reads `path` (`"latest"`: the newest in `directory`) and broadcasts the
    checkpoint, or its error, so every rank raises the same CheckpointError and none waits."""
    payload = None
    if comm.is_root:
        found = latest(directory) if path == "latest" else path
        try:
            if found is None:
                raise CheckpointError(f"--resume: no checkpoint (ckpt-*.safetensors) in {directory}; "
                                      f"give --checkpoint-dir or --resume PATH")
            payload = ("ok", load(found))
        except CheckpointError as e:
            payload = ("error", str(e))
    status, value = comm.bcast_obj(payload)
    if status == "error":
        raise CheckpointError(value)
    return value


def restore(ckpt: Checkpoint, model, optimizer=None) -> None:
    """Load a checkpoint's weights, buffers and optimizer state; a mismatch names the file."""
    try:
        model.load_state_dict(ckpt.model)
        if optimizer is not None:
            optimizer.load_state_dict(ckpt.optimizer)
    except (KeyError, ValueError, IndexError) as e:
        reason = e.args[0] if e.args else type(e).__name__
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit this model/optimizer: {reason}") from None


def list_checkpoints(directory: str) -> list:
    """Checkpoint files in a folder, oldest (lowest step) first; unfinished .tmp files are ignored."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(directory) if (m := _NAME.match(name))]
    return [os.path.join(directory, name) for _, name in sorted(found)]


def latest(directory: str) -> str | None:
    """The newest checkpoint in a folder, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def run_id_of(path: str) -> str | None:
    """The run id in a checkpoint's metadata, read from its header alone; None for a file written
    before run ids, or one whose header cannot be read."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > 100_000_000:   # no real header is this large: a damaged length
                return None
            header = json.loads(f.read(size))
        run_id = json.loads(header["__metadata__"]["meta"]).get("run_id")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) else None


def _step_of(path: str) -> int:
    return int(_NAME.match(os.path.basename(path)).group(1))


def prune(directory: str, keep: int, run_id: str | None = None, upto: int | None = None) -> None:
    """Delete all but the newest `keep` checkpoints of run `run_id` (rank 0 only); the files of
    any other run are never touched. `upto`: the step just saved; this run's files of later steps
    (from before a resume of an older checkpoint) are neither counted nor deleted, so the file just
    written is never the one pruned."""
    own = [p for p in list_checkpoints(directory)
           if (upto is None or _step_of(p) <= upto) and run_id_of(p) == run_id]
    for path in own[:-keep] if keep > 0 else []:
        os.remove(path)
