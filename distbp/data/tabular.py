"""A CSV of numeric features plus one label column.

The first row is a header when any of its cells is not a number. The label column is the one
named `label_column` (by header name or 0-based index), else a column named label/target/y/class,
else the last column. Every malformed line is reported with its file and line number."""
from __future__ import annotations

import csv
import os

import numpy

from .errors import DataError

_LABEL_NAMES = ("label", "target", "y", "class")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _label_index(header: list[str] | None, ncols: int, label_column, path: str) -> int:
    if label_column is None:
        if header:
            for i, name in enumerate(header):
                if name.strip().lower() in _LABEL_NAMES:
                    return i
        return ncols - 1
    if isinstance(label_column, int) or str(label_column).lstrip("-").isdigit():
        index = int(label_column)
        if not -ncols <= index < ncols:
            raise DataError(f"label column {index} is out of range for {path}, which has {ncols} columns")
        return index % ncols
    if header and label_column in header:
        return header.index(label_column)
    raise DataError(f"label column {label_column!r} not found in {path}; its header is {header}")


def _check_labels(labels: list, lines: list, path: str) -> None:
    """Every row has a label; numeric labels are finite; no stray word among numbers (each would
    otherwise become a class of its own, or a NaN target that looks like a diverging run)."""
    numeric = [_is_number(cell) for cell in labels]
    for cell, line, is_number in zip(labels, lines, numeric):
        if not cell:
            raise DataError(f"{path} line {line}: the label cell is empty; every row needs a label")
        if is_number and not numpy.isfinite(float(cell)):
            raise DataError(f"{path} line {line}: label {cell!r} is not a finite number")
    if sum(numeric) * 2 >= len(labels) and not all(numeric):   # mostly numbers: a word is a stray cell
        line, cell = next((line, cell) for cell, line, n in zip(labels, lines, numeric) if not n)
        raise DataError(f"{path} line {line}: label {cell!r} is not a number, but the other labels are; "
                        f"fix or remove that row")


def load_csv(path: str | os.PathLike, label_column: str | int | None = None):
    """(X float64 of shape (N, D), y as strings of shape (N,), feature names) from a CSV file."""
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read CSV file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not rows:
        raise DataError(f"CSV file {path} is empty")
    header = None
    if not all(_is_number(c) for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataError(f"CSV file {path} has a header but no data rows")
    ncols = len(header) if header else len(rows[0][1])
    if ncols < 2:
        raise DataError(f"CSV file {path} needs at least one feature column and a label column, found {ncols} column")
    label = _label_index(header, ncols, label_column, path)
    features, labels = [], []
    for line, row in rows:
        if len(row) != ncols:
            raise DataError(f"{path} line {line}: expected {ncols} columns, found {len(row)}")
        values = []
        for col, cell in enumerate(row):
            if col == label:
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise DataError(f"{path} line {line} column {col + 1}: {cell.strip()!r} is not a number") from None
        features.append(values)
        labels.append(row[label].strip())
    _check_labels(labels, [line for line, _ in rows], path)
    X = numpy.asarray(features, dtype=numpy.float64)
    if not numpy.isfinite(X).all():
        line = rows[int(numpy.argwhere(~numpy.isfinite(X))[0, 0])][0]
        raise DataError(f"{path} line {line}: features must be finite numbers (found nan or inf)")
    names = [h for i, h in enumerate(header) if i != label] if header else [f"x{i}" for i in range(X.shape[1])]
    return X, numpy.asarray(labels), names
