"""Optimizers with PyTorch's exact update rules, and learning-rate schedules."""
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD"]
