"""The fixed tree of deterministic mode, in one process: groups, ownership and the order of the sums."""
import itertools

import numpy as np
import pytest

import distbp as db
from distbp import nn
from distbp.distributed import DistributedDataParallel, SelfComm
from distbp.distributed.deterministic import _is_node, _tree, check_groups, group_starts


def test_groups_cut_the_batch_like_array_split():
    assert group_starts(13, 5) == [0, 3, 6, 9, 11, 13]
    assert group_starts(3, 5) == [0, 1, 2, 3]          # fewer samples than groups: one sample each
    assert group_starts(8, 1) == [0, 8]


def test_the_tree_splits_each_node_at_its_middle():
    assert set(_tree(5)) == {(0, 5), (0, 2), (0, 1), (1, 2), (2, 5), (2, 3), (3, 5), (3, 4), (4, 5)}
    assert sorted(_tree(5).values()) == list(range(9))
    assert _is_node(3, 5, 5) and not _is_node(1, 3, 5) and not _is_node(0, 3, 5)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, 20000])
def test_a_bad_group_count_is_one_line(bad):
    with pytest.raises(ValueError, match="Invalid groups"):
        check_groups(bad)


def _pairwise(values, lo, hi):
    if hi - lo == 1:
        return values[lo]
    mid = (lo + hi) // 2
    return _pairwise(values, lo, mid) + _pairwise(values, mid, hi)


def test_gradients_are_the_pairwise_tree_of_the_group_gradients():
    db.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((11, 7)).astype(np.float32)
    model = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3))
    ddp = DistributedDataParallel(model, SelfComm(), deterministic=True, groups=5, average=False)   # 1 BLAS thread
    starts = group_starts(11, 5)
    leaves = []                                        # each group's gradient, computed alone
    for a, b in itertools.pairwise(starts):
        model.zero_grad()
        (model(db.tensor(x[a:b])) ** 2).sum().backward()
        leaves.append([p.grad.copy() for p in model.parameters()])
    expected = [_pairwise([leaf[i] for leaf in leaves], 0, 5) for i in range(4)]
    sequential = [sum(leaf[i] for leaf in leaves) for i in range(4)]
    for a, b in ddp.group_bounds(11):
        (ddp(db.tensor(x[a:b])) ** 2).sum().backward()
        assert all(p.grad is None for p in model.parameters())   # filed apart, not accumulated
    ddp.reduce_groups()
    assert all(np.array_equal(p.grad, e) for p, e in zip(model.parameters(), expected))
    # the order matters in float32: a left-to-right sum of the same leaves differs somewhere
    assert not all(np.array_equal(s, e) for s, e in zip(sequential, expected))


def test_average_divides_by_the_number_of_groups():
    model = nn.Linear(2, 1)
    ddp = DistributedDataParallel(model, SelfComm(), deterministic=True, groups=4, average=True)
    for a, b in ddp.group_bounds(3):                   # 3 samples: 3 groups
        ddp(db.tensor(np.ones((b - a, 2)))).sum().backward()
    ddp.reduce_groups()
    assert np.array_equal(model.bias.grad, np.ones(1, np.float32))


def test_a_bad_group_setting_of_distbp_train_is_one_line():
    from distbp.training.config import ConfigError, parse_config
    for argv, text in ((["--deterministic-groups", "0"], "invalid deterministic_groups 0"),
                       (["--deterministic", "--zero", "1"], "--deterministic with --zero 1"),
                       (["--deterministic", "--tensor-parallel", "2"], "--deterministic with --tensor-parallel 2")):
        with pytest.raises(ConfigError, match=text):
            parse_config(argv)
