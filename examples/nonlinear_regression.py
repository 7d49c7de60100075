"""Nonlinear regression: a small tanh MLP fits y = sin(x) + noise on [-3, 3].

    python examples/nonlinear_regression.py

Adam with a cosine learning-rate schedule and gradient clipping, full batch. Prints the training
MSE (it cannot beat the noise variance, 0.01) and the error against the noise-free sin(x) on a grid.
"""
import numpy as np

import distbp as db
import distbp.nn.functional as F
from distbp import nn
from distbp.optim.lr_scheduler import CosineAnnealingLR

NOISE = 0.1


def make_data(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, 1))
    y = np.sin(x) + NOISE * rng.standard_normal((n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def main(steps: int = 1500, lr: float = 0.01) -> dict:
    db.manual_seed(0)
    x, y = make_data()
    model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = db.optim.Adam(model.parameters(), lr=lr)
    sched = CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 100)
    xt, yt = db.tensor(x), db.tensor(y)
    for step in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(xt), yt)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        sched.step()
        if step % 300 == 0:
            print(f"step {step:5d}  mse {loss.item():.5f}  lr {sched.get_last_lr()[0]:.5f}")
    with db.no_grad():
        train_mse = float(F.mse_loss(model(xt), yt).item())
        grid = np.linspace(-3, 3, 61, dtype=np.float32).reshape(-1, 1)
        fit = model(db.tensor(grid)).numpy()
    err = np.abs(fit - np.sin(grid))
    print(f"train mse {train_mse:.5f} (noise variance {NOISE ** 2:.5f})")
    print(f"vs sin(x) on a 61-point grid: rms error {np.sqrt((err ** 2).mean()):.4f}, max error {err.max():.4f}")
    for g, f in zip(grid[::10, 0], fit[::10, 0]):
        print(f"  x = {g:5.2f}  model {f:7.4f}  sin(x) {np.sin(g):7.4f}")
    return {"train_mse": train_mse, "grid": grid, "fit": fit}


if __name__ == "__main__":
    main()
