"""torch's autograd functions over tensors: `backward` (several roots, one walk) and `grad`
(gradients returned, no `.grad` touched). Both run distbp.autograd.engine's walk, as
Tensor.backward does."""
from __future__ import annotations

import numbers

from .. import backend
from .deferred import computing_all_grads
from .engine import run_backward
from .tensor import Tensor, input_set, root_gradient


def _tensors(tensors, what) -> tuple:
    tensors = (tensors,) if isinstance(tensors, Tensor) else tuple(tensors)
    if not tensors:
        raise RuntimeError(f"{what} must hold at least one tensor")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"element {i} of {what} is a {type(t).__name__}, not a Tensor")
    return tensors


def _root_gradients(roots, grads, name) -> list:
    """One starting gradient per root: `grads` is None (each root a one-element tensor), one
    gradient (for one root), or a sequence with one per root (None for a one-element root)."""
    if grads is None:
        grads = (None,) * len(roots)
    elif isinstance(grads, (Tensor, numbers.Number)) or backend.is_array(grads):
        grads = (grads,)
    else:
        grads = tuple(grads)
    if len(grads) != len(roots):
        raise RuntimeError(f"{name} has {len(grads)} gradients for {len(roots)} tensors; pass one per tensor")
    return [root_gradient(t, g, i, name) for i, (t, g) in enumerate(zip(roots, grads))]


def backward(tensors, grad_tensors=None, retain_graph=None, inputs=None) -> None:
    """Add the gradient of sum_i <grad_tensors[i], tensors[i]> into `.grad` of every leaf below
    `tensors` (torch.autograd.backward). Several roots share one walk: a subgraph under more than
    one root runs its backward once, with the summed gradient, and each leaf's hooks fire once.

    grad_tensors: one gradient per tensor, of its shape (None for a one-element tensor: 1).
    retain_graph: keep the graph for another backward (default: free it as the walk passes).
    inputs: only these tensors (leaves or not) accumulate a gradient, and only paths to them run."""
    roots = _tensors(tensors, "tensors")
    grads = _root_gradients(roots, grad_tensors, "grad_tensors")
    run_backward(roots, grads, bool(retain_graph), None if inputs is None else input_set(inputs))


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, allow_unused=False) -> tuple:
    """The gradients of sum_i <grad_outputs[i], outputs[i]> with respect to each of `inputs`
    (leaves or not), as a tuple of Tensors (torch.autograd.grad). No `.grad` changes and no
    post-accumulate hook fires; only the paths from `outputs` to `inputs` run.

    allow_unused: an input no output depends on gives None instead of raising."""
    roots = _tensors(outputs, "outputs")
    wanted = _tensors(inputs, "inputs")
    grads = _root_gradients(roots, grad_outputs, "grad_outputs")
    found = {}
    with computing_all_grads():  # it returns every gradient now, deferred ones included
        run_backward(roots, grads, bool(retain_graph), input_set(wanted), found)
    result = []
    for t in wanted:
        g = found.get(t)
        if g is None and not allow_unused:
            raise RuntimeError("One of the differentiated Tensors appears to not have been used in the graph. "
                               "Set allow_unused=True if this is the desired behavior.")
        result.append(None if g is None else Tensor._wrap(g))
    return tuple(result)
