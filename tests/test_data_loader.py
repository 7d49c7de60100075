"""Global batches depend on (seed, epoch, batch size) only; shards are contiguous and balanced."""
import numpy as np
import pytest

from distbp.data import global_batches, num_batches, shard


def test_global_batches_partition_a_permutation_of_the_samples():
    batches = global_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(10))
    assert [len(b) for b in global_batches(10, 4, 0, 0, drop_last=True)] == [4, 4]
    assert num_batches(10, 4) == 3 and num_batches(10, 4, drop_last=True) == 2


def test_global_batches_depend_on_seed_and_epoch_only():
    a = np.concatenate(global_batches(50, 8, seed=1, epoch=2))
    assert np.array_equal(a, np.concatenate(global_batches(50, 8, seed=1, epoch=2)))
    assert np.array_equal(a, np.concatenate(global_batches(50, 5, seed=1, epoch=2)))   # same order, cut differently
    assert not np.array_equal(a, np.concatenate(global_batches(50, 8, seed=1, epoch=3)))
    assert not np.array_equal(a, np.concatenate(global_batches(50, 8, seed=2, epoch=2)))


@pytest.mark.parametrize("n", [0, 1, 3, 7, 8])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_are_contiguous_balanced_and_cover_the_batch(n, size):
    batch = np.arange(100, 100 + n)
    parts = [shard(batch, r, size) for r in range(size)]
    assert np.array_equal(np.concatenate(parts), batch)     # contiguous, in rank order
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)        # the extra samples go to the first ranks


def test_tiny_last_batch_leaves_some_ranks_empty():
    last = global_batches(9, 4, 0, 0)[-1]
    assert [len(shard(last, r, 4)) for r in range(4)] == [1, 0, 0, 0]


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 4 is out of range for a world of size 4"):
        shard(np.arange(3), 4, 4)
