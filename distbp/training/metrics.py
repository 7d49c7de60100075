"""Classification and regression metrics on numpy arrays, usable on their own.

Everything derives from additive counts (a confusion matrix, sums of errors), so per-rank results
combine exactly with one allreduce of those counts -- no padding, no averaging of averages."""
from __future__ import annotations

import numpy


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> numpy.ndarray:
    """Counts C[i, j] of samples of true class i predicted as class j (scikit-learn's layout)."""
    y_true = numpy.asarray(y_true).astype(numpy.int64, copy=False).ravel()
    y_pred = numpy.asarray(y_pred).astype(numpy.int64, copy=False).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    if len(y_true) and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}); got values from "
                         f"{min(y_true.min(), y_pred.min())} to {max(y_true.max(), y_pred.max())}")
    return numpy.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def accuracy(cm) -> float:
    """Fraction of samples on the diagonal (0.0 for an empty matrix)."""
    cm = numpy.asarray(cm)
    total = cm.sum()
    return float(numpy.trace(cm) / total) if total else 0.0


def _safe_divide(num, den):
    # scikit-learn's zero_division=0: a class never predicted (or never present) scores 0, not nan.
    num, den = numpy.asarray(num, dtype=numpy.float64), numpy.asarray(den, dtype=numpy.float64)
    return numpy.divide(num, den, out=numpy.zeros_like(num), where=den > 0)


def precision_recall_f1(cm, average: str | None = "macro"):
    """Per-class arrays (average=None) or their unweighted mean over classes ('macro') as floats.

    precision_k = C[k,k] / column k sum, recall_k = C[k,k] / row k sum, F1 = harmonic mean."""
    cm = numpy.asarray(cm, dtype=numpy.float64)
    tp = numpy.diag(cm)
    precision = _safe_divide(tp, cm.sum(axis=0))
    recall = _safe_divide(tp, cm.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    if average is None:
        return precision, recall, f1
    if average != "macro":
        raise ValueError(f"unknown average {average!r}; expected 'macro' or None")
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def classification_summary(cm) -> dict:
    """accuracy, macro precision/recall/F1 and the matrix as lists (JSON-ready)."""
    p, r, f = precision_recall_f1(cm)
    return {"accuracy": accuracy(cm), "precision": p, "recall": r, "f1": f,
            "confusion_matrix": numpy.asarray(cm).astype(int).tolist()}


def format_confusion_matrix(cm, labels=None) -> str:
    """The matrix as aligned text: rows are true classes, columns predicted ones."""
    cm = numpy.asarray(cm).astype(int)
    labels = [str(x) for x in (labels if labels is not None else range(len(cm)))]
    width = max([len(str(cm.max(initial=0)))] + [len(x) for x in labels]) + 1
    lines = ["true\\pred " + "".join(x.rjust(width) for x in labels)]
    lines += [labels[i].rjust(9) + " " + "".join(str(v).rjust(width) for v in row) for i, row in enumerate(cm)]
    return "\n".join(lines)


def regression_sums(y_true, y_pred) -> numpy.ndarray:
    """[n, sum of squared errors, sum of absolute errors, sum y, sum y^2]: additive over ranks."""
    y_true = numpy.asarray(y_true, dtype=numpy.float64)
    err = numpy.asarray(y_pred, dtype=numpy.float64) - y_true
    return numpy.array([y_true.size, (err ** 2).sum(), numpy.abs(err).sum(), y_true.sum(), (y_true ** 2).sum()])


def regression_summary(sums) -> dict:
    """mse, mae and R^2 = 1 - SSE / total sum of squares, from `regression_sums` (summed over ranks)."""
    n, sse, sae, s1, s2 = (float(v) for v in sums)
    if n == 0:
        return {"mse": 0.0, "mae": 0.0, "r2": 0.0}
    sst = s2 - s1 * s1 / n
    return {"mse": sse / n, "mae": sae / n, "r2": 1.0 - sse / sst if sst > 0 else 0.0}
