"""Datasets: built-ins that need no download, and loaders for a user's files.

`load_dataset(name_or_path)` returns a `Dataset` with train/validation/test splits that depend on
the seed only, and features normalised with statistics of the training split only (so nothing of
the validation or test data leaks into training).

Built-ins: `digits` (UCI handwritten digits, 1797 8x8 images, 10 classes, packaged with distbp),
`xor` (2-D points labelled by the sign of x0*x1), `regression` (a noisy linear function of 8
features) and `sine` (a noisy sin curve, a nonlinear regression).
Paths: a folder of MNIST or Fashion-MNIST IDX files (gzipped or not), a `.csv` file, or arrays saved
with numpy: an `.npz` file with `X` and `y`, or a folder holding `X.npy` and `y.npy` (arrays.py; read
memory-mapped, used as they are: not standardised).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy

from . import arrays
from .errors import DataError
from .idx import read_idx
from .tabular import load_csv

# name -> factory(seed) -> (X, y, image_shape or None): y (N,) integer classes, or (N, outputs) floats
# for regression. distbp.training.registry.DATASETS is this dict (register_dataset adds to it).
BUILTINS: dict = {}
_IDX_NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
              "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


@dataclass
class Dataset:
    name: str
    task: str                      # 'classification' or 'regression'
    train: tuple                   # (X, y) numpy arrays
    val: tuple
    test: tuple
    num_classes: int | None        # None for regression
    input_shape: tuple             # shape of one sample of X
    image_shape: tuple | None = None   # (channels, height, width) for image data, for conv/recurrent models
    num_outputs: int = 1           # classes, or regression targets
    classes: list = field(default_factory=list)   # original label of each class index (CSV)
    storage: str = ""              # arrays from files: how they are read (memory-mapped, or loaded)

    def __repr__(self):
        sizes = ", ".join(f"{k}={len(getattr(self, k)[0])}" for k in ("train", "val", "test"))
        storage = f", {self.storage}" if self.storage else ""
        return f"Dataset({self.name!r}, {self.task}, {sizes}, input_shape={self.input_shape}{storage})"


# ----- built-in raw data -----
def _builtin(name: str):
    def add(factory):
        BUILTINS[name] = factory
        return factory
    return add


@_builtin("digits")
def _digits(seed: int):
    path = os.path.join(os.path.dirname(__file__), "digits.npz")
    with numpy.load(path) as f:
        images, target = f["images"], f["target"]
    return images.reshape(len(images), -1).astype(numpy.float64), target.astype(numpy.int64), (1, 8, 8)


def _rng(seed: int):
    # A generator separate from distbp's global one: the data must not shift the model's init.
    return numpy.random.default_rng([int(seed), 0xDA7A])


@_builtin("xor")
def _xor(seed: int):
    X = _rng(seed).uniform(-1, 1, size=(1000, 2))
    return X, (X[:, 0] * X[:, 1] > 0).astype(numpy.int64), None


@_builtin("regression")
def _regression(seed: int):
    rng = _rng(seed)
    X = rng.standard_normal((1000, 8))
    w = numpy.linspace(-2, 2, 8)
    return X, (X @ w + 0.5 + 0.1 * rng.standard_normal(1000))[:, None], None


@_builtin("sine")
def _sine(seed: int):
    rng = _rng(seed)
    X = rng.uniform(-3, 3, size=(1000, 1))
    return X, numpy.sin(X) + 0.05 * rng.standard_normal((1000, 1)), None


def _find_idx(folder: str, key: str) -> str | None:
    for name in os.listdir(folder):
        stem = name.removesuffix(".gz")
        if stem.replace(".", "-") == _IDX_NAMES[key]:   # accept train-images.idx3-ubyte too
            return os.path.join(folder, name)
    return None


def load_idx_folder(folder: str):
    """(X_train, y_train, X_test or None, y_test or None, image_shape) from MNIST-style IDX files."""
    paths = {k: _find_idx(folder, k) for k in _IDX_NAMES}
    if paths["train_images"] is None or paths["train_labels"] is None:
        raise DataError(f"folder {folder} has no MNIST IDX files (expected {_IDX_NAMES['train_images']}[.gz] "
                        f"and {_IDX_NAMES['train_labels']}[.gz], optionally the t10k-* test files)")
    if (paths["test_images"] is None) != (paths["test_labels"] is None):
        missing = "t10k-images-idx3-ubyte" if paths["test_images"] is None else "t10k-labels-idx1-ubyte"
        raise DataError(f"folder {folder} has only half of the test set: {missing}[.gz] is missing")
    parts = []
    for prefix in ("train", "test"):
        if paths[f"{prefix}_images"] is None:
            parts += [None, None]
            continue
        images, labels = read_idx(paths[f"{prefix}_images"]), read_idx(paths[f"{prefix}_labels"])
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{paths[f'{prefix}_images']} must hold (N, rows, cols) images and "
                            f"{paths[f'{prefix}_labels']} (N,) labels; got shapes {images.shape} and {labels.shape}")
        if len(images) == 0:
            raise DataError(f"{paths[f'{prefix}_images']} holds no images (its header says 0)")
        if len(images) != len(labels):
            raise DataError(f"{paths[f'{prefix}_images']} has {len(images)} images but "
                            f"{paths[f'{prefix}_labels']} has {len(labels)} labels")
        if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
            raise DataError(f"{paths[f'{prefix}_labels']} must hold non-negative integer labels")
        if prefix == "train":
            image_shape = (1,) + images.shape[1:]
        elif images.shape[1:] != image_shape[1:]:
            raise DataError(f"{paths['test_images']} has {images.shape[1:]} images, the training files "
                            f"{image_shape[1:]}")
        parts += [images.reshape(len(images), -1).astype(numpy.float64), labels.astype(numpy.int64)]
    check_idx_classes(parts[1], paths["train_labels"], parts[3], paths["test_labels"])
    return parts[0], parts[1], parts[2], parts[3], image_shape


def check_idx_classes(train, train_path, test=None, test_path=None) -> None:
    """IDX labels are classes 0..K-1 and each of them has training samples: a label beyond the
    others (255 in a 10-class file) would otherwise make hundreds of empty classes."""
    present = numpy.bincount(train)
    missing = numpy.flatnonzero(present == 0)
    if len(missing):
        top = int(train.max())
        raise DataError(f"{train_path}: label {top} (sample {int(numpy.argmax(train == top))}) leaves classes "
                        f"{_ranges(missing)} without any training sample; labels must be 0..K-1 with every "
                        f"class present")
    if test is not None and len(test) and test.max() >= len(present):
        bad = int(numpy.argmax(test >= len(present)))
        raise DataError(f"{test_path}: label {int(test[bad])} (sample {bad}) is not one of the training "
                        f"files' classes 0..{len(present) - 1}")


def _ranges(values) -> str:
    """[1, 2, 3, 7] -> '1..3, 7' (the first few)."""
    out, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(out[:4]) + (", ..." if len(out) > 4 else "")


def split_indices(n: int, seed: int, val_fraction: float, test_fraction: float):
    """Disjoint (train, val, test) index arrays covering range(n), from the seed only."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"Invalid {name}: {value} (expected 0 <= {name} < 1)")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")
    order = numpy.random.default_rng([int(seed), 0x5917]).permutation(n)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def _standardise(train_X, *others, per_feature: bool):
    """Scale by the training split's mean and std (per feature, or one scalar for image pixels)."""
    axis = 0 if per_feature else None
    mean, std = train_X.mean(axis=axis), train_X.std(axis=axis)
    std = numpy.where(std > 0, std, 1.0)   # constant features (blank digit corners) stay 0, not nan
    return [((X - mean) / std).astype(numpy.float32) for X in (train_X, *others)]


def _encode_labels(y, path):
    """CSV labels: integers (or numeric strings) are classes, anything else fractional is regression."""
    try:
        values = y.astype(numpy.float64)
    except ValueError:
        values = None
    if values is not None and not numpy.all(values == numpy.round(values)):
        return "regression", values[:, None], []
    classes, codes = numpy.unique(values if values is not None else y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"CSV file {path} has a single label value {classes[0]!r}; need at least two classes")
    return "classification", codes.astype(numpy.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def load_dataset(name_or_path: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 label_column: str | int | None = None) -> Dataset:
    """A built-in dataset by name, a folder of MNIST IDX files, or a CSV file, split and normalised."""
    source = str(name_or_path)
    image_shape, classes, test_given = None, [], None
    if source not in BUILTINS and (arrays.is_array_folder(source) or
                                   (os.path.isfile(source) and source.lower().endswith(".npz"))):
        X, y, storage = (arrays.open_folder if os.path.isdir(source) else arrays.open_npz)(source)
        name = os.path.basename(os.path.normpath(source))
        return dataset_from_arrays(X, y, name, seed, val_fraction, test_fraction, storage, where=source)
    if source in BUILTINS:
        name = source
        X, y, image_shape = BUILTINS[source](seed)
        X, y = numpy.asarray(X, dtype=numpy.float64), numpy.asarray(y)
        task = "regression" if y.ndim == 2 else "classification"
    elif os.path.isdir(source):
        name = os.path.basename(os.path.normpath(source))
        X, y, X_test, y_test, image_shape = load_idx_folder(source)
        task = "classification"
        if X_test is not None:
            test_given = (X_test, y_test)
    elif os.path.isfile(source):
        name = os.path.basename(source)
        if not source.lower().endswith((".csv", ".csv.txt", ".txt")):
            raise DataError(f"don't know how to read {source}: give a .csv or .npz file, a folder of X.npy and "
                            "y.npy, or a folder of MNIST IDX files")
        X, raw_y, _ = load_csv(source, label_column)
        task, y, classes = _encode_labels(raw_y, source)
    else:
        raise DataError(f"dataset {source!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing "
                        f"file or folder")
    if test_given is None:
        tr, va, te = split_indices(len(X), seed, val_fraction, test_fraction)
        splits = [(X[tr], y[tr]), (X[va], y[va]), (X[te], y[te])]
    else:   # the files define the test set; carve validation out of the training files
        tr, va, _ = split_indices(len(X), seed, val_fraction, 0.0)
        splits = [(X[tr], y[tr]), (X[va], y[va]), test_given]
    if len(splits[0][0]) == 0:
        raise DataError(f"dataset {source!r} leaves no training samples after the validation and test split")
    for (part, fraction, flag), (Xs_, _) in zip((("validation", val_fraction, "--val-fraction"),
                                                  ("test", test_fraction, "--test-fraction")), splits[1:]):
        if len(Xs_) == 0 and fraction > 0 and (part == "validation" or test_given is None):
            raise DataError(f"dataset {source!r}: {flag} {fraction:g} of {len(X)} samples leaves the {part} split "
                            f"empty; give more data or a larger {flag}"
                            + (" (or 0 for no validation)" if part == "validation" else ""))
    Xs = _standardise(*(s[0] for s in splits), per_feature=image_shape is None)
    ys = [s[1].astype(numpy.float32) if task == "regression" else s[1] for s in splits]
    if task == "classification":
        num_classes = int(max(int(s.max()) for s in ys if len(s)) + 1)
        num_outputs = num_classes
    else:
        num_classes, num_outputs = None, ys[0].shape[1]
    return Dataset(name=name, task=task, train=(Xs[0], ys[0]), val=(Xs[1], ys[1]), test=(Xs[2], ys[2]),
                   num_classes=num_classes, input_shape=tuple(Xs[0].shape[1:]), image_shape=image_shape,
                   num_outputs=num_outputs, classes=classes)



def dataset_from_arrays(X, y, name: str, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                        storage: str = "in memory", where: str | None = None) -> Dataset:
    """A Dataset of features X and labels y, used as they are (not standardised): the same seeded
    split as load_dataset, each split a `Rows` view that reads only the rows asked for. X and y: numpy
    arrays, or arrays.ArrayFile/InMemory sources. Integer labels of shape (N,) make a classification
    set; float labels, regression."""
    X = X if hasattr(X, "open") else arrays.InMemory(numpy.asarray(X), "X")
    y = y if hasattr(y, "open") else arrays.InMemory(numpy.asarray(y), "y")
    task, num_classes, num_outputs = arrays.check_arrays(X, y, where or name)
    tr, va, te = split_indices(len(X), seed, val_fraction, test_fraction)
    if len(tr) == 0:
        raise DataError(f"dataset {where or name!r} leaves no training samples after the validation and test split")
    column = task == "regression"
    labels = None if column else numpy.int64   # class indices as the losses and metrics take them
    splits = [(arrays.Rows(X, rows), arrays.Rows(y, rows, labels, as_column=column)) for rows in (tr, va, te)]
    input_shape = tuple(int(d) for d in X.shape[1:])
    return Dataset(name=name, task=task, train=splits[0], val=splits[1], test=splits[2], num_classes=num_classes,
                   input_shape=input_shape, image_shape=input_shape if len(input_shape) == 3 else None,
                   num_outputs=num_outputs, storage=storage)
