"""N ranks with DistributedDataParallel == one process on the same global batches (float64, 1e-10).

Every rank also trains the single-process reference on the whole global batch, so each rank
compares its DDP model with an independent computation of the same steps. Every forward runs in
`distbp.random.batch(step, first_sample)`, as a trainer's does, so dropout gives global sample i
the same mask on whichever rank holds it."""
import copy

import numpy as np
import pytest
from distributed_helpers import max_diff, shard

import distbp as db
from distbp import nn, random
from distbp.distributed import DistributedDataParallel
from distbp.distributed.sync_batchnorm import SyncBatchNorm
from distbp.equivalence import small_gru
from distbp.optim import SGD

TOL = 1e-10


def _data(n, in_shape, classes, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + in_shape), rng.integers(0, classes, n)


def _mean_loss(out, y):
    return nn.functional.cross_entropy(out, y)


def _run(make_model, comm, x, y, batch, steps, accumulate=1, loss_fn=_mean_loss, convert=None, free_after=None):
    """Train a reference (full global batches) and a DDP copy (this rank's shards); return both. The
    DDP wrapper is handed to `free_after` (the conftest fixture), when given.

    With uneven shards each rank's loss is its SUM over samples * size / global count, so that
    DDP's average of rank gradients is the gradient of the global mean (docs/distributed.md)."""
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    ref = make_model()
    mine = copy.deepcopy(ref)
    if convert:
        mine = convert(mine)
    ddp = DistributedDataParallel(mine, comm, bucket_cap_mb=0.001)  # tiny buckets: several per step
    if free_after is not None:
        free_after(ddp)
    opt_ref = SGD(ref.parameters(), lr=0.1, momentum=0.9)
    opt = SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    n = len(x)
    for step in range(steps):
        lo = (step * batch * accumulate) % n
        idx = np.arange(lo, min(lo + batch * accumulate, n))
        micro = np.array_split(idx, accumulate)
        opt_ref.zero_grad()
        opt.zero_grad()
        for k, mb in enumerate(micro):
            first = sum(len(m) for m in micro[:k])  # mb's first sample within the step's global batch
            with random.batch(step, first):
                out = ref(db.tensor(x[mb]))
            (loss_fn(out, y[mb]) / accumulate).backward()
            rows = shard(len(mb), comm.rank, comm.size)
            part = mb[rows]
            weight = comm.size / len(mb) / accumulate
            with random.batch(step, first + rows.start):
                if k < accumulate - 1:
                    with ddp.no_sync():
                        (_sum_loss(ddp(db.tensor(x[part])), y[part]) * weight).backward()
                else:
                    (_sum_loss(ddp(db.tensor(x[part])), y[part]) * weight).backward()
        opt_ref.step()
        opt.step()
    return ref, ddp


def _sum_loss(out, y):
    return nn.functional.cross_entropy(out, y, reduction="sum")


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.mpi
@pytest.mark.parametrize("shm", ["1", "0"], ids=["shared-memory-buckets", "mpi-buckets"])
def test_mlp_on_n_ranks_equals_one_process(comm, free_after, monkeypatch, shm):
    # "0" takes the path ranks on several machines take: buckets reduced by MPI's Iallreduce
    monkeypatch.setenv("DISTBP_SHM_ALLREDUCE", shm)
    x, y = _data(8 * 4, (6,), 3)
    ref, ddp = _run(_mlp, comm, x, y, batch=8, steps=20, free_after=free_after)
    if comm.size > 1:
        assert all(ddp.reducer.comm.uses_shared_memory(b.buffer) == (shm == "1") for b in ddp.reducer.buckets)
    assert max_diff(ddp, ref) <= TOL


@pytest.mark.mpi
def test_mlp_with_gradient_accumulation_equals_one_process(comm, free_after):
    x, y = _data(8 * 6, (6,), 3)
    ref, ddp = _run(_mlp, comm, x, y, batch=8, steps=20, accumulate=3, free_after=free_after)
    assert max_diff(ddp, ref) <= TOL


@pytest.mark.mpi
def test_mlp_with_uneven_batches_and_a_tail_smaller_than_the_world(comm, free_after):
    # 7 samples per global batch do not divide by 2 or 4; the dataset of 23 ends in a batch of 2,
    # so on 4 ranks two ranks have no sample in that step and still take part.
    x, y = _data(23, (6,), 3)
    ref, ddp = _run(_mlp, comm, x, y, batch=7, steps=4 * 5, free_after=free_after)
    assert max_diff(ddp, ref) <= TOL


def _mlp_with_dropout():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 16), nn.Tanh(),
                         nn.Dropout(0.5), nn.Linear(16, 3))


@pytest.mark.mpi
@pytest.mark.parametrize("batch,accumulate", [(8, 1), (7, 2)], ids=["even", "uneven-accumulated"])
def test_mlp_with_dropout_on_n_ranks_equals_one_process(comm, free_after, batch, accumulate):
    # each sample's mask is keyed by its index in the global batch, not by which rank holds it
    x, y = _data(23, (6,), 3)
    ref, ddp = _run(_mlp_with_dropout, comm, x, y, batch=batch, steps=8, accumulate=accumulate, free_after=free_after)
    assert max_diff(ddp, ref) <= TOL
    some = db.tensor(x[:8])
    assert not np.allclose(ref(some).numpy(), ref.eval()(some).numpy())  # the dropout does act


class _SequenceFirstLSTM(nn.Module):
    """A 2-layer LSTM with dropout between the layers, fed sequence-first: the samples of its
    dropout's (T, N, H) input are on axis 1."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 8, num_layers=2, dropout=0.4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # x: (N, T, F)
        _, (h, _) = self.lstm(db.ops.permute(x, 1, 0, 2))
        return self.head(h[-1])


@pytest.mark.mpi
def test_lstm_with_inter_layer_dropout_on_n_ranks_equals_one_process(comm, free_after):
    x, y = _data(8 * 3, (4, 3), 3)
    ref, ddp = _run(_SequenceFirstLSTM, comm, x, y, batch=8, steps=6, free_after=free_after)
    assert max_diff(ddp, ref) <= TOL


def _cnn():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3))


@pytest.mark.mpi
def test_cnn_with_sync_batchnorm_equals_one_process_batchnorm(comm, free_after):
    x, y = _data(8 * 3, (2, 5, 5), 3)
    ref, ddp = _run(_cnn, comm, x, y, batch=8, steps=20,
                    convert=lambda m: SyncBatchNorm.convert_sync_batchnorm(m, comm), free_after=free_after)
    assert isinstance(ddp.module[1], SyncBatchNorm)
    assert max_diff(ddp, ref) <= TOL  # weights AND running_mean / running_var / num_batches_tracked




@pytest.mark.mpi
def test_gru_on_n_ranks_equals_one_process(comm, free_after):
    x, y = _data(8 * 3, (4, 3), 3)
    ref, ddp = _run(small_gru, comm, x, y, batch=8, steps=20, free_after=free_after)
    assert max_diff(ddp, ref) <= TOL


@pytest.mark.mpi
def test_gradients_are_the_rank_average_closed_form(comm, free_after):
    # loss_r = (rank + 1) * sum(w): grad_r = rank + 1, so the average is (size + 1) / 2.
    db.set_default_dtype(np.float64)
    lin = nn.Linear(2, 1, bias=False)
    ddp = free_after(DistributedDataParallel(lin, comm))
    (ddp(db.tensor(np.ones((1, 2)))).sum() * (comm.rank + 1)).backward()
    np.testing.assert_allclose(lin.weight.grad, np.full((1, 2), (comm.size + 1) / 2), rtol=1e-15)
    summed = free_after(DistributedDataParallel(nn.Linear(2, 1, bias=False), comm, average=False))
    (summed(db.tensor(np.ones((1, 2)))).sum() * (comm.rank + 1)).backward()
    np.testing.assert_allclose(summed.module.weight.grad, np.full((1, 2), comm.size * (comm.size + 1) / 2))


@pytest.mark.mpi
def test_constructor_broadcasts_rank0_parameters_and_buffers(comm, free_after):
    db.manual_seed(comm.rank)  # different initial weights on every rank
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    model[1].running_mean[...] = comm.rank
    free_after(DistributedDataParallel(model, comm))
    for key, value in model.state_dict().items():
        everyone = comm.allgather(value)
        assert (everyone == everyone[0]).all(), key
    assert (model[1].running_mean == 0).all()


@pytest.mark.mpi
def test_unused_parameter_is_zero_filled_and_named_once(comm, free_after):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 1), nn.Linear(2, 1)

        def forward(self, x):
            return self.used(x)

    model = TwoHeads()
    ddp = free_after(DistributedDataParallel(model, comm))
    with pytest.warns(UserWarning, match=r"unused\.weight"):
        ddp(db.tensor(np.ones((1, 2)))).sum().backward()
    assert (model.unused.weight.grad == 0).all() and model.used.weight.grad is not None


@pytest.mark.mpi
def test_state_dict_has_no_module_prefix(comm, free_after):
    model = nn.Sequential(nn.Linear(2, 2))
    ddp = free_after(DistributedDataParallel(model, comm))
    assert list(ddp.state_dict()) == ["0.weight", "0.bias"]
    ddp.load_state_dict({k: np.zeros_like(v) for k, v in ddp.state_dict().items()})
    assert (model[0].weight.data == 0).all()


@pytest.mark.mpi(min_size=2)
def test_different_models_on_ranks_raise_on_every_rank(comm):
    width = 3 if comm.rank == comm.size - 1 else 2
    with pytest.raises(ValueError, match=rf"parameter 0\.weight differs: .*rank {comm.size - 1} has \(1, 3\) "):
        DistributedDataParallel(nn.Sequential(nn.Linear(width, 1)), comm)


def test_bucket_cap_must_be_positive():
    with pytest.raises(ValueError, match="Invalid bucket_cap_mb: 0"):
        DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)


@pytest.mark.mpi
def test_no_sync_keeps_grads_local_then_reduces_the_accumulated_sum(comm, free_after):
    # each backward adds rank + 1 to every weight's grad: local 1st, average of 2 (r + 1) after the 2nd
    db.set_default_dtype(np.float64)
    lin = nn.Linear(2, 1, bias=False)
    ddp = free_after(DistributedDataParallel(lin, comm))
    x = db.tensor(np.ones((1, 2)))
    with ddp.no_sync():
        (ddp(x).sum() * (comm.rank + 1)).backward()
    np.testing.assert_array_equal(lin.weight.grad, np.full((1, 2), comm.rank + 1.0))
    (ddp(x).sum() * (comm.rank + 1)).backward()
    np.testing.assert_allclose(lin.weight.grad, np.full((1, 2), comm.size + 1.0), rtol=1e-15)


@pytest.mark.mpi
def test_second_backward_through_one_forward_raises_on_every_rank_instead_of_going_unreduced(comm, free_after):
    ddp = free_after(DistributedDataParallel(nn.Linear(2, 1), comm))
    loss = ddp(db.tensor(np.ones((1, 2), dtype=np.float32))).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward through one forward's graph"):
        loss.backward()
    # a new forward before each backward is fine, and so is accumulating under no_sync()
    with ddp.no_sync():
        out = ddp(db.tensor(np.ones((1, 2), dtype=np.float32))).sum()
    out.backward(retain_graph=True)
    out.backward()
    ddp(db.tensor(np.ones((1, 2), dtype=np.float32))).sum().backward()


@pytest.mark.mpi
def test_reduce_gradients_outside_backward_averages_current_grads(comm, free_after):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    ddp = free_after(DistributedDataParallel(model, comm, bucket_cap_mb=1e-5))   # one bucket per parameter
    for p in model.parameters():
        p.grad = np.full(p.shape, float(comm.rank), dtype=p.dtype)
    ddp.reduce_gradients()
    for p in model.parameters():
        np.testing.assert_allclose(p.grad, (comm.size - 1) / 2)


@pytest.mark.mpi
def test_equivalence_command_reports_agreement_with_accumulation_and_short_batches(comm):
    from distbp.equivalence import check
    assert check("cnn", steps=6, batch=5, samples=13, accumulate=2, comm=comm) <= TOL
