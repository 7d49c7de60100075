"""A pipeline (stages x replicas) == one process on the same global batches (float64, 1e-10).

Every rank also trains the single-process reference on the whole global batch and compares the
weights its stage holds with the reference's weights of the same names. The reference's forward
runs in `distbp.random.batch(step, 0)`, so a dropout model's masks must match too. Tests use the
largest grid of their kind the world allows and skip when it allows none."""
import copy

import numpy as np
import pytest
from distributed_helpers import own_rows, shard

import distbp as db
from distbp import nn, random
from distbp.distributed.grid import ProcessGrid
from distbp.distributed.pipeline import PipelineStage, partition
from distbp.optim import SGD
from distbp.training.registry import build_model

TOL = 1e-10
BATCH = 15  # does not divide by 2 replicas, nor into 2, 4 or 7 equal micro-batches


_GRIDS = {}  # (id(comm), stages) -> (comm, grid): see _grid


def _grid(comm, stages):
    """One grid per world and stage count for the whole module, kept to the end: a step leaves no
    message in flight, so tests can share a grid (and the suite runs every test in one process per
    rank, where MPICH has room for about 2048 communicators)."""
    if comm.size % stages:
        pytest.skip(f"{stages} pipeline stages need a world that is a multiple of {stages}, not {comm.size}")
    key = (id(comm), stages)
    if key not in _GRIDS:
        _GRIDS[key] = (comm, ProcessGrid(comm, pipeline_stages=stages))  # holding comm keeps its id unique
    return _GRIDS[key][1]


def _data(n, in_shape, classes, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + in_shape), rng.integers(0, classes, n)


def _train(make_model, grid, x, y, micro_batches, schedule="1f1b", steps=20, method="uniform"):
    """Train the reference on whole batches and this rank's stage on its share; return both and the
    reference's and the pipeline's loss sums per step (the pipeline's reduced over replicas)."""
    db.set_default_dtype(np.float64)
    db.manual_seed(0)
    ref = make_model()
    stage = PipelineStage(copy.deepcopy(ref), grid, partition(ref, grid.num_stages, method), schedule)
    opt_ref = SGD(ref.parameters(), lr=0.1, momentum=0.9)
    params = list(stage.parameters())
    opt = SGD(params, lr=0.1, momentum=0.9) if params else None  # a stage of activations has none
    ref_losses, losses = [], []
    for step in range(steps):
        lo = (step * BATCH) % len(x)
        idx = np.arange(lo, lo + BATCH)
        opt_ref.zero_grad()
        with random.batch(step, 0):
            loss = nn.functional.cross_entropy(ref(db.tensor(x[idx])), y[idx])
        loss.backward()
        opt_ref.step()
        ref_losses.append(float(loss.item()) * BATCH)
        mine = idx[shard(BATCH, grid.replica, grid.dp_size)]
        if opt:
            opt.zero_grad()
        result = stage.train_step(x[mine], y[mine], BATCH, micro_batches)
        if opt:
            opt.step()
        if grid.is_last_stage:
            losses.append(float(grid.dp_comm.allreduce(np.array([result.loss_sum]))[0]))
    stage.free()   # its gradient reducer's communicators; its layers and weights stay
    return ref, stage, ref_losses, losses


def _assert_equal(ref, stage, ref_losses, losses):
    expected = ref.state_dict()
    mine = stage.state_dict()
    assert set(mine) <= set(expected)
    for k, v in mine.items():
        assert np.max(np.abs(v - own_rows(stage, k, expected[k]))) <= TOL, k
    if losses:
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)


def _mlp():
    return build_model("mlp", (6,), 3, hidden=[16, 16], activation="tanh")  # 6 layers


def _cnn():
    return build_model("cnn", (36,), 3, hidden=[8], image_shape=(1, 6, 6), channels=2)  # 10 layers


@pytest.mark.mpi
@pytest.mark.parametrize("micro_batches", [1, 2, 4, 7])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "1f1b-split"])
@pytest.mark.parametrize("make_model", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_two_stages_equal_one_process(comm, make_model, schedule, micro_batches):
    # 2 ranks: 2 stages; 4 ranks: 2 stages x 2 replicas (replicas of 8 and 7 samples)
    grid = _grid(comm, 2)
    in_shape = (6,) if make_model is _mlp else (36,)
    x, y = _data(BATCH * 3, in_shape, 3)
    _assert_equal(*_train(make_model, grid, x, y, micro_batches, schedule))


@pytest.mark.mpi
@pytest.mark.parametrize("other", ["gpipe", "1f1b-slack"])
def test_gpipe_1f1b_and_slack_give_bitwise_the_same_weights(comm, other):
    # all add each stage's micro-batch gradients in the order 0..M-1, so their sums are the same bits
    grid = _grid(comm, 2)
    x, y = _data(BATCH * 3, (6,), 3)
    _, reordered, _, other_losses = _train(_mlp, grid, x, y, 4, other)
    _, one_f_one_b, _, losses = _train(_mlp, grid, x, y, 4, "1f1b")
    a, b = reordered.state_dict(), one_f_one_b.state_dict()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert other_losses == losses


@pytest.mark.mpi
@pytest.mark.parametrize("micro_batches", [1, 4, 7])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "1f1b-split"])
def test_a_linear_cut_between_stages_equals_one_process(comm, schedule, micro_batches):
    # "balanced" cuts the mlp inside its second Linear, so the stages hand on the layer's input with
    # the features computed so far, and send back the gradient of both
    grid = _grid(comm, 2)
    x, y = _data(BATCH * 3, (6,), 3)
    ref, stage, ref_losses, losses = _train(_mlp, grid, x, y, micro_batches, schedule, method="balanced")
    cut = partition(ref, 2, "balanced")[0][1]
    assert cut[0] == 3 and 0 < cut[1] < 16
    assert [type(m).__name__ for m in stage.children()][-1 if grid.stage == 0 else 0] == "LinearPiece"
    _assert_equal(ref, stage, ref_losses, losses)


def _wide():
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Dropout(0.3), nn.Linear(12, 3))


@pytest.mark.mpi
@pytest.mark.parametrize("schedule", ["1f1b", "1f1b-split"])
def test_one_linear_cut_over_every_stage_equals_one_process(comm, schedule):
    # 1 to 4 stages of one replica, every cut inside the first Linear: a middle stage computes only
    # features 3k..3k+3 and passes the input on with all the features before them
    grid = _grid(comm, comm.size)
    x, y = _data(BATCH * 3, (6,), 3)
    points = [(0, 3 * k) for k in range(1, comm.size)]
    ref, stage, ref_losses, losses = _train(_wide, grid, x, y, 5, schedule, method=points, steps=8)
    _assert_equal(ref, stage, ref_losses, losses)


def _gru():
    return build_model("gru", (12,), 3, hidden=[8], image_shape=(1, 4, 3))  # ImageRows, LastOutput(GRU), Linear


def _lstm():
    return build_model("lstm", (12,), 3, hidden=[8], image_shape=(1, 4, 3))


@pytest.mark.mpi
@pytest.mark.parametrize("micro_batches", [1, 2, 7])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "1f1b-split"])
@pytest.mark.parametrize("make_model", [_gru, _lstm], ids=["gru", "lstm"])
def test_recurrent_two_stages_equal_one_process(comm, make_model, schedule, micro_batches):
    # the uniform cut puts the head alone in stage 2, which receives the last outputs (N, hidden)
    # and sends back their gradient through every time step of stage 1's recurrence
    grid = _grid(comm, 2)
    x, y = _data(BATCH * 3, (12,), 3)
    _assert_equal(*_train(make_model, grid, x, y, micro_batches, schedule))


@pytest.mark.mpi
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "1f1b-split"])
def test_recurrent_layer_fed_image_rows_by_a_stage_without_parameters(comm, schedule):
    # cut at 1: stage 1 only views the images as rows and sends 3-d sequences (N, H, C*W)
    grid = _grid(comm, 2)
    x, y = _data(BATCH * 3, (12,), 3)
    ref, stage, ref_losses, losses = _train(_gru, grid, x, y, 4, schedule, method=[1])
    assert bool(list(stage.parameters())) == (grid.stage == 1)
    _assert_equal(ref, stage, ref_losses, losses)


@pytest.mark.mpi
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "1f1b-split"])
def test_as_many_stages_as_ranks_equal_one_process(comm, schedule):
    # 1 to 4 stages of one replica, a Linear on each; 5 micro-batches do not divide 15 samples evenly
    grid = _grid(comm, comm.size)
    x, y = _data(BATCH * 3, (6,), 3)
    ref, stage, ref_losses, losses = _train(lambda: build_model("mlp", (6,), 3, hidden=[16, 12, 8]), grid, x, y,
                                            5, schedule, method="parameters")
    assert any(isinstance(m, nn.Linear) for m in stage.children())
    _assert_equal(ref, stage, ref_losses, losses)


def _mlp_with_dropout():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 16), nn.Tanh(),
                         nn.Dropout(0.5), nn.Linear(16, 3))


@pytest.mark.mpi
@pytest.mark.parametrize("stages", [2, "world"])
def test_dropout_in_every_stage_draws_one_process_masks(comm, stages):
    # uniform cuts put a Dropout in each of 2 stages: the second one's draws are keyed after the first's
    grid = _grid(comm, comm.size if stages == "world" else stages)
    x, y = _data(BATCH * 3, (6,), 3)
    ref, stage, ref_losses, losses = _train(_mlp_with_dropout, grid, x, y, 4, steps=8)
    _assert_equal(ref, stage, ref_losses, losses)
    some = db.tensor(x[:8])
    assert not np.allclose(ref(some).numpy(), ref.eval()(some).numpy())  # the dropout does act


@pytest.mark.mpi
def test_stage_keeps_only_its_layers_under_the_single_process_names(comm, free_after):
    grid = _grid(comm, comm.size)
    db.manual_seed(0)
    model = _cnn()
    full = [n for n, _ in model.named_parameters()]
    stage = free_after(PipelineStage(model, grid, partition(model, grid.num_stages)))
    assert stage.full_parameter_names == full
    mine = [n for n, _ in stage.named_parameters()]
    everyone = grid.pipe_comm.allgather_obj(mine)
    assert [n for names in everyone for n in names] == full  # each name on exactly one stage, in order


@pytest.mark.mpi
def test_too_many_micro_batches_are_refused_on_every_rank(comm, free_after):
    grid = _grid(comm, comm.size)
    db.manual_seed(0)
    model = _mlp()
    stage = free_after(PipelineStage(model, grid, partition(model, grid.num_stages)))
    x, y = _data(4, (6,), 3)
    with pytest.raises(ValueError, match="5 micro-batches but a replica holds as few as 4 samples"):
        stage.train_step(x, y, 4, 5)


@pytest.mark.mpi
def test_batch_norm_is_refused(comm):
    grid = _grid(comm, 1)
    model = build_model("cnn", (36,), 3, hidden=[8], image_shape=(1, 6, 6), channels=2, batch_norm=True)
    with pytest.raises(TypeError, match="normalises one micro-batch at a time"):
        PipelineStage(model, grid, [(0, len(model))])
