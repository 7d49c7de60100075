"""Tensor parallelism in a world of one: gradcheck of the four region operators, the parallel Linears
equal to nn.Linear, the size checks, the shard specs, and the column-offset draws of distbp.random
(the shards' masks together are the full mask, and the default draw is unchanged)."""
import numpy as np
import pytest

import distbp as db
from distbp import random
from distbp.distributed import ColumnParallelLinear, ProcessGrid, RowParallelLinear, SelfComm
from distbp.distributed import tensor_parallel as tp
from distbp.gradcheck import gradcheck


def _t64(*shape, seed):
    return db.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True, dtype=np.float64)


class _TwoRanks(SelfComm):
    """Rank 0 of a pretended world of two: only the size checks run before any communication."""
    rank, size = 0, 2


@pytest.mark.parametrize("op", ["copy_to", "reduce_from", "scatter_to", "gather_from"])
def test_region_operators_pass_gradcheck_in_a_world_of_one(op):
    fn = getattr(tp, f"{op}_tensor_parallel_region")
    c = SelfComm()
    x = _t64(3, 4, seed=0)
    assert gradcheck(lambda a: fn(a.tanh(), c) * 2.0, [x])
    np.testing.assert_array_equal(fn(x, c).data, x.data)


def test_parallel_linears_in_a_world_of_one_equal_nn_linear():
    db.set_default_dtype(np.float64)
    c = SelfComm()
    x = _t64(5, 4, seed=1)
    lin = db.nn.Linear(4, 6)
    for layer in (ColumnParallelLinear.from_linear(lin, c), ColumnParallelLinear.from_linear(lin, c, True),
                  RowParallelLinear.from_linear(lin, c), RowParallelLinear.from_linear(lin, c, False)):
        np.testing.assert_array_equal(layer(x).data, lin(x).data)
        assert gradcheck(lambda a, layer=layer: layer(a), [x])
    db.manual_seed(3)
    built = ColumnParallelLinear(4, 6, c)
    db.manual_seed(3)
    ref = db.nn.Linear(4, 6)
    np.testing.assert_array_equal(built.weight.data, ref.weight.data)   # the same draws as nn.Linear
    np.testing.assert_array_equal(built.bias.data, ref.bias.data)


def test_sizes_not_divisible_by_the_tensor_parallel_size_raise():
    lin = db.nn.Linear(4, 5)
    with pytest.raises(ValueError, match="^out_features 5 is not divisible by the tensor-parallel size 2$"):
        ColumnParallelLinear.from_linear(lin, _TwoRanks())
    with pytest.raises(ValueError, match="^in_features 5 is not divisible by the tensor-parallel size 2$"):
        RowParallelLinear(5, 4, _TwoRanks())


def test_shard_specs_name_the_sliced_dim_and_full_state_dict_is_the_state_in_a_world_of_one():
    c = _TwoRanks()
    col, row = ColumnParallelLinear(3, 4, c), RowParallelLinear(4, 3, c)
    assert col.weight.shape == (2, 3) and col.bias.shape == (2,) and row.weight.shape == (3, 2)
    assert col.shard_spec == {"weight": tp.ShardSpec(0, 0, 2, 4), "bias": tp.ShardSpec(0, 0, 2, 4)}
    assert row.shard_spec == {"weight": tp.ShardSpec(1, 0, 2, 4), "bias": tp.ShardSpec(None)}
    model = db.nn.Sequential(ColumnParallelLinear(3, 4, SelfComm()), db.nn.Tanh(),
                             RowParallelLinear(4, 2, SelfComm()))
    full = tp.full_state_dict(model, SelfComm())
    assert full.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(full[k], v)


def test_column_offset_draws_are_the_columns_of_the_full_draw_and_the_default_is_unchanged():
    k = random.key(7, 1)
    full = random.uniform(k, (4, 3, 6), first_row=5)
    parts = [random.uniform(k, (4, 3, 2), 5, first_col=c0, full_cols=6) for c0 in (0, 2, 4)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=-1), full)
    np.testing.assert_array_equal(random.uniform(k, (4, 3, 6), 5, first_col=0, full_cols=6), full)
    with pytest.raises(ValueError, match="do not fit"):
        random.uniform(k, (2, 3), first_col=4, full_cols=6)


def test_tensor_parallel_dropout_in_a_world_of_one_is_nn_dropout():
    x = _t64(6, 8, seed=2)
    with random.batch(step=3, first_sample=10):
        ref = db.nn.functional.dropout(x, 0.4)
    with random.batch(step=3, first_sample=10):
        got = tp.tensor_parallel_dropout(x, 0.4, True, SelfComm())
    np.testing.assert_array_equal(got.data, ref.data)
    assert tp.tensor_parallel_dropout(x, 0.4, False, SelfComm()) is x


def test_grid_with_one_tensor_rank_and_a_bad_tensor_parallel_size():
    grid = ProcessGrid(SelfComm(), pipeline_stages=1, tensor_parallel=1)
    assert (grid.tp_size, grid.tp_rank, grid.tp_comm.size) == (1, 0, 1)
    with pytest.raises(ValueError, match=r"^world size 1 is not a multiple of --pipeline-stages 1 x "
                                         r"--tensor-parallel 2 = 2; use 2 ranks$"):
        ProcessGrid(SelfComm(), tensor_parallel=2)
    for bad in (0, 2.0, "2"):
        with pytest.raises(ValueError, match="--tensor-parallel must be a positive integer"):
            ProcessGrid(SelfComm(), tensor_parallel=bad)


def test_linear_pairs_pair_linears_joined_only_by_elementwise_layers():
    nn = db.nn
    model = nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=-1), nn.Linear(6, 6), nn.Tanh(), nn.Dropout(0.2),
                          nn.Linear(6, 4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2))
    # "0" is cut off by Softmax; "5" is "2"'s partner and cannot start a pair; "9" has none
    assert tp.linear_pairs(model) == [("2", "5"), ("6", "8")]
    par = tp.parallelize(model, SelfComm())
    assert [type(m).__name__ for m in par] == [
        "Linear", "Softmax", "ColumnParallelLinear", "Tanh", "TensorParallelDropout", "RowParallelLinear",
        "ColumnParallelLinear", "ReLU", "RowParallelLinear", "Linear"]
    with pytest.raises(TypeError, match="'1' \\(Softmax\\) sits between the Linears '0' and '2'"):
        tp.parallelize_mlp(model, SelfComm())    # the strict MLP form refuses what parallelize leaves whole


def test_parallelize_keeps_the_cnn_trunk_and_splits_its_head_under_the_same_names():
    from distbp.training import registry
    db.set_default_dtype(np.float64)
    model = registry.build_model("cnn", (64,), 3, hidden=[6], channels=2)
    par = tp.parallelize(model, SelfComm())
    assert tp.linear_pairs(model) == [("8", "10")]
    assert all(par[i] is model[i] for i in range(8))           # the trunk is the same modules
    assert isinstance(par[8], ColumnParallelLinear) and isinstance(par[10], RowParallelLinear)
    assert list(par.state_dict()) == list(model.state_dict())
    x = np.random.default_rng(0).standard_normal((5, 64))
    np.testing.assert_allclose(par(db.tensor(x)).data, model(db.tensor(x)).data, rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="nn.Sequential"):
        tp.parallelize(model[8], SelfComm())


def test_vocab_parallel_embedding_in_a_world_of_one_is_nn_embedding_and_passes_gradcheck():
    db.set_default_dtype(np.float64)
    c = SelfComm()
    idx = np.array([[0, 3, 5], [5, 2, 2]])
    for pad in (None, 2):
        full = db.nn.Embedding(6, 4, padding_idx=pad)
        par = tp.VocabParallelEmbedding.from_embedding(full, c)
        assert par.padding_idx == pad and par.shard_spec["weight"] == tp.ShardSpec(0, 0, 6, 6)
        np.testing.assert_array_equal(par(idx).data, full(idx).data)
        g = np.random.default_rng(2).standard_normal((2, 3, 4))
        (par(idx) * g).sum().backward()
        (full(idx) * g).sum().backward()
        np.testing.assert_array_equal(par.weight.grad, full.weight.grad)   # the padding row's is zero in both
    par = tp.VocabParallelEmbedding.from_embedding(db.nn.Embedding(6, 4), c)
    assert gradcheck(lambda w: par(idx).tanh(), [par.weight])   # w is the table the layer looks rows up in
    db.manual_seed(4)
    built = tp.VocabParallelEmbedding(6, 4, c)
    db.manual_seed(4)
    np.testing.assert_array_equal(built.weight.data, db.nn.Embedding(6, 4).weight.data)   # the same draws
    with pytest.raises(IndexError, match="indices span \\[0, 6\\] but the table has 6 rows"):
        built(np.array([0, 6]))
    with pytest.raises(ValueError, match="num_embeddings 5 is not divisible by the tensor-parallel size 2"):
        tp.VocabParallelEmbedding(5, 4, _TwoRanks())
