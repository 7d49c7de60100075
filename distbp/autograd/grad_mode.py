"""Grad mode: whether ops record the graph. `no_grad()` turns it off for inference and optimizer
updates, `enable_grad()` back on inside such a block; both work as context managers and decorators."""
from __future__ import annotations

import contextlib

enabled = True  # read by Function.apply on every op (as grad_mode.enabled, so it sees every change)


def is_grad_enabled() -> bool:
    return enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, mode: bool):
        self.mode = mode

    def __enter__(self):
        global enabled
        self.prev, enabled = enabled, self.mode

    def __exit__(self, *exc):
        global enabled
        enabled = self.prev
        return False


def no_grad():
    """Context manager / decorator: ops inside record no graph (inference, optimizer updates)."""
    return _GradMode(False)


def enable_grad():
    """Context manager / decorator: ops inside record the graph, even within no_grad()."""
    return _GradMode(True)

