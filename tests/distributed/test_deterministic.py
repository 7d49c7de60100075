"""Deterministic data parallelism: the same bits on any number of ranks (float32 and float64).

Every rank trains the model twice: once with DistributedDataParallel(deterministic=True) on this
job's ranks (its own groups of each global batch), once alone in a world of one on every global
batch (all groups on itself), and the weights must be equal bit for bit (`np.array_equal`). Run at
1, 2, 3 and 4 ranks by tests/run.sh; batches of 13 samples in 5 groups (uneven groups, uneven
ranks) and a last batch of 3 samples (3 groups: at 4 ranks one rank owns none)."""
import copy

import numpy as np
import pytest

import distbp as db
from distbp import nn, random
from distbp.distributed import DistributedDataParallel, SelfComm, SyncBatchNorm
from distbp.optim import SGD
from distbp.training import registry

BATCHES = [13, 13, 3, 13]   # global batch sizes of the steps
GROUPS = 5


def _cnn_dropout():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(3 * 4 * 4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 4))


class _Images(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x.reshape(x.shape[0], 1, 8, 8))


MODELS = {
    "mlp_dropout": lambda: registry.build_model("mlp", (64,), 4, hidden=[16, 12], dropout=0.3),
    "cnn_dropout": lambda: _Images(_cnn_dropout()),
    "cnn": lambda: registry.build_model("cnn", (64,), 4, hidden=[8], channels=2),
    "gru": lambda: registry.build_model("gru", (64,), 4, hidden=[6]),
    "lstm": lambda: registry.build_model("lstm", (64,), 4, hidden=[5]),
    "linear": lambda: registry.build_model("linear", (64,), 4),
}


def _train(model, comm, x, y, dtype):
    ddp = DistributedDataParallel(model, comm, average=False, deterministic=True, groups=GROUPS)
    opt = SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    start = 0
    for step, size in enumerate(BATCHES):
        idx = np.arange(start, start + size) % len(x)
        start += size
        opt.zero_grad()
        for a, b in ddp.group_bounds(size):
            with random.batch(step, a):
                out = ddp(db.tensor(x[idx[a:b]]))
            (nn.functional.cross_entropy(out, y[idx[a:b]], reduction="sum") / size).backward()
        ddp.reduce_groups()
        opt.step()
    ddp.free()
    return model.state_dict()


@pytest.mark.mpi
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_same_bits_as_one_process(comm, name, dtype):
    db.set_default_dtype(dtype)
    try:
        rng = np.random.default_rng(3)
        x, y = rng.standard_normal((40, 64)).astype(dtype), rng.integers(0, 4, 40)
        db.manual_seed(0)
        model = MODELS[name]()
        alone = copy.deepcopy(model)
        mine = _train(model, comm, x, y, dtype)
        ref = _train(alone, SelfComm(), x, y, dtype)
    finally:
        db.set_default_dtype("float32")
    assert mine.keys() == ref.keys()
    assert all(mine[k].dtype == np.dtype(dtype) for k in mine)
    different = [k for k in mine if not np.array_equal(mine[k], ref[k])]
    assert different == [], f"{name} {dtype} at {comm.size} ranks differs from one process in {different}"


@pytest.mark.mpi
def test_batchnorm_is_refused_on_every_rank(comm):
    for model in (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)),
                  SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), comm)):
        with pytest.raises(ValueError, match="buffers"):
            DistributedDataParallel(model, comm, deterministic=True)


@pytest.mark.mpi
def test_a_missing_group_backward_is_named(comm):
    ddp = DistributedDataParallel(nn.Linear(3, 2), SelfComm(), deterministic=True, groups=2)
    ddp.group_bounds(4)
    ddp(db.tensor(np.ones((2, 3)))).sum().backward()
    with pytest.raises(RuntimeError, match="1 of this rank's 2 group"):
        ddp.reduce_groups()
