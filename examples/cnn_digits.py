"""A small CNN on the 8x8 handwritten digits (bundled, no download), printing test accuracy.

    python examples/cnn_digits.py

Conv2d(1, 16, 3, padding=1) -> BatchNorm2d -> ReLU -> MaxPool2d(2) -> Conv2d(16, 32, 3, padding=1)
-> ReLU -> MaxPool2d(2) -> Dropout -> Linear(32*2*2, 10), Adam, mini-batches of 64. model.eval()
before testing switches BatchNorm to its running statistics and Dropout off.
"""
import numpy as np

import distbp as db
import distbp.nn.functional as F
from distbp import nn
from distbp.data import load_dataset


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),                    # 32 x 2 x 2
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 2 * 2, 10),
    )


def accuracy(model, X, y, batch=256) -> float:
    model.eval()
    correct = 0
    with db.no_grad():
        for i in range(0, len(X), batch):
            correct += int((model(db.tensor(X[i:i + batch])).numpy().argmax(1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(X)


def main(epochs: int = 8, batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> dict:
    db.manual_seed(seed)
    data = load_dataset("digits", seed=seed)
    images = [(X.reshape(-1, 1, 8, 8).astype(np.float32), y) for X, y in (data.train, data.val, data.test)]
    (Xtr, ytr), (Xva, yva), (Xte, yte) = images
    model = make_model()
    opt = db.optim.Adam(model.parameters(), lr=lr)
    shuffle = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = shuffle.permutation(len(Xtr))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(db.tensor(Xtr[idx])), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val_acc = accuracy(model, Xva, yva)
        print(f"epoch {epoch + 1}  train loss {total / len(order):.4f}  val accuracy {val_acc:.3f}")
    test_acc = accuracy(model, Xte, yte)
    print(f"test accuracy {test_acc:.3f}")
    return {"test_accuracy": test_acc, "train_loss": total / len(order)}


if __name__ == "__main__":
    main()
