"""The CuPy path: the same ops on cuda give the CPU's values and gradients. Skips without a GPU."""
import numpy as np
import pytest

import distbp as db
import distbp.nn.functional as F
from distbp import nn

pytestmark = pytest.mark.skipif(not db.cuda_available(), reason="no CUDA device (cupy + GPU) here")


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
    assert isinstance(t.numpy(), np.ndarray)
    assert (t * 2).numpy().tolist() == [2.0, 4.0]
