"""BatchNorm: formula references, running statistics, finite differences in train and eval mode,
the reduce_fn seam that SyncBatchNorm uses, and PyTorch state dicts."""
import threading

import numpy as np
import pytest
from conftest import t64, torch_or_skip

import distbp as db
from distbp import nn
from distbp.nn import functional as F


def _as64(module):
    return module.double()


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)),
                                       (nn.BatchNorm2d, (4, 3, 2, 3))])
def test_batchnorm_train_output_and_running_stats_follow_the_formulas(cls, shape):
    bn = _as64(cls(3, momentum=0.3))
    bn.weight.data[...] = [0.5, 1.0, 2.0]
    bn.bias.data[...] = [0.0, -1.0, 1.0]
    x = t64(*shape, requires_grad=False).data * 2 + 1
    axes = tuple(i for i in range(x.ndim) if i != 1)
    sh = (1, 3) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    y = bn(db.tensor(x)).numpy()
    expect = (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + 1e-5) * bn.weight.data.reshape(sh) \
        + bn.bias.data.reshape(sh)
    np.testing.assert_allclose(y, expect, atol=1e-12)
    m = x.size // 3
    np.testing.assert_allclose(bn.running_mean, 0.3 * mean, atol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.7 + 0.3 * var * m / (m - 1), atol=1e-12)  # unbiased
    assert bn.num_batches_tracked == 1 and bn.num_batches_tracked.dtype == np.int64


def test_batchnorm_eval_uses_running_stats_and_does_not_update_them():
    bn = _as64(nn.BatchNorm2d(2)).eval()
    bn.running_mean[...] = [1.0, -2.0]
    bn.running_var[...] = [4.0, 0.25]
    x = t64(3, 2, 2, 2, requires_grad=False).data
    y = bn(db.tensor(x)).numpy()
    expect = (x - np.array([1.0, -2.0])[:, None, None]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5)[:, None, None]
    np.testing.assert_allclose(y, expect, atol=1e-12)
    np.testing.assert_array_equal(bn.running_mean, [1.0, -2.0])
    assert bn.num_batches_tracked == 0


def test_batchnorm_momentum_none_is_a_cumulative_average():
    bn = _as64(nn.BatchNorm1d(2, momentum=None))
    xs = [t64(5, 2, requires_grad=False, seed=i).data for i in range(3)]
    for x in xs:
        bn(db.tensor(x))
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(0) for x in xs], axis=0), atol=1e-12)
    np.testing.assert_allclose(bn.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0), atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 4), (2, 3, 2, 3)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batchnorm_matches_gradcheck_in_train_and_eval(mode, shape):
    bn = _as64(nn.BatchNorm2d(3) if len(shape) == 4 else nn.BatchNorm1d(3))
    bn.running_mean[...] = [0.1, -0.2, 0.3]
    bn.running_var[...] = [0.5, 1.5, 2.0]
    getattr(bn, mode)()
    x, w, b = t64(*shape), t64(3), t64(3)
    bn.weight, bn.bias = nn.Parameter(w), nn.Parameter(b)
    assert db.gradcheck(lambda x, w, b: F.batch_norm(x, bn.running_mean, bn.running_var, w, b,
                                                     training=mode == "train", momentum=0.0), [x, w, b])
    assert db.gradcheck(lambda x: bn(x), [x])


def test_batchnorm_without_affine_matches_gradcheck():
    bn = _as64(nn.BatchNorm1d(2, affine=False))
    assert bn.weight is None
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    assert db.gradcheck(lambda x: bn(x), [t64(4, 2)])


def _run_two_ranks(halves, weight, bias):
    """Two threads stand in for two ranks: reduce_fn sums both ranks' vectors, like allreduce(SUM)."""
    barrier = threading.Barrier(2)
    slots = [None, None]
    results = [None, None]

    def rank(r):
        def reduce_fn(v):
            slots[r] = v.copy()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()  # both have read before either writes its next vector
            return total

        x = db.tensor(halves[r], requires_grad=True)
        w, b = db.tensor(weight, requires_grad=True), db.tensor(bias, requires_grad=True)
        rm, rv = np.zeros(3), np.ones(3)
        y = F.batch_norm(x, rm, rv, w, b, training=True, reduce_fn=reduce_fn)
        g = np.arange(y.data.size, dtype=np.float64).reshape(y.shape) % 7 - 3 + r * y.data.size % 7
        y.backward(g)
        results[r] = (y.numpy(), x.grad, w.grad, b.grad, rm, rv, g)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_reduce_fn_over_two_ranks_equals_one_batchnorm_on_the_concatenated_batch():
    x = t64(6, 3, 2, requires_grad=False).data * 3 + 1
    weight, bias = np.array([0.5, 1.0, 2.0]), np.array([0.1, 0.2, 0.3])
    halves = [x[:2], x[2:]]  # unequal halves: the count must come from the reduced statistics
    r0, r1 = _run_two_ranks(halves, weight, bias)
    xt, w, b = db.tensor(x, requires_grad=True), db.tensor(weight, requires_grad=True), \
        db.tensor(bias, requires_grad=True)
    rm, rv = np.zeros(3), np.ones(3)
    y = F.batch_norm(xt, rm, rv, w, b, training=True)
    y.backward(np.concatenate([r0[6], r1[6]]))
    np.testing.assert_allclose(np.concatenate([r0[0], r1[0]]), y.numpy(), atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r0[1], r1[1]]), xt.grad, atol=1e-12)
    # weight/bias gradients stay local: their sum over ranks is the single-process gradient
    np.testing.assert_allclose(r0[2] + r1[2], w.grad, atol=1e-12)
    np.testing.assert_allclose(r0[3] + r1[3], b.grad, atol=1e-12)
    for r in (r0, r1):  # every rank ends with the global running statistics
        np.testing.assert_allclose(r[4], rm, atol=1e-12)
        np.testing.assert_allclose(r[5], rv, atol=1e-12)


def test_batchnorm_rejects_one_value_per_channel_and_wrong_channels():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(db.randn(1, 3))
    with pytest.raises(ValueError, match="4 channels"):
        nn.BatchNorm2d(3)(db.randn(2, 4, 2, 2))
    with pytest.raises(ValueError, match="4-D"):
        nn.BatchNorm2d(3)(db.randn(2, 3))


def test_batchnorm_loads_a_torch_state_dict_and_matches_torch_in_both_modes():
    torch = torch_or_skip()
    tbn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        tbn.weight.uniform_(0.5, 1.5)
        tbn.bias.uniform_(-1, 1)
    bn = _as64(nn.BatchNorm2d(3))
    assert list(bn.state_dict()) == list(tbn.state_dict())
    bn.load_state_dict({k: v.detach().numpy() for k, v in tbn.state_dict().items()})
    rng = np.random.default_rng(0)
    for mode in ("train", "eval"):
        getattr(bn, mode)()
        getattr(tbn, mode)()
        x = rng.standard_normal((4, 3, 2, 3)) * 2 + 1
        xt, xd = torch.tensor(x, requires_grad=True), db.tensor(x, requires_grad=True)
        yt, yd = tbn(xt), bn(xd)
        (yt ** 3).sum().backward()
        (yd * yd * yd).sum().backward()
        np.testing.assert_allclose(yd.numpy(), yt.detach().numpy(), atol=1e-10)
        np.testing.assert_allclose(xd.grad, xt.grad.numpy(), atol=1e-9)
        np.testing.assert_allclose(bn.weight.grad, tbn.weight.grad.numpy(), atol=1e-9)
        for k, v in tbn.state_dict().items():
            np.testing.assert_allclose(bn.state_dict()[k], v.detach().numpy(), atol=1e-12)
        bn.zero_grad()
        tbn.zero_grad()
