"""Dropout: inverted scaling, off in eval, masks from distbp.random (seeded, keyed by step and global
sample so a split batch gets the whole batch's masks), gradient through a fixed mask."""
import numpy as np
import pytest
from conftest import t64

import distbp as db
from distbp import nn, random
from distbp.nn import functional as F


def test_dropout_zeroes_about_p_and_scales_survivors_by_one_over_keep():
    x = db.ones(200, 100)
    y = nn.Dropout(0.3)(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 20000 draws: std of the mean is 0.003
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)


def test_dropout_is_identity_in_eval_and_for_p_zero():
    x = db.randn(4, 5)
    d = nn.Dropout(0.5).eval()
    assert d(x) is x
    assert F.dropout(x, 0.0) is x
    assert np.all(F.dropout(x, 1.0).numpy() == 0)


def test_dropout_mask_comes_from_the_seeded_rng():
    x = db.ones(3, 8)
    db.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    db.manual_seed(7)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    db.manual_seed(7)
    keep = random.per_sample_uniform((3, 8), np.float32) >= 0.5  # the same draw, done by hand
    np.testing.assert_array_equal(a != 0, keep)
    assert not np.array_equal(F.dropout(x, 0.5).numpy(), a)  # the next draw is another mask
    db.manual_seed(8)
    assert not np.array_equal(F.dropout(x, 0.5).numpy(), a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_is_one_minus_p_and_survivors_are_scaled_exactly(p, dtype):
    x = db.tensor(np.ones((400, 250)), dtype=dtype)
    with random.batch(step=3, first_sample=1000):
        y = F.dropout(x, p).numpy()
    kept = y != 0
    assert abs(kept.mean() - (1 - p)) < 0.005  # 100000 draws: std of the mean <= 0.0016
    assert abs(kept.mean(axis=1) - (1 - p)).max() < 0.15  # every sample (row) gets its own mask
    assert y.dtype == dtype and np.all(y[kept] == dtype(1 / (1 - p)))


@pytest.mark.parametrize("sizes", [(5, 3), (1, 7), (0, 8), (4, 4)])
def test_masks_of_a_split_batch_are_the_rows_of_the_whole_batchs_masks(sizes):
    # two dropout layers, so the second draw of each block is compared too; a part may be empty
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(6, 6, bias=False), nn.Dropout(0.3))
    model[1].weight.data[...] = np.eye(6)
    x = db.tensor(np.random.default_rng(0).standard_normal((sum(sizes), 6)))
    with random.batch(step=11, first_sample=0):
        whole = model(x).numpy()
    parts, first = [], 0
    for n in sizes:
        with random.batch(step=11, first_sample=first):
            parts.append(model(x[first:first + n]).numpy())
        first += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with random.batch(step=12, first_sample=0):  # another step, other masks
        assert not np.array_equal(model(x).numpy(), whole)


def test_batch_axis_keys_masks_by_the_sample_axis_of_sequence_first_outputs():
    x = db.ones(5, 6, 4)  # (T, B, H)
    with random.batch(step=2, first_sample=0):
        whole = F.dropout(x, 0.5, batch_axis=1).numpy()
    with random.batch(step=2, first_sample=4):
        tail = F.dropout(x[:, 4:], 0.5, batch_axis=-2).numpy()
    np.testing.assert_array_equal(tail, whole[:, 4:])
    with random.batch(step=2, first_sample=0):  # the same samples batch-first: the transposed mask
        batch_first = F.dropout(db.ones(6, 5, 4), 0.5).numpy()
    np.testing.assert_array_equal(batch_first, whole.transpose(1, 0, 2))
    with pytest.raises(ValueError, match="batch_axis 3"):
        random.per_sample_uniform((2, 3), np.float32, batch_axis=3)


def test_manual_seed_repeats_masks_inside_and_outside_batch_blocks():
    x = db.ones(4, 5)

    def masks():
        with random.batch(step=1, first_sample=2):
            keyed = F.dropout(x, 0.5).numpy()
        return keyed, F.dropout(x, 0.5).numpy()

    db.manual_seed(21)
    first = masks()
    db.manual_seed(21)
    np.testing.assert_array_equal(masks(), first)
    db.manual_seed(22)
    again = masks()
    assert not np.array_equal(again[0], first[0]) and not np.array_equal(again[1], first[1])


def test_rng_state_round_trip_replays_the_dropout_masks_too():
    x = db.ones(4, 5)
    db.manual_seed(3)
    F.dropout(x, 0.5)
    state = db.get_rng_state()
    want = F.dropout(x, 0.5).numpy(), db.randn(3).numpy()
    db.manual_seed(99)
    db.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy(), want[0])
    np.testing.assert_array_equal(db.randn(3).numpy(), want[1])


@pytest.mark.parametrize("dtype,bits", [(np.float16, 11), (np.float32, 24), (np.float64, 53)])
def test_uniform_values_are_exact_multiples_below_one_in_their_dtype(dtype, bits):
    u = random.uniform(random.key(1, 2, 3), (50, 40), first_row=7, dtype=dtype)
    assert u.dtype == dtype and u.shape == (50, 40)
    assert 0 <= u.min() and u.max() < 1
    scaled = u.astype(np.float64) * 2.0 ** bits
    np.testing.assert_array_equal(scaled, np.floor(scaled))
    assert abs(u.astype(np.float64).mean() - 0.5) < 0.02
    rows = random.uniform(random.key(1, 2, 3), (10, 40), first_row=20, dtype=dtype)
    np.testing.assert_array_equal(rows, u[13:23])
    assert random.uniform(5, (), dtype=dtype).shape == ()


def test_keys_depend_on_every_part_and_its_order():
    keys = {random.key(0, 1), random.key(1, 0), random.key(0, 1, 0), random.key(1), random.key(0, -1),
            random.key(2**64 - 1, 1)}
    assert len(keys) == 6 and random.key(-1, 1) == random.key(2**64 - 1, 1)
    assert all(0 <= k < 2**64 for k in keys)


def test_dropout_matches_gradcheck_with_a_fixed_mask_in_train_mode():
    d = nn.Dropout(0.4)

    def fn(x):
        db.manual_seed(3)  # same mask for every finite-difference evaluation
        return d(x)

    x = t64(4, 5)
    assert db.gradcheck(fn, [x])
    x.grad = None
    db.manual_seed(3)
    y = d(x)
    y.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad, y.data / x.data)  # gradient = mask / (1 - p)


def test_dropout_matches_gradcheck_in_eval_mode():
    d = nn.Dropout(0.4).eval()
    assert db.gradcheck(lambda x: d(x) * 2.0, [t64(3, 2)])


def test_dropout_rejects_probabilities_outside_zero_one():
    with pytest.raises(ValueError, match="1.5"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="-0.1"):
        F.dropout(db.randn(2), -0.1)


@pytest.mark.skipif(not db.cuda_available(), reason="no CUDA device (cupy + GPU) here")
def test_masks_drawn_on_the_gpu_equal_the_hosts():
    x = np.ones((6, 5, 4))
    with random.batch(step=4, first_sample=3):
        cpu = F.dropout(db.tensor(x), 0.4, batch_axis=1).numpy()
    with random.batch(step=4, first_sample=3):
        gpu = F.dropout(db.tensor(x, device="cuda"), 0.4, batch_axis=1)
    assert gpu.device == "cuda"
    np.testing.assert_array_equal(gpu.numpy(), cpu)
