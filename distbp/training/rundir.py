"""The checkpoint directory has one owner: the run that claimed it, named by a run id.

`claim` is a collective that every rank calls once, before training; rank 0 does the file work and
every rank learns its outcome, so a refusal is the same one line on every rank and none waits:

* the folder exists or is created, is writable (the lock file is made in it) and has room for a
  checkpoint, so a bad destination is found before the training, not at its first save;
* `distbp-run.lock` in it is locked (`flock`, exclusive) for the whole run, and holds the owner's run
  id, pid and host: a second run in the folder is refused while the first lives. The kernel drops
  the lock when the process ends, however it ends (kill -9 included), so a dead run leaves no stale
  lock. On NFS, Linux turns flock into a lock the server keeps; a crashed client's lock lasts until
  the server's lease for it runs out (about 90 s on NFSv4). A filesystem without locks gets a
  warning, not a refusal;
* unfinished `ckpt-*.safetensors.tmp` files (a run killed mid-save) are deleted;
* checkpoints of another run (another run id in their metadata, or none) are refused with one line
  offering the choices, or deleted when the user says `--overwrite-checkpoint-dir`. A resumed run
  continues the run id of its checkpoint, so its own files are not "another run's".

Pruning (`checkpoint.prune`) then deletes this run's own old checkpoints only.

Without `--checkpoint-dir`, runs do not meet at all: each new run writes to `checkpoints/run-N`, the
next free N (as Lightning's `version_N` folders), and a plain `--resume` continues the newest of
them (`versioned_directory`)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field

from . import checkpoint
from .checkpoint import CheckpointError

LOCK_NAME = "distbp-run.lock"
RUN_FOLDER = "run-"   # checkpoints/run-1, run-2, ...: the default folders, one per run
_HELD: dict = {}   # realpath of a claimed folder -> the open lock file of this process's claim


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Claim:
    """The outcome every rank holds: this run's id and lines for rank 0 to print."""
    directory: str
    run_id: str
    notes: list = field(default_factory=list)

    def release(self) -> None:
        """Unlock the folder (rank 0; a no-op elsewhere). The process ending does the same."""
        _release(self.directory)


def _release(directory: str) -> None:
    held = _HELD.pop(os.path.realpath(directory), None)
    if held is not None:
        held.close()   # closing the only descriptor of the open file drops its flock


def _holder(lock_file) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    with contextlib.suppress(OSError, ValueError):
        lock_file.seek(0)
        info = json.loads(lock_file.read() or "{}")
        return f"run {info['run_id']}, pid {info['pid']} on {info['host']}"
    return "a run whose details are not readable"


def _lock(directory: str, run_id: str, notes: list) -> None:
    """Take the folder's lock for this process (exclusive, without waiting) and sign it."""
    _release(directory)   # a run of this same process that ended without releasing: runs here are sequential
    lock_file = open(os.path.join(directory, LOCK_NAME), "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(lock_file)
        lock_file.close()
        raise CheckpointError(f"--checkpoint-dir {directory} is in use by another run ({holder}); wait for it "
                              "to end or choose another --checkpoint-dir") from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            lock_file.close()
            raise
        notes.append(f"warning: cannot lock --checkpoint-dir {directory} ({e.strerror}); a second run in it "
                     "would not be refused")
    try:   # also proves the folder writable: a full disk fails here, before the training
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        lock_file.flush()
    except OSError:
        lock_file.close()
        raise
    _HELD[os.path.realpath(directory)] = lock_file


def _remove_unfinished(directory: str, notes: list) -> None:
    stale = sorted(name for name in os.listdir(directory) if checkpoint.TMP_NAME.match(name))
    for name in stale:
        os.remove(os.path.join(directory, name))
    if stale:
        notes.append(f"removed {len(stale)} unfinished checkpoint file(s) of an interrupted run: {', '.join(stale)}")


def _foreign(directory: str, run_id: str, adopt_unnamed: bool) -> list:
    """(path, run id) of the checkpoints in the folder that another run wrote."""
    found = [(path, checkpoint.run_id_of(path)) for path in checkpoint.list_checkpoints(directory)]
    return [(path, owner) for path, owner in found if owner != run_id and not (adopt_unnamed and owner is None)]


def _take_ownership(directory: str, run_id: str, resuming: bool, adopt_unnamed: bool, overwrite: bool,
                    notes: list) -> None:
    others = _foreign(directory, run_id, adopt_unnamed)
    if not others:
        return
    runs = sorted({owner or "without a run id" for _, owner in others})
    names = ", ".join(os.path.basename(p) for p, _ in others[:3]) + (", ..." if len(others) > 3 else "")
    if overwrite:
        for path, _ in others:
            os.remove(path)
        notes.append(f"--overwrite-checkpoint-dir: deleted {len(others)} checkpoint(s) of run {', '.join(runs)} "
                     f"in {directory}: {names}")
        return
    whose = f"another run than the one resumed (run {run_id})" if resuming else "another run"
    choices = ("choose another --checkpoint-dir" if resuming
               else "continue that run with --resume, choose another --checkpoint-dir")
    raise CheckpointError(f"--checkpoint-dir {directory} holds {len(others)} checkpoint(s) of {whose} "
                          f"(run {', '.join(runs)}: {names}); {choices}, or give --overwrite-checkpoint-dir "
                          "to delete them")


def _check_space(directory: str, need_bytes: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < need_bytes:
        raise CheckpointError(f"--checkpoint-dir {directory} has {free / 1e6:.1f} MB free but a checkpoint needs "
                              f"about {need_bytes / 1e6:.1f} MB; free some space or choose another "
                              "--checkpoint-dir")


def _claim_here(directory: str, run_id: str, resuming: bool, adopt_unnamed: bool, overwrite: bool,
                need_bytes: int) -> list:
    notes = []
    try:
        os.makedirs(directory, exist_ok=True)
        _lock(directory, run_id, notes)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoints in --checkpoint-dir {directory}: {e.strerror or e}") from None
    try:
        _remove_unfinished(directory, notes)
        _take_ownership(directory, run_id, resuming, adopt_unnamed, overwrite, notes)
        _check_space(directory, need_bytes)
    except OSError as e:
        _release(directory)
        raise CheckpointError(f"cannot prepare --checkpoint-dir {directory}: {e.strerror or e}") from None
    except CheckpointError:
        _release(directory)
        raise
    return notes


def claim(directory: str, comm, *, resumed: dict | None = None, overwrite: bool = False,
          need_bytes: int = 0) -> Claim:
    """Collective: make `directory` this run's (see the module doc). `resumed`: the metadata of the
    checkpoint a resume continues (None: a new run). The run id is the checkpoint's, or one rank 0
    draws; resuming a checkpoint written before run ids, the files without one count as this run's
    (and are never pruned). Raises CheckpointError on every rank."""
    outcome = None
    if comm.is_root:
        resuming = resumed is not None
        continued = resumed.get("run_id") if resuming else None
        mine = continued or new_run_id()
        try:
            notes = _claim_here(directory, mine, resuming, resuming and continued is None, overwrite, need_bytes)
            outcome = ("ok", mine, notes)
        except CheckpointError as e:
            outcome = ("error", str(e), None)
    status, value, notes = comm.bcast_obj(outcome)
    if status == "error":
        raise CheckpointError(value)
    return Claim(directory, value, notes if comm.is_root else [])


def versioned_directory(base: str, resume: bool, comm) -> str:
    """Collective: the folder of a run that was given no --checkpoint-dir. A new run takes
    `base/run-N` for the next free N; `--resume` continues the highest-numbered run folder holding a
    checkpoint, else `base` itself (checkpoints written there by older versions, or none: then the
    resume says there is nothing in `base`). Rank 0 looks, every rank gets its answer."""
    return comm.bcast_obj(versioned_folder(base, resume) if comm.is_root else None)


def versioned_folder(base: str, resume: bool) -> str:
    """`versioned_directory`'s answer, looked up by this process alone."""
    try:
        names = os.listdir(base)
    except OSError:   # no folder yet (or none readable: the claim names the problem)
        names = []
    numbers = sorted(int(n[len(RUN_FOLDER):]) for n in names
                     if n.startswith(RUN_FOLDER) and n[len(RUN_FOLDER):].isdigit())
    if resume:
        for n in reversed(numbers):
            folder = os.path.join(base, f"{RUN_FOLDER}{n}")
            if checkpoint.latest(folder) is not None:
                return folder
        return base
    return os.path.join(base, f"{RUN_FOLDER}{numbers[-1] + 1 if numbers else 1}")
