"""Tensor parallelism (Megatron-LM's column/row split of a Linear) over a `tp_comm` of T ranks.

A ColumnParallelLinear holds rows r*k..(r+1)*k of the full weight (out_features split): each rank
computes its slice of the output features from the whole input. A RowParallelLinear holds the
matching columns (in_features split): each rank multiplies its slice of the features and the
partial products are summed. Column then Row (an MLP block) needs one allreduce forward and one
backward, and no communication between the two layers.

The communication is four "region" operators, each the adjoint of another (Megatron's
mappings.py, in snake_case):

    copy_to_tensor_parallel_region       forward: identity          backward: allreduce
    reduce_from_tensor_parallel_region   forward: allreduce         backward: identity
    scatter_to_tensor_parallel_region    forward: my last-dim split backward: allgather of the last dim
    gather_from_tensor_parallel_region   forward: allgather of it   backward: my last-dim split

Why not `functional.allreduce` behind a row-parallel layer: that op's backward is an allreduce
too, which is right when each rank has its OWN loss L_r and the objective is sum_r L_r (then
dF/dx_r = sum_r' dL_r'/dy). Behind a RowParallelLinear every rank holds the same reduced output
and computes the SAME loss L from it; the objective is L, once, not T copies of it. dL/dy is
already the full gradient on every rank, and y = sum_r x_r gives dL/dx_r = dL/dy: the identity.
Summing it over the T ranks would multiply every gradient before the layer by T. The same
reasoning gives copy_to's allreduce backward: the T ranks use the one input x for different
output features, so x's gradient is the sum of their contributions.

`VocabParallelEmbedding` splits an embedding table by rows (the vocabulary): each rank looks up the
indices in its rows and zeros elsewhere, and reduce_from sums the partial lookups.

The union of the shards starts equal to the single-process layer (the shard is a slice of the
full weight, drawn from the same RNG), and `shard_spec` says for each parameter which dim was
sliced and where, so `full_state_dict` can rebuild the full tensors (checkpoints).

`parallelize` turns a single-process nn.Sequential into this form under the same layer names: each
Linear -> elementwise activations/Dropout -> Linear run (`linear_pairs`) becomes Column -> Row, so
the activations leaving every pair are whole and identical on the T ranks, and every other layer
(the zoo cnn's convolutional trunk) stays whole on every rank; `parallelize_mlp` is its strict form
for MLPs. `distbp.distributed.clip_grad_norm_` finds the shards through `shard_spec_of`.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy

from .. import random
from ..autograd import Function, Tensor
from ..backend import get_array_module
from ..nn import activation as _activation
from ..nn.dropout import Dropout
from ..nn.embedding import Embedding
from ..nn.linear import Linear
from ..nn.module import Module, Parameter, Sequential
from ..ops import mul
from ..ops.embedding import embedding
from ..ops.linalg import Linear as _LinearFn
from .comm import Communicator


def _split_size(full: int, comm: Communicator, what: str) -> int:
    if full % comm.size:
        raise ValueError(f"{what} {full} is not divisible by the tensor-parallel size {comm.size}")
    return full // comm.size


def _my_split(x, comm: Communicator):
    """This rank's contiguous block of the last dim (a copy, so it owns its memory)."""
    k = _split_size(x.shape[-1], comm, "last dimension")
    return get_array_module(x).ascontiguousarray(x[..., comm.rank * k:(comm.rank + 1) * k])


def _gather_last(x, comm: Communicator):
    """The ranks' equal blocks concatenated along the last dim, in rank order."""
    xp = get_array_module(x)
    stacked = comm.allgather(xp.ascontiguousarray(x))      # (T, ..., k)
    return xp.concatenate(list(stacked), axis=-1)


class _CopyToRegion(Function):
    def forward(self, x, comm=None):
        self.comm = comm
        return x.copy()

    def backward(self, gy):
        return (self.comm.allreduce(gy.copy(), "sum"),)


class _ReduceFromRegion(Function):
    def forward(self, x, comm=None):
        return comm.allreduce(x.copy(), "sum")

    def backward(self, gy):
        return (gy,)


class _ScatterToRegion(Function):
    def forward(self, x, comm=None):
        self.comm = comm
        return _my_split(x, comm)

    def backward(self, gy):
        return (_gather_last(gy, self.comm),)


class _GatherFromRegion(Function):
    def forward(self, x, comm=None):
        self.comm = comm
        return _gather_last(x, comm)

    def backward(self, gy):
        return (_my_split(gy, self.comm),)


def copy_to_tensor_parallel_region(x: Tensor, comm: Communicator) -> Tensor:
    """Identity forward; backward sums the gradient over `comm` (the input of a column-parallel layer)."""
    return _CopyToRegion.apply(x, comm=comm)


def reduce_from_tensor_parallel_region(x: Tensor, comm: Communicator) -> Tensor:
    """Sum over `comm` forward; identity backward (the output of a row-parallel layer)."""
    return _ReduceFromRegion.apply(x, comm=comm)


def scatter_to_tensor_parallel_region(x: Tensor, comm: Communicator) -> Tensor:
    """This rank's block of the last dim forward; backward gathers the blocks' gradients."""
    return _ScatterToRegion.apply(x, comm=comm)


def gather_from_tensor_parallel_region(x: Tensor, comm: Communicator) -> Tensor:
    """The ranks' blocks concatenated along the last dim forward; backward keeps this rank's block."""
    return _GatherFromRegion.apply(x, comm=comm)


@dataclass(frozen=True)
class ShardSpec:
    """A parameter of a tensor-parallel layer: `dim` of the full tensor (`full` long) sliced to
    start:stop on this rank; dim None: replicated (the same full tensor on every rank)."""
    dim: int | None
    start: int = 0
    stop: int = 0
    full: int = 0


# Parameter -> its ShardSpec, by identity (a Parameter has no room for attributes, and == on tensors
# is elementwise): the entry goes when the parameter does.
_SPECS: dict[int, tuple[weakref.ref, ShardSpec]] = {}


def _register_shards(module: Module) -> None:
    for name, spec in module.shard_spec.items():
        param = getattr(module, name)
        key = id(param)
        _SPECS[key] = (weakref.ref(param, lambda _, key=key: _SPECS.pop(key, None)), spec)


def shard_spec_of(param) -> ShardSpec | None:
    """The ShardSpec of a tensor-parallel layer's parameter (dim None: replicated over tp_comm), or
    None for any other tensor (a plain layer's parameter: the same on every tensor-parallel rank)."""
    entry = _SPECS.get(id(param))
    return entry[1] if entry is not None and entry[0]() is param else None


def _copy(a):
    """A contiguous copy on a's device: a shard must not be a view that keeps the full weight alive."""
    return get_array_module(a).array(a, copy=True, order="C")


def _full_linear(in_features, out_features, bias, dtype):
    # The full layer, drawn from the RNG exactly as nn.Linear draws it on one process: every rank
    # draws the same values and keeps its slice, so the shards' union is the single-process layer.
    return Linear(in_features, out_features, bias=bias, dtype=dtype)


class ColumnParallelLinear(Module):
    """y = x @ W.T + b with W's rows (the output features) split over `tp_comm`: this rank holds
    weight[r*k:(r+1)*k] and bias[r*k:(r+1)*k], k = out_features / T. The output is this rank's
    block of features (gather_output=False, feeding a RowParallelLinear) or all of them."""

    def __init__(self, in_features: int, out_features: int, tp_comm: Communicator, bias: bool = True,
                 gather_output: bool = False, dtype=None, *, _full: Linear | None = None):
        super().__init__()
        k = _split_size(out_features, tp_comm, "out_features")
        self.in_features, self.out_features, self.gather_output = in_features, out_features, gather_output
        self.tp_comm = tp_comm
        full = _full if _full is not None else _full_linear(in_features, out_features, bias, dtype)
        rows = slice(tp_comm.rank * k, (tp_comm.rank + 1) * k)
        self.weight = Parameter(_copy(full.weight.data[rows]))
        self.register_parameter("bias", Parameter(_copy(full.bias.data[rows])) if bias else None)
        spec = ShardSpec(0, rows.start, rows.stop, out_features)
        self.shard_spec = {"weight": spec, **({"bias": spec} if bias else {})}
        _register_shards(self)

    @classmethod
    def from_linear(cls, linear: Linear, tp_comm: Communicator, gather_output: bool = False):
        return cls(linear.in_features, linear.out_features, tp_comm, bias=linear.bias is not None,
                   gather_output=gather_output, _full=linear)

    def forward(self, x):
        y = _LinearFn.apply(copy_to_tensor_parallel_region(x, self.tp_comm), self.weight, self.bias)
        return gather_from_tensor_parallel_region(y, self.tp_comm) if self.gather_output else y

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"(this shard {self.weight.shape[0]}), bias={self.bias is not None}, "
                f"gather_output={self.gather_output}")


class RowParallelLinear(Module):
    """y = x @ W.T + b with W's columns (the input features) split over `tp_comm`: this rank holds
    weight[:, r*k:(r+1)*k], k = in_features / T, and multiplies its block of the input features
    (input_is_parallel=True: x is already that block, a ColumnParallelLinear's output; False: x is
    the full input, split here). The partial products are summed over `tp_comm`; the bias, whole on
    every rank, is added once, after the sum."""

    def __init__(self, in_features: int, out_features: int, tp_comm: Communicator, bias: bool = True,
                 input_is_parallel: bool = True, dtype=None, *, _full: Linear | None = None):
        super().__init__()
        k = _split_size(in_features, tp_comm, "in_features")
        self.in_features, self.out_features, self.input_is_parallel = in_features, out_features, input_is_parallel
        self.tp_comm = tp_comm
        full = _full if _full is not None else _full_linear(in_features, out_features, bias, dtype)
        cols = slice(tp_comm.rank * k, (tp_comm.rank + 1) * k)
        self.weight = Parameter(_copy(full.weight.data[:, cols]))
        self.register_parameter("bias", Parameter(_copy(full.bias.data)) if bias else None)
        self.shard_spec = {"weight": ShardSpec(1, cols.start, cols.stop, in_features),
                           **({"bias": ShardSpec(None)} if bias else {})}
        _register_shards(self)

    @classmethod
    def from_linear(cls, linear: Linear, tp_comm: Communicator, input_is_parallel: bool = True):
        return cls(linear.in_features, linear.out_features, tp_comm, bias=linear.bias is not None,
                   input_is_parallel=input_is_parallel, _full=linear)

    def forward(self, x):
        if not self.input_is_parallel:
            x = scatter_to_tensor_parallel_region(x, self.tp_comm)
        y = reduce_from_tensor_parallel_region(_LinearFn.apply(x, self.weight, None), self.tp_comm)
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return (f"in_features={self.in_features} (this shard {self.weight.shape[1]}), "
                f"out_features={self.out_features}, bias={self.bias is not None}, "
                f"input_is_parallel={self.input_is_parallel}")


class VocabParallelEmbedding(Module):
    """nn.Embedding with its vocabulary (the rows of the table) split over `tp_comm`: this rank holds
    rows r*k..(r+1)*k, k = num_embeddings / T. Each rank looks up the indices that fall in its rows
    and gives zeros for the others; the partial outputs are summed over `tp_comm`
    (`reduce_from_tensor_parallel_region`), so every rank gets the whole lookup, and each row's
    gradient lands on the one rank that holds it (Megatron-LM's VocabParallelEmbedding). Exact: each
    output element is one row's value plus zeros. `padding_idx` works as in nn.Embedding (its row
    starts at zero and never trains) on the rank that holds it."""

    def __init__(self, num_embeddings: int, embedding_dim: int, tp_comm: Communicator,
                 padding_idx: int | None = None, dtype=None, *, _full: Embedding | None = None):
        super().__init__()
        k = _split_size(num_embeddings, tp_comm, "num_embeddings")
        # the full table drawn exactly as nn.Embedding draws it (it checks the sizes and padding_idx)
        full = _full if _full is not None else Embedding(num_embeddings, embedding_dim, padding_idx, dtype=dtype)
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, full.padding_idx
        self.tp_comm = tp_comm
        self.start, self.stop = tp_comm.rank * k, (tp_comm.rank + 1) * k
        self.weight = Parameter(_copy(full.weight.data[self.start:self.stop]))
        self.shard_spec = {"weight": ShardSpec(0, self.start, self.stop, num_embeddings)}
        _register_shards(self)

    @classmethod
    def from_embedding(cls, embedding: Embedding, tp_comm: Communicator):
        return cls(embedding.num_embeddings, embedding.embedding_dim, tp_comm, _full=embedding)

    def forward(self, indices):
        idx = indices.data if isinstance(indices, Tensor) else indices
        xp = get_array_module(self.weight.data)
        idx = xp.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"embedding indices must be integers, got dtype {idx.dtype}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            # checked against the whole vocabulary, the same verdict on every rank
            raise IndexError(f"embedding index out of range: indices span [{int(idx.min())}, {int(idx.max())}] "
                             f"but the table has {self.num_embeddings} rows")
        mine = (idx >= self.start) & (idx < self.stop)
        local = xp.where(mine, idx - self.start, 0)
        pad = self.padding_idx
        pad = pad - self.start if pad is not None and self.start <= pad < self.stop else None
        rows = mul(embedding(local, self.weight, pad), mine[..., None].astype(self.weight.dtype))
        return reduce_from_tensor_parallel_region(rows, self.tp_comm)

    def extra_repr(self):
        return (f"{self.num_embeddings} (this shard rows {self.start}..{self.stop}), {self.embedding_dim}, "
                f"tensor_parallel={self.tp_comm.size}")


def full_state_dict(model: Module, tp_comm: Communicator) -> dict[str, numpy.ndarray]:
    """`model.state_dict()` with every sharded parameter gathered over `tp_comm` into its full
    tensor (the single-process model's state). Collective over `tp_comm`, in the modules' order."""
    return gather_shards(model, model.state_dict(), tp_comm)


def gather_shards(model: Module, arrays: dict, tp_comm: Communicator) -> dict:
    """`arrays` (parameter name -> this rank's array of that parameter's shape: its data, its
    gradient) with every sharded entry gathered over `tp_comm` into the full tensor; names absent
    from `arrays` are skipped on every rank alike. Collective over `tp_comm`, in the modules' order."""
    state = dict(arrays)
    for prefix, module in model.named_modules():
        for name, spec in getattr(module, "shard_spec", {}).items():
            if spec.dim is None:
                continue
            key = f"{prefix}.{name}" if prefix else name
            if key not in state:
                continue
            xp = get_array_module(state[key])
            blocks = tp_comm.allgather(xp.ascontiguousarray(state[key]))
            state[key] = xp.concatenate(list(blocks), axis=spec.dim)
    return state


def tensor_parallel_dropout(x: Tensor, p: float, training: bool, tp_comm: Communicator) -> Tensor:
    """Dropout on this rank's block of features (the last dim, as a ColumnParallelLinear outputs),
    masked with exactly the columns of the mask one process would draw for the full features, so
    the shards together drop what a single process drops (same draw count, same keys)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return x
    k = x.shape[-1]
    xp = get_array_module(x.data)
    u = random.per_sample_uniform(x.shape, x.dtype, xp, 0, first_col=tp_comm.rank * k, full_cols=k * tp_comm.size)
    mask = (u >= p).astype(x.dtype)
    mask *= 0.0 if p == 1 else 1.0 / (1.0 - p)
    return mul(x, mask)


class TensorParallelDropout(Module):
    """nn.Dropout for this rank's block of features between a ColumnParallelLinear and a
    RowParallelLinear: `tensor_parallel_dropout`, so the T blocks drop what one process drops."""

    def __init__(self, p: float, tp_comm: Communicator):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.tp_comm = p, tp_comm

    def forward(self, x):
        return tensor_parallel_dropout(x, self.p, self.training, self.tp_comm)

    def extra_repr(self):
        return f"p={self.p}, tensor_parallel={self.tp_comm.size}"


def _elementwise(module: Module) -> bool:
    # Between a Column and a Row a rank holds a block of the features: only a layer that acts on
    # each feature alone gives there the block of what it gives on all of them (Softmax does not).
    return (type(module).__module__ == _activation.__name__ and not isinstance(module, _activation.Softmax)
            and not list(module.parameters()))


def linear_pairs(model: Sequential) -> list[tuple[str, str]]:
    """The (column, row) names of `model`'s top-level Linears that `parallelize` splits: scanning the
    layers in order, a Linear followed by another Linear with only elementwise activations and
    Dropout between them forms a pair (the second cannot start the next pair). Any other layer
    between two Linears (a convolution, a pooling, Softmax) leaves the first whole."""
    pairs, column = [], None  # column: the Linear waiting for its partner, None when there is none
    for name, m in model._modules.items():
        if type(m) is Linear:
            if column is None:
                column = name
            else:
                pairs.append((column, name))
                column = None
        elif column is not None and not (_elementwise(m) or isinstance(m, Dropout)):
            column = None
    return pairs


def _convert(model: Sequential, pairs: list, tp_comm: Communicator) -> Sequential:
    columns, rows = {c for c, _ in pairs}, {r for _, r in pairs}
    layers, inside = {}, False  # inside: between a Column and its Row, where features are split
    for name, m in model._modules.items():
        if name in columns:
            layers[name], inside = ColumnParallelLinear.from_linear(m, tp_comm), True
        elif name in rows:
            layers[name], inside = RowParallelLinear.from_linear(m, tp_comm), False
        elif inside and isinstance(m, Dropout):
            layers[name] = TensorParallelDropout(m.p, tp_comm)
        else:
            layers[name] = m
    return Sequential(layers)


def parallelize(model: Sequential, tp_comm: Communicator) -> Sequential:
    """The tensor-parallel form of any nn.Sequential `model`, under the same layer names: each of its
    `linear_pairs` becomes ColumnParallelLinear -> RowParallelLinear (a Dropout between the two
    becomes TensorParallelDropout); every other layer (a convolutional trunk, an unpaired Linear)
    stays whole, replicated on every rank of `tp_comm`. The zoo's cnn: its trunk and Flatten stay,
    its Linear -> activation -> Linear head splits.

    A replicated layer before a pair gets the same gradient on every rank with no reduction of its
    own: the column layer's input passes `copy_to_tensor_parallel_region`, whose backward sums the T
    partial input gradients, so every rank backpropagates the whole gradient through the trunk.
    (Megatron likewise reduces only the data-parallel gradients of such layers; summing them over
    the tensor ranks as well would count them T times.) Every rank passes the same model (same
    seed); the shards are slices of its weights, so the result computes what `model` computes."""
    if not isinstance(model, Sequential):
        raise TypeError(f"parallelize converts an nn.Sequential, not a {type(model).__name__}")
    return _convert(model, linear_pairs(model), tp_comm)


def parallelize_mlp(model: Sequential, tp_comm: Communicator) -> Sequential:
    """The tensor-parallel form of an MLP `model` (an nn.Sequential of Flatten, Linear, elementwise
    activations and Dropout; the zoo's "mlp"), under the same layer names: its Linears, in order,
    pair up as ColumnParallelLinear -> RowParallelLinear (a trailing odd Linear stays whole on every
    rank), and a Dropout between the two of a pair becomes TensorParallelDropout. Stricter than
    `parallelize`: a layer between two Linears of a pair that is not elementwise raises TypeError
    instead of leaving them whole. `full_state_dict(result, tp_comm)` gives `model.state_dict()`'s keys."""
    if not isinstance(model, Sequential):
        raise TypeError(f"parallelize_mlp converts an nn.Sequential, not a {type(model).__name__}")
    linears = [name for name, m in model._modules.items() if type(m) is Linear]
    wanted = list(zip(linears[0:len(linears) - 1:2], linears[1::2]))
    if linear_pairs(model) != wanted:
        names = list(model._modules)
        for column, row in wanted:
            between = names[names.index(column) + 1:names.index(row)]
            mods = model._modules
            bad = [n for n in between if not (_elementwise(mods[n]) or isinstance(mods[n], Dropout))]
            if bad:
                m = mods[bad[0]]
                raise TypeError(f"layer {bad[0]!r} ({type(m).__name__}) sits between the Linears {column!r} and "
                                f"{row!r}, where each rank holds a block of the features; only elementwise "
                                "activations and Dropout can run there")
    return _convert(model, wanted, tp_comm)
