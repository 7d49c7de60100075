"""The CuPy path on a real GPU: every layer and loss equal to the CPU to 1e-10 (float64), gradients
checked against finite differences on the GPU, the compiled fused kernels equal to their NumPy
formulas, the optimizers equal to the CPU's, and the NCCL communicator on one GPU.

Skips without a GPU; DISTBP_REQUIRE_GPU=1 (benchmarks/gpu_check.sh sets it) turns the skip into a
failure, so a GPU check cannot pass by skipping. tests/test_cuda_standin.py runs the same cases on
a numpy-backed stand-in everywhere (dispatch and placement only, no CUDA)."""
import os

import numpy as np
import pytest
from cuda_cases import (
    LAYERS,
    LOSSES,
    OPTIMIZERS,
    assert_same,
    layer_input,
    run_layer,
    run_loss,
    run_optimizer,
)

import distbp as db
import distbp.nn.functional as F
from distbp import backend, kernels, nn, random

if not db.cuda_available():
    if os.environ.get("DISTBP_REQUIRE_GPU") == "1":
        pytest.fail(f"DISTBP_REQUIRE_GPU=1 but no GPU is usable: {backend.cuda_problem()}", pytrace=False)
    pytest.skip(f"no CUDA device: {backend.cuda_problem()}", allow_module_level=True)

cp = backend.cupy_module()


def test_mlp_step_on_cuda_matches_cpu():
    db.manual_seed(0)
    cpu = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    gpu = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to("cuda")
    x = np.random.default_rng(1).standard_normal((4, 6))
    y = np.array([0, 2, 1, 2])
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        loss = F.cross_entropy(model(db.tensor(x, device=device)), db.tensor(y, device=device))
        loss.backward()
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert pg.device == "cuda", name
        np.testing.assert_allclose(db.backend.to_numpy(pg.grad), pc.grad, rtol=1e-10, atol=1e-12)


def test_tensor_numpy_returns_host_array():
    t = db.tensor([1.0, 2.0], device="cuda")
    assert isinstance(t.data, cp.ndarray)
    assert isinstance(t.numpy(), np.ndarray)
    assert (t * 2).numpy().tolist() == [2.0, 4.0]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_on_the_gpu_equals_the_cpu(name):
    assert_same(run_layer(name, "cpu"), run_layer(name, "cuda"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_on_the_gpu_equals_the_cpu(name):
    assert_same(run_loss(name, "cpu"), run_loss(name, "cuda"), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradcheck_on_the_gpu(name):
    factory, shape = LAYERS[name]
    db.manual_seed(0)
    module = factory().double().to("cuda")
    x_host = layer_input(shape)
    x = db.tensor(x_host, requires_grad=x_host.dtype.kind == "f", device="cuda")

    def fn(x, *params):
        with random.batch(0, 0):  # dropout: the same mask on every evaluation
            out = module(x)
        return out[0] if isinstance(out, tuple) else out
    assert db.gradcheck(fn, [x, *module.parameters()])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_of_losses_on_the_gpu(name):
    from cuda_cases import loss_inputs
    cls, shape, kind = LOSSES[name]
    pred, target = loss_inputs(shape, kind)
    assert db.gradcheck(lambda p: cls()(p, db.tensor(target, device="cuda")),
                        [db.tensor(pred, requires_grad=True, device="cuda")])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_on_the_gpu_equals_the_cpu(name):
    cpu, gpu = run_optimizer(name, "cpu"), run_optimizer(name, "cuda")
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-10, atol=1e-12, err_msg=key)


def _kernel_args(name, dtype):
    rng = np.random.default_rng(5)
    a = [rng.standard_normal((33, 7)).astype(dtype) for _ in range(4)]
    a[3] = np.abs(a[3])  # exp_avg_sq >= 0
    scalars = {"sgd": (0.1,), "sgd_momentum": (0.1, 0.9, 0.9, 0.01), "sgd_nesterov": (0.1, 0.9, 1.0, 0.01),
               "adam": (0.999, 0.01, 0.9, 0.1, 0.999, 0.001, 1.2, 1e-8, 0.05)}
    arrays = {"sigmoid": 1, "sigmoid_backward": 2, "tanh_backward": 2, "relu_backward": 2, "bce_with_logits": 2,
              "bce_with_logits_backward": 3, "mse_backward": 2, "sgd": 2, "sgd_momentum": 3, "sgd_nesterov": 3,
              "adam": 4}[name]
    return a[:arrays], scalars.get(name, ())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(kernels.FORMULAS))
def test_compiled_fused_kernels_equal_their_numpy_formulas(name, dtype):
    host, scalars = _kernel_args(name, dtype)
    dev = [cp.asarray(a) for a in host]
    want = kernels.fused(np, name)(*host, *scalars)
    got = kernels.fused(cp, name)(*dev, *scalars)
    tol = 1e-12 if dtype == np.float64 else 1e-5  # the GPU may contract a*b+c into one FMA
    if want is None:  # an in-place update: compare the arrays it wrote
        for h, d in zip(host, dev):
            np.testing.assert_allclose(cp.asnumpy(d), h, rtol=tol, atol=tol)
    else:
        assert got.dtype == want.dtype
        np.testing.assert_allclose(cp.asnumpy(got), want, rtol=tol, atol=tol)


def test_nccl_communicator_on_one_gpu():
    """The real NCCL binding (unique id, pointers, streams, events) in a world of one."""
    from distbp.distributed import MPIComm
    from distbp.distributed.comm.nccl import NCCLComm, nccl_problem
    why = nccl_problem(cp)
    if why:
        if os.environ.get("DISTBP_REQUIRE_NCCL") == "1":
            pytest.fail(f"DISTBP_REQUIRE_NCCL=1 but {why}", pytrace=False)
        pytest.skip(why)
    comm = NCCLComm(MPIComm())
    a = cp.arange(6, dtype=cp.float32)
    assert comm.allreduce(a) is a
    np.testing.assert_array_equal(cp.asnumpy(a), np.arange(6))
    np.testing.assert_array_equal(cp.asnumpy(comm.allgather(a)), np.arange(6)[None])
    np.testing.assert_array_equal(cp.asnumpy(comm.bcast(a)), np.arange(6))
    assert comm.path_of(a) == "nccl"


def test_device_is_pinned_by_local_rank():
    from distbp.distributed import SelfComm
    from distbp.distributed.gpu import pin_device
    assert pin_device(SelfComm()) == 0
    assert db.tensor([1.0], device="cuda").data.device.id == 0
