"""Linear regression y = 3x + 2 + noise, fitted by gradient descent on the mean squared error.

    python examples/linear_regression.py

Prints the fitted weight and bias beside the least-squares solution of the same data (the exact
minimiser of the MSE, from numpy.linalg.lstsq) and the true line they estimate.
"""
import numpy as np

import distbp as db
import distbp.nn.functional as F
from distbp import nn

TRUE_W, TRUE_B, NOISE = 3.0, 2.0, 0.1


def make_data(n: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 1))
    y = TRUE_W * x + TRUE_B + NOISE * rng.standard_normal((n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def main(epochs: int = 300, lr: float = 0.1) -> dict:
    db.manual_seed(0)
    x, y = make_data()
    model = nn.Linear(1, 1)
    opt = db.optim.SGD(model.parameters(), lr=lr)
    xt, yt = db.tensor(x), db.tensor(y)
    for epoch in range(epochs):
        opt.zero_grad()
        loss = F.mse_loss(model(xt), yt)
        loss.backward()
        opt.step()
        if epoch % 100 == 0:
            print(f"epoch {epoch:4d}  mse {loss.item():.5f}")
    w, b = float(model.weight.data[0, 0]), float(model.bias.data[0])
    mse = float(F.mse_loss(model(xt), yt).item())
    (ls_w, ls_b), *_ = np.linalg.lstsq(np.hstack([x, np.ones_like(x)]).astype(np.float64), y[:, 0], rcond=None)
    print(f"fitted:        w = {w:.4f}  b = {b:.4f}  (final mse {mse:.5f}, noise variance {NOISE ** 2:.5f})")
    print(f"least squares: w = {ls_w:.4f}  b = {ls_b:.4f}")
    print(f"true line:     w = {TRUE_W:.4f}  b = {TRUE_B:.4f}")
    return {"w": w, "b": b, "mse": mse, "x": x, "y": y}


if __name__ == "__main__":
    main()
