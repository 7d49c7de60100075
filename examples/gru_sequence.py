"""A GRU reads each 8x8 digit image row by row (8 steps of 8 pixels) and classifies it.

    python examples/gru_sequence.py

GRU(8, 64, batch_first=True) -> Linear(64, 10) on the last hidden state h_n. The class is only
known after the last rows are read, so the gradient has to flow back through all 8 steps.
"""
import numpy as np

import distbp as db
import distbp.nn.functional as F
from distbp import nn
from distbp.data import load_dataset


class RowGRU(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.gru = nn.GRU(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):                 # x: (batch, 8 rows, 8 pixels)
        _, h_n = self.gru(x)              # h_n: (num_layers=1, batch, hidden)
        return self.head(h_n[0])


def accuracy(model, X, y) -> float:
    with db.no_grad():
        return float((model(db.tensor(X)).numpy().argmax(1) == y).mean())


def main(epochs: int = 10, batch_size: int = 64, lr: float = 5e-3, seed: int = 0) -> dict:
    db.manual_seed(seed)
    data = load_dataset("digits", seed=seed)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = [(X.reshape(-1, 8, 8).astype(np.float32), y)
                                          for X, y in (data.train, data.val, data.test)]
    model = RowGRU()
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
