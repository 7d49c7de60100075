"""Ranks of one run must be given the same run: checked once at start, before anything can drift.

Under `mpiexec -n 1 ... : -n 1 ...` (MPMD) or with per-rank environments, ranks can be started with
different flags or DISTBP_* settings; they would run to the end with replicas drifting apart, or
stop in a collective with a cryptic size error. Two small checks (distributed.check_same: one
allgather of a digest each, details only on a mismatch) refuse that with one line naming the key:

- `check_settings`: every flag that shapes the computation, and every DISTBP_* setting. Paths that
  only rank 0 uses (--checkpoint-dir, --log-dir, the --resume file) and the progress bar may differ,
  and so may the --dataset path: hosts may keep the same files in different places.
- `check_data_and_model`: the data itself (a digest of every split), and the model's parameter
  layout (names, shapes, dtypes, requires_grad)."""
from __future__ import annotations

import hashlib
import json

from .. import _env
from ..distributed.agreement import SettingsMismatchError, check_same, describe_difference
from ..distributed.data_parallel import model_layout
from .fingerprint import dataset_fingerprint

_ROOT_ONLY = ("checkpoint_dir", "log_dir", "progress", "dataset")
_ADVICE = "give every rank the same settings"


def check_settings(comm, cfg) -> None:
    """Collective: the same flags (but rank 0's paths) and DISTBP_* settings on every rank."""
    settings = {"--" + k.replace("_", "-"): v for k, v in cfg.to_dict().items() if k not in _ROOT_ONLY}
    settings["--resume"] = "given" if cfg.resume else "not given"   # rank 0 alone reads the file
    settings.update(_env.snapshot())
    check_same(comm, settings, advice=_ADVICE)


def data_digest(data) -> str:
    """A digest of a Dataset: its task and its fingerprint (sizes, shapes, dtypes, all labels and
    sampled rows), so a memory-mapped dataset is not read whole on every rank."""
    text = json.dumps([data.task, data.num_classes, list(data.input_shape), dataset_fingerprint(data)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_data_and_model(comm, data, model, dataset: str) -> None:
    """Collective: the same data (by content, wherever its files are) and model layout on every rank."""
    mine = data_digest(data)
    try:
        check_same(comm, {"the data": mine})
    except SettingsMismatchError:   # every rank is here: gather the paths to name them
        shown = [{"--dataset": f"{path} (contents {digest})"} for path, digest in comm.allgather_obj((dataset, mine))]
        raise SettingsMismatchError(f"{describe_difference(shown)}: the ranks loaded different data; "
                                    "give every rank the same dataset") from None
    check_same(comm, model_layout(model), advice="give every rank the same model settings")
