"""SyncBatchNorm: batch statistics over the global batch (all ranks), equal to one BatchNorm over
all ranks' samples concatenated. The arithmetic is distbp.ops.norm.BatchNorm's; this module only
supplies its `reduce_fn` seam with a sum-allreduce (two in forward, one in backward per layer).

Sync points: every training forward and backward of every SyncBatchNorm layer (all ranks must run
the same layers in the same order; a rank with an empty shard still calls them)."""
from __future__ import annotations

from ..nn.module import Module
from ..nn.norm import _BatchNorm
from .comm import Communicator, get_comm


class SyncBatchNorm(_BatchNorm):
    """torch.nn.SyncBatchNorm(num_features, eps, momentum, affine, track_running_stats) plus `comm`."""

    _dims = (2, 3, 4, 5)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, comm: Communicator | None = None,
                 dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype)
        object.__setattr__(self, "comm", comm)

    def _reduce_fn(self):
        comm = self.comm or get_comm()
        if comm.size == 1:
            return None
        return lambda v: comm.allreduce(v.copy(), "sum")  # copy: v may be a view BatchNorm still reads

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, comm: Communicator | None = None) -> Module:
        """Replace every BatchNorm*d in `module` by a SyncBatchNorm sharing its parameters and buffers."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, comm=comm)
            for name in ("weight", "bias"):
                if module._parameters.get(name) is not None:
                    setattr(sync, name, module._parameters[name])
            for name, buf in module._buffers.items():
                sync.register_buffer(name, buf)
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            if child is not None:
                new = cls.convert_sync_batchnorm(child, comm)
                if new is not child:
                    setattr(module, name, new)
        return module
