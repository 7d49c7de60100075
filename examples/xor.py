"""XOR with the 2-4-1 sigmoid network of seed 003, trained by full-batch gradient descent.

    python examples/xor.py

Same network and loss as the seed (sigmoid hidden layer of 4, sigmoid output, binary cross-entropy,
plain gradient descent on all four points), written with distbp's layers and autograd instead of
hand-derived gradients. The seed uses lr 0.1 for 10000 iterations; lr 1.0 gets there in 2000.
"""
import numpy as np

import distbp as db
import distbp.nn.functional as F
from distbp import nn

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([[0], [1], [1], [0]], dtype=np.float32)


def main(steps: int = 2000, lr: float = 1.0, seed: int = 0) -> dict:
    db.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1), nn.Sigmoid())
    opt = db.optim.SGD(model.parameters(), lr=lr)
    x, y = db.tensor(X), db.tensor(Y)
    for step in range(steps + 1):
        opt.zero_grad()
        loss = F.binary_cross_entropy(model(x), y)
        if step % (steps // 5) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")
        if step < steps:
            loss.backward()
            opt.step()
    with db.no_grad():
        probs = model(x).numpy()[:, 0]
    preds = (probs > 0.5).astype(int)
    for xi, p, c in zip(X, probs, preds):
        print(f"x = {xi.astype(int)}  p(y=1) = {p:.3f}  prediction {c}")
    print(f"correct: {int((preds == Y[:, 0]).sum())}/4")
    return {"loss": loss.item(), "probs": probs, "predictions": preds}


if __name__ == "__main__":
    main()
