"""Loss modules with PyTorch's names and `reduction` argument."""
from __future__ import annotations

from .. import ops
from .module import Module


class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction


class MSELoss(_Loss):
    def forward(self, input, target):
        return ops.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return ops.l1_loss(input, target, self.reduction)


class CrossEntropyLoss(_Loss):
    def __init__(self, reduction: str = "mean", ignore_index: int = -100):
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return ops.cross_entropy(input, target, self.reduction, self.ignore_index)


class NLLLoss(_Loss):
    def forward(self, input, target):
        return ops.nll_loss(input, target, self.reduction)


class BCELoss(_Loss):
    def forward(self, input, target):
        return ops.binary_cross_entropy(input, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, reduction: str = "mean", pos_weight=None):
        super().__init__(reduction)
        self.pos_weight = pos_weight

    def forward(self, input, target):
        return ops.binary_cross_entropy_with_logits(input, target, self.reduction, self.pos_weight)
