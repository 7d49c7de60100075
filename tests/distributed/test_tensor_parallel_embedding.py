"""VocabParallelEmbedding across 2 tensor ranks (float64): the lookup and the gathered gradient are
nn.Embedding's, bitwise (each output is one row plus zeros); the gradient matches central finite
differences taken across the ranks (only the rank holding an element perturbs it, all evaluate); and
an Embedding -> mean -> Linear model trains 20 SGD steps exactly as one process."""
import numpy as np
import pytest

import distbp as db
from distbp.distributed import ProcessGrid, VocabParallelEmbedding
from distbp.distributed import tensor_parallel as tp
from distbp.nn import functional

VOCAB, DIM, CLASSES, STEPS, LR = 6, 3, 2, 20, 0.5
IDX = np.array([[0, 5, 3, 3], [2, 1, 5, 4]])   # rows of both halves, some twice


def _grid(comm):
    if comm.size % 2:
        pytest.skip(f"a world of {comm.size} cannot hold tensor ranks in pairs")
    return ProcessGrid(comm, tensor_parallel=2)


def _table(padding_idx=None):
    db.set_default_dtype(np.float64)
    db.manual_seed(9)
    return db.nn.Embedding(VOCAB, DIM, padding_idx=padding_idx)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("padding_idx", [None, 4])   # 4: a row of tensor rank 1
def test_lookup_and_gradient_are_nn_embedding_bitwise(comm, free_after, padding_idx):
    grid = free_after(_grid(comm))
    full = _table(padding_idx)
    par = VocabParallelEmbedding.from_embedding(full, grid.tp_comm)
    assert par.weight.shape == (VOCAB // 2, DIM)
    out = par(IDX)
    np.testing.assert_array_equal(out.data, full(IDX).data)
    g = np.random.default_rng(1).standard_normal((*IDX.shape, DIM))
    (out * g).sum().backward()
    (full(IDX) * g).sum().backward()
    gathered = tp.gather_shards(par, {"weight": par.weight.grad}, grid.tp_comm)["weight"]
    np.testing.assert_array_equal(gathered, full.weight.grad)
    if padding_idx is not None:
        assert not gathered[padding_idx].any()
    comm.barrier()


@pytest.mark.mpi(min_size=2)
def test_gradient_matches_finite_differences_across_the_ranks(comm, free_after):
    grid = free_after(_grid(comm))
    par = VocabParallelEmbedding.from_embedding(_table(), grid.tp_comm)
    weights = np.random.default_rng(2).standard_normal((*IDX.shape, DIM))

    def loss():   # the same scalar on both ranks: a nonlinear function of the whole lookup
        return float((par(IDX).tanh() * weights).sum().item())

    (par(IDX).tanh() * weights).sum().backward()
    analytic = tp.gather_shards(par, {"weight": par.weight.grad}, grid.tp_comm)["weight"]
    numeric, eps = np.zeros((VOCAB, DIM)), 1e-6
    for row in range(VOCAB):
        for col in range(DIM):
            mine = par.start <= row < par.stop   # only the holder perturbs; both evaluate every time
            values = []
            for step in (eps, -eps):
                if mine:
                    par.weight.data[row - par.start, col] += step
                values.append(loss())
                if mine:
                    par.weight.data[row - par.start, col] -= step
            numeric[row, col] = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(analytic).max() > 0.1     # not a vacuous comparison
    comm.barrier()


class _Bag(db.nn.Module):
    """Embedding -> mean over the sequence -> Linear."""

    def __init__(self, embedding, head):
        super().__init__()
        self.embedding, self.head = embedding, head

    def forward(self, idx):
        return self.head(self.embedding(idx).mean(axis=1))


@pytest.mark.mpi(min_size=2)
def test_a_vocab_parallel_model_trains_exactly_as_one_process(comm, free_after):
    grid = free_after(_grid(comm))
    one = _Bag(_table(), db.nn.Linear(DIM, CLASSES))
    many = _Bag(_table(), db.nn.Linear(DIM, CLASSES))
    many.embedding = VocabParallelEmbedding.from_embedding(many.embedding, grid.tp_comm)
    rng = np.random.default_rng(3)
    opts = [db.optim.SGD(m.parameters(), lr=LR) for m in (one, many)]
    for _ in range(STEPS):
        idx, y = rng.integers(0, VOCAB, (5, 4)), rng.integers(0, CLASSES, 5)
        for model, opt in zip((one, many), opts):
            opt.zero_grad()
            functional.cross_entropy(model(idx), y).backward()
            opt.step()
    got = tp.full_state_dict(many, grid.tp_comm)
    want = one.state_dict()
    assert got.keys() == want.keys()
    for k, value in got.items():
        np.testing.assert_allclose(value, want[k], rtol=0, atol=1e-10, err_msg=k)
    assert np.abs(got["embedding.weight"] - _table().weight.data).max() > 1e-3   # it did train
    comm.barrier()
