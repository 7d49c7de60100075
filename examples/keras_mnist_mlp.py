#!/usr/bin/env python3
"""Seed 001's Keras MNIST MLP in distbp: 784-128-10, ReLU, softmax + sparse categorical cross
entropy, Adam, 10 epochs, batch 32 (Keras' default).

    python examples/keras_mnist_mlp.py /path/to/mnist      # folder of the four IDX files, .gz or not
    python examples/keras_mnist_mlp.py /path/to/mnist --epochs 1
    python examples/keras_mnist_mlp.py --demo              # tiny random IDX files, to try it offline

The Keras original, for comparison:
    model = Sequential([Flatten(input_shape=(28, 28)), Dense(128, activation='relu'),
                        Dense(10, activation='softmax')])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=10, validation_split=0.1)
Keras' softmax + sparse categorical cross entropy is distbp's cross_entropy on the logits (the
softmax is folded into the loss, which is also the numerically stable way to compute it). The same
run from the command line: python -m distbp.train --dataset DIR --hidden 128 --optimizer adam
--lr 0.001 --epochs 10 --batch-size 32.
"""
import argparse
import sys
import tempfile

import numpy as np

import distbp as db
from distbp.data import DataError, global_batches, load_dataset, write_idx
from distbp.distributed import SelfComm
from distbp.optim import Adam
from distbp.training import build_model
from distbp.training.metrics import format_confusion_matrix
from distbp.training.trainer import Trainer


def demo_folder() -> str:
    """Random 28x28 'digits' whose class sets the brightness of one row: learnable, tiny, offline."""
    folder = tempfile.mkdtemp(prefix="mnist-demo-")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 600), ("t10k", 200)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 2 * labels + 4] = 255
        write_idx(f"{folder}/{prefix}-images-idx3-ubyte.gz", images)
        write_idx(f"{folder}/{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", help="folder with MNIST or Fashion-MNIST IDX files")
    p.add_argument("--demo", action="store_true", help="use tiny generated IDX files instead")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args(argv)
    if not args.folder and not args.demo:
        p.error("give the MNIST folder, or --demo")
    try:
        data = load_dataset(demo_folder() if args.demo else args.folder, seed=0, val_fraction=0.1)
    except DataError as e:
        print(f"keras_mnist_mlp: error: {e}", file=sys.stderr)
        return 2
    db.manual_seed(0)
    model = build_model("mlp", data.input_shape, 10, hidden=[128])          # Flatten, Dense 128 relu, Dense 10
    trainer = Trainer(model, Adam(model.parameters(), lr=1e-3), SelfComm(), "classification")
    X, y = data.train
    for epoch in range(args.epochs):
        losses = [trainer.step_on(X, y, b).local_loss for b in global_batches(len(X), 32, seed=0, epoch=epoch)]
        val = trainer.evaluate(*data.val, num_classes=10)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.4f} val_loss {val['loss']:.4f} "
              f"val_accuracy {val['accuracy']:.4f}")
    test = trainer.evaluate(*data.test, num_classes=10)
    print(f"test accuracy {test['accuracy']:.4f}, macro F1 {test['f1']:.4f}")
    print(format_confusion_matrix(test["confusion_matrix"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
