"""The GPU path's Python side without a GPU: dispatch, device placement, fused-kernel calls, device
pinning and the GPU communicator's selection, run on the numpy-backed cupy stand-in
(tests/cupy_standin.py). Nothing here runs CUDA; tests/test_cuda.py does, on a GPU."""
import numpy as np
import pytest
from cuda_cases import LAYERS, LOSSES, OPTIMIZERS, assert_same, run_layer, run_loss, run_optimizer
from cupy_standin import install

import distbp as db
from distbp import backend, kernels, nn
from distbp.distributed import SelfComm
from distbp.distributed.gpu import DeviceError, choose_path, pin_device, setup_cuda


@pytest.fixture
def standin(monkeypatch):
    return install(monkeypatch)


def test_arrays_moved_to_cuda_are_the_standins_and_come_back_as_numpy(standin):
    t = db.tensor([1.0, 2.0], device="cuda")
    assert isinstance(t.data, standin.ndarray) and t.device == "cuda"
    assert backend.get_array_module(t.data) is standin
    assert backend.get_array_module(np.zeros(1)) is np
    host = (t * 2).numpy()
    assert type(host) is np.ndarray and host.tolist() == [2.0, 4.0]
    assert standin.calls("h2d") and standin.calls("d2h")


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_on_the_standin_equals_the_cpu_with_gradients_on_the_device(standin, name):
    cpu = run_layer(name, "cpu")
    assert not standin.calls("fuse"), "the CPU path must never call a fused kernel"
    assert_same(cpu, run_layer(name, "cuda"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_on_the_standin_equals_the_cpu(standin, name):
    assert_same(run_loss(name, "cpu"), run_loss(name, "cuda"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_on_the_standin_equals_the_cpu(standin, name):
    cpu = run_optimizer(name, "cpu")
    gpu = run_optimizer(name, "cuda")
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("case, kernels_used", [
    ("sigmoid", {"distbp_sigmoid", "distbp_sigmoid_backward"}),
    ("tanh", {"distbp_tanh_backward"}),
    ("relu", {"distbp_relu_backward"}),
])
def test_activations_on_the_device_run_their_fused_kernels(standin, case, kernels_used):
    run_layer(case, "cuda")
    assert kernels_used <= set(standin.calls("fuse"))


@pytest.mark.parametrize("case, kernels_used", [
    ("bce_with_logits", {"distbp_bce_with_logits", "distbp_bce_with_logits_backward"}),
    ("mse", {"distbp_mse_backward"}),
])
def test_losses_on_the_device_run_their_fused_kernels(standin, case, kernels_used):
    run_loss(case, "cuda")
    assert kernels_used <= set(standin.calls("fuse"))


@pytest.mark.parametrize("name, kernel, steps_fused", [
    ("sgd", "distbp_sgd", 3), ("sgd_momentum", "distbp_sgd_momentum", 2),  # the first step seeds the buffer
    ("sgd_nesterov", "distbp_sgd_nesterov", 2), ("adam", "distbp_adam", 3), ("adamw", "distbp_adam", 3)])
def test_optimizer_updates_on_the_device_are_one_fused_kernel_per_parameter(standin, name, kernel, steps_fused):
    run_optimizer(name, "cuda", steps=3)
    assert standin.calls("fuse").count(kernel) == 4 * steps_fused  # 4 parameters


def test_amsgrad_keeps_the_unfused_update_on_the_device(standin):
    run_optimizer("adam_amsgrad", "cuda")
    assert "distbp_adam" not in standin.calls("fuse")


def test_a_host_array_reaching_a_fused_kernel_is_refused(standin):
    """The stand-in enforces cupy.fuse's rule, so the dispatch tests above would catch a host leak."""
    with pytest.raises(TypeError, match="host array"):
        kernels.fused(standin, "relu_backward")(np.ones(3), standin.asarray(np.ones(3)))


def test_pinning_picks_the_gpu_before_the_first_allocation(monkeypatch):
    standin = install(monkeypatch, devices=2)
    monkeypatch.setattr(backend, "_cupy_checked", False)  # as in a fresh process: nothing allocated yet
    monkeypatch.setattr(backend, "_cupy", None)
    import sys
    monkeypatch.setitem(sys.modules, "cupy", standin)
    monkeypatch.setattr("distbp.distributed.gpu.local_rank", lambda comm: 3)  # local rank 3, 2 GPUs
    assert pin_device(SelfComm()) == 1
    assert backend.cuda_available()
    assert standin.calls("use") == [1]  # chosen before the probe allocation, and only that device
    t = db.tensor([1.0], device="cuda")
    assert t.data.device_id == 1
    layer = nn.Linear(2, 2).to("cuda")
    assert {p.data.device_id for p in layer.parameters()} == {1}


def test_setup_cuda_in_a_world_of_one_keeps_the_communicator(standin):
    comm = SelfComm()
    assert setup_cuda(comm) is comm


@pytest.mark.parametrize("problem", ["cupy is not installed (pip install 'distbp[cuda]')",
                                     "cupy is installed but the CUDA runtime finds no GPU"])
def test_setup_cuda_without_a_gpu_says_why_in_one_line(monkeypatch, problem):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cupy_problem", problem)
    with pytest.raises(DeviceError) as e:
        setup_cuda(SelfComm())
    assert str(e.value) == f"--device cuda: {problem}; use --device cpu"


@pytest.mark.parametrize("preference, nccl_why, cuda_mpi, path", [
    ("auto", "", True, "nccl"),
    ("auto", "", False, "nccl"),
    ("auto", "libnccl is not loadable", True, "cuda-aware mpi"),
    ("auto", "libnccl is not loadable", False, "host staging"),
    ("nccl", "", False, "nccl"),
    ("mpi", "", True, "cuda-aware mpi"),
    ("host", "", True, "host staging"),
])
def test_choose_path_takes_the_best_path_every_rank_can_use(preference, nccl_why, cuda_mpi, path):
    assert choose_path(preference, nccl_why, cuda_mpi)[0] == path


def test_choose_path_says_why_it_passed_the_better_paths_over():
    path, skipped = choose_path("auto", "rank 1: libnccl is not loadable", False, "MPIX_Query_cuda_support() = 0")
    assert path == "host staging"
    assert skipped == ["nccl: rank 1: libnccl is not loadable", "cuda-aware mpi: MPIX_Query_cuda_support() = 0"]


@pytest.mark.parametrize("preference, nccl_why, cuda_mpi, message", [
    ("nccl", "libnccl is not loadable", True, "DISTBP_GPU_COMM=nccl but NCCL cannot be used: libnccl"),
    ("mpi", "", False, "DISTBP_GPU_COMM=mpi but MPI is not CUDA-aware"),
])
def test_asking_for_a_path_that_cannot_be_taken_is_an_error(preference, nccl_why, cuda_mpi, message):
    with pytest.raises(DeviceError, match=message):
        choose_path(preference, nccl_why, cuda_mpi)


def test_unknown_gpu_comm_preference_is_rejected(monkeypatch):
    monkeypatch.setenv("DISTBP_GPU_COMM", "gloo")
    with pytest.raises(ValueError, match="DISTBP_GPU_COMM='gloo'; expected auto, nccl, mpi or host"):
        backend.gpu_comm_preference()
    with pytest.raises(DeviceError, match="DISTBP_GPU_COMM='gloo'"):  # train and bench: one line, exit 2
        setup_cuda(SelfComm())


def test_synchronize_waits_on_the_current_stream(standin):
    backend.synchronize()
    assert standin.calls("sync") == [0]


NO_GPU = pytest.mark.skipif(backend.cuda_available(), reason="this machine has a GPU")


@NO_GPU
def test_doctor_says_there_is_no_gpu_without_one():
    from distbp.doctor import check_gpu_buckets
    lines, figures = check_gpu_buckets(SelfComm())
    assert figures == {"gpu_bucket_path": "no GPU"}
    assert lines[0].startswith("OK   GPU gradient buckets: no GPU (rank 0: ")


def test_doctor_checks_a_gpu_bucket_on_the_standin(standin):
    from distbp.doctor import check_gpu_buckets
    lines, figures = check_gpu_buckets(SelfComm())
    assert lines == ["OK   GPU gradient-bucket allreduce through a world of one (no communication)"]
    assert figures == {"gpu_bucket_path": "none"}


def test_train_with_device_cuda_runs_on_the_standin_and_matches_the_cpu(standin, tmp_path):
    """distbp.train --device cuda end to end: weights on the device, the checkpoint equal to the CPU run's."""
    from safetensors.numpy import load_file

    from distbp.train import main
    from distbp.training import checkpoint
    args = ["--no-progress", "--steps", "6", "--batch-size", "32", "--dtype", "float64", "--optimizer", "adam"]
    assert main([*args, "--checkpoint-dir", str(tmp_path / "cpu")]) == 0
    assert not standin.calls("fuse")
    assert main([*args, "--device", "cuda", "--checkpoint-dir", str(tmp_path / "gpu")]) == 0
    assert "distbp_adam" in standin.calls("fuse") and "distbp_relu_backward" in standin.calls("fuse")
    cpu, gpu = (load_file(str(checkpoint.latest(tmp_path / d))) for d in ("cpu", "gpu"))
    assert cpu.keys() == gpu.keys()
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_bench_with_device_cuda_runs_on_the_standin(standin, capsys):
    import json

    from distbp.bench import main
    assert main(["--device", "cuda", "--sizes", "20,16,4", "--batch-per-rank", "8", "--steps", "2", "--warmup", "1",
                 "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cuda" and out["bucket_paths"] == ["none"] and out["step_ms"] > 0
    assert standin.calls("sync") and "distbp_sgd" in standin.calls("fuse")


@NO_GPU
def test_bench_with_device_cuda_and_no_gpu_is_one_line(capsys):
    from distbp.bench import main
    assert main(["--device", "cuda", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distbp.bench: error: --device cuda: ") and "use --device cpu" in err[0]


@NO_GPU
def test_a_cupy_that_does_not_import_is_named_as_such(monkeypatch):
    """A missing dependency of cupy is not 'cupy is not installed' (cupy 14 without cuda-pathfinder)."""
    import builtins
    import sys
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy":
            raise ModuleNotFoundError("No module named 'cuda'", name="cuda")
        return real_import(name, *args, **kwargs)
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(backend, "_cupy_checked", False)
    monkeypatch.setattr(backend, "_cupy", None)
    assert backend.cuda_problem() == "cupy does not import (No module named 'cuda')"
