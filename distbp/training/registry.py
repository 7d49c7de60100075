"""The one registry of names the commands accept: models, datasets, optimizers, activations, losses.

Each table maps a name to a factory. Adding a model is one decorated function, anywhere that is
imported before the command parses its flags:

    from distbp.training import registry

    @registry.register_model("tiny")
    def tiny(input_shape, num_outputs, *, hidden=None):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs))

`python -m distbp.train --model tiny` then works, and `--help`, the config checks, bench, search and
the equivalence command list it. A model factory takes `(input_shape, num_outputs, **options)`; of
the options every trainer passes (`COMMON_MODEL_OPTIONS`), it receives those its signature names,
so a model without hidden layers simply does not take `hidden`.

DATASETS is `distbp.data`'s table of built-ins (factories `seed -> (X, y, image_shape or None)`):
data loading sits below training, so the table lives there and is the same dict object here."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable

from .. import nn, optim
from ..data.datasets import BUILTINS as DATASETS

MODELS: dict[str, Callable] = {}
OPTIMIZERS: dict[str, Callable] = {}
ACTIVATIONS: dict[str, Callable] = {}
LOSSES: dict[str, Callable] = {}

# Options `python -m distbp.train` passes to every model; a factory gets those its signature names.
COMMON_MODEL_OPTIONS = ("hidden", "activation", "dropout", "image_shape")

__all__ = ["ACTIVATIONS", "COMMON_MODEL_OPTIONS", "DATASETS", "LOSSES", "MODELS", "OPTIMIZERS", "accepted_options",
           "activation", "build_model", "build_optimizer", "register_activation", "register_dataset",
           "register_loss", "register_model", "register_optimizer"]


def _register(table: dict, kind: str, name: str):
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string, got {name!r}")

    def add(factory):
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = factory
        return factory
    return add


def register_model(name: str):
    """Decorator: `factory(input_shape, num_outputs, **options) -> nn.Module` becomes model `name`."""
    return _register(MODELS, "model", name)


def register_optimizer(name: str):
    """Decorator: `factory(params, lr, **options) -> Optimizer` (an optimizer class works as is)."""
    return _register(OPTIMIZERS, "optimizer", name)


def register_dataset(name: str):
    """Decorator: `factory(seed) -> (X, y, image_shape or None)`; y of shape (N,) integer classes,
    or (N, outputs) floats for regression. The split and standardisation are load_dataset's."""
    return _register(DATASETS, "dataset", name)


def register_activation(name: str):
    """Decorator: a module class (or zero-argument factory) of an elementwise activation."""
    return _register(ACTIVATIONS, "activation", name)


def register_loss(name: str):
    """Decorator: `factory(reduction=...) -> loss module` called as `loss(output, target)`."""
    return _register(LOSSES, "loss", name)


def accepted_options(factory) -> set | None:
    """Keyword names `factory` takes (None: any, it has **kwargs)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(table)}")
    return table[name]


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    return _lookup(ACTIVATIONS, "activation", name)()


def build_model(name: str, input_shape, num_outputs: int, **options) -> nn.Module:
    """A freshly initialised model (parameters drawn from distbp's global RNG); ValueError names a bad
    choice. Common options a model does not take are dropped; any other option must be its own."""
    factory = _lookup(MODELS, "model", name)
    input_shape = tuple(int(v) for v in input_shape)
    if not isinstance(num_outputs, int) or isinstance(num_outputs, bool) or num_outputs < 1:
        raise ValueError(f"Invalid number of outputs: {num_outputs}")
    if math.prod(input_shape) < 1:
        raise ValueError(f"Invalid input shape: {input_shape}")
    dropout = options.get("dropout", 0.0)
    if not 0 <= dropout < 1:
        raise ValueError(f"Invalid dropout probability: {dropout} (expected 0 <= p < 1)")
    if "activation" in options:
        _lookup(ACTIVATIONS, "activation", options["activation"])
    accepted = accepted_options(factory)
    if accepted is not None:
        unknown = [k for k in options if k not in accepted and k not in COMMON_MODEL_OPTIONS]
        if unknown:
            raise ValueError(f"model {name!r} has no option {unknown[0]!r}; it takes "
                             f"{', '.join(sorted(accepted - {'input_shape', 'num_outputs'})) or 'none'}")
        options = {k: v for k, v in options.items() if k in accepted}
    return factory(input_shape, num_outputs, **options)


def build_optimizer(name: str, params, lr: float, **options):
    """An optimizer over `params` by name (sgd, adam, adamw, rmsprop, or a registered one)."""
    factory = _lookup(OPTIMIZERS, "optimizer", name)
    accepted = accepted_options(factory)
    unknown = [] if accepted is None else [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"optimizer {name!r} has no option {unknown[0]!r}")
    return factory(params, lr=lr, **options)


for _name, _cls in (("sgd", optim.SGD), ("adam", optim.Adam), ("adamw", optim.AdamW), ("rmsprop", optim.RMSprop)):
    register_optimizer(_name)(_cls)
for _name, _cls in (("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("leaky_relu", nn.LeakyReLU)):
    register_activation(_name)(_cls)
# The loss of each task: the sum-then-divide data parallelism needs reduction="sum" (trainer.py).
register_loss("cross_entropy")(nn.CrossEntropyLoss)
register_loss("mse")(nn.MSELoss)
register_loss("l1")(nn.L1Loss)
