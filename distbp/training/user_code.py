"""A user's own model or loss for `python -m distbp.train`: `--model pkg.module:factory` or
`--model path/to/file.py:factory` (the same for `--loss`), with keyword settings from `--model-args
key=value,...` (or a TOML table).

A model factory is called as `factory(input_shape, num_outputs, **model_args)` and must return a
distbp Module whose output for one sample of the data has shape (1, num_outputs). A loss factory is
called as `factory(**loss_args)`, with `reduction="sum"` added when it takes a `reduction`, and must
return `loss(output, target)`: a scalar that SUMS over the samples (the trainer divides by the global
batch, which keeps data parallelism exact). Every check runs on every rank with the same inputs, so a
bad factory fails everywhere alike with one line (UserCodeError), never a hang."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import numpy

from .. import nn
from ..autograd import Tensor, no_grad, tensor
from .registry import accepted_options


class UserCodeError(ValueError):
    """A user's model or loss that cannot be used; str(e) is the one line shown."""


def is_reference(text: str) -> bool:
    """`module:factory` or `file.py:factory` (registered names have no colon)."""
    return isinstance(text, str) and ":" in text


def parse_args(text: str, flag: str) -> dict:
    """`key=value,...` into a dict: each value read as a TOML value (`3`, `0.5`, `true`, `[64, 32]`,
    `"x"`), else kept as a string (`act=relu`). Commas inside brackets or quotes belong to the value."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    args = {}
    for part in (p.strip() for p in parts):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserCodeError(f"{flag}: expected key=value pairs separated by commas, like hidden=64,act=relu; "
                                f"got {part!r}")
        try:
            args[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            args[key] = value.strip()
    return args


def load_factory(ref: str, what: str):
    """The callable named by `module:attr` or `path.py:attr`."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise UserCodeError(f"--{what} {ref!r}: expected package.module:function or path/to/file.py:function")
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _import_file(target, what)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # noqa: BLE001 - any failure while importing the user's code is theirs
            raise UserCodeError(f"--{what} {ref}: cannot import module {target!r} ({type(e).__name__}: "
                                f"{_first_line(e)})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise UserCodeError(f"--{what} {ref}: {target} has no {attr!r} (it defines {', '.join(public) or 'nothing callable'})")
    if not callable(factory):
        raise UserCodeError(f"--{what} {ref}: {attr!r} is a {type(factory).__name__}, not a function")
    return factory


def _import_file(path: str, what: str):
    if not os.path.isfile(path):
        raise UserCodeError(f"--{what}: file {path} not found")
    # one module per file (the name from its absolute path), so a factory's classes are pickled and
    # compared consistently however often the file is loaded in this process
    name = "distbp_user_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001
        del sys.modules[name]
        raise UserCodeError(f"--{what}: cannot import {path} ({type(e).__name__}: {_first_line(e)})") from None
    return module


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no message"


def build_user_model(ref: str, input_shape: tuple, num_outputs: int, args: dict) -> nn.Module:
    """factory(input_shape, num_outputs, **args), checked to be a Module."""
    factory = load_factory(ref, "model")
    try:
        model = factory(tuple(input_shape), num_outputs, **args)
    except Exception as e:  # noqa: BLE001
        raise UserCodeError(f"model {ref}(input_shape={tuple(input_shape)}, num_outputs={num_outputs}"
                            f"{''.join(f', {k}={v!r}' for k, v in args.items())}) failed: {type(e).__name__}: "
                            f"{_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"model {ref} returned a {type(model).__name__}; it must return a distbp.nn.Module")
    return model


def check_output(model: nn.Module, X, num_outputs: int, task: str, label: str) -> None:
    """Run the model on one sample of X (eval mode, no gradients) and check the output's shape."""
    sample = numpy.asarray(X[:1])
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            out = model(tensor(sample))
    except Exception as e:  # noqa: BLE001
        raise UserCodeError(f"model {label} fails on one sample of the data (input shape {sample.shape}): "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    shape = tuple(getattr(out, "shape", ()))
    if not isinstance(out, Tensor) or shape != (1, num_outputs):
        what = f"{num_outputs} classes" if task == "classification" else f"{num_outputs} target(s)"
        got = f"a {type(out).__name__}" if not isinstance(out, Tensor) else f"shape {shape}"
        raise UserCodeError(f"model {label} gives {got} for one sample of shape {sample.shape}; the data needs "
                            f"a tensor of shape (1, {num_outputs}) ({what})")


def build_user_loss(ref: str, args: dict):
    """factory(**args) (reduction='sum' added when it takes one): a loss(output, target) callable."""
    factory = load_factory(ref, "loss")
    accepted = accepted_options(factory)
    kwargs = dict(args)
    if accepted is None or "reduction" in accepted:
        kwargs.setdefault("reduction", "sum")
    try:
        loss = factory(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise UserCodeError(f"loss {ref}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) failed: "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    if not callable(loss):
        raise UserCodeError(f"loss {ref} returned a {type(loss).__name__}; it must return a callable "
                            "loss(output, target)")
    return loss


def check_loss(loss, model: nn.Module, X, y, label: str) -> None:
    """The loss on three samples must be a finite scalar equal to the sum of its values on each (a SUM
    over samples: a mean would make the per-rank division by the global batch wrong)."""
    n = min(3, len(X))
    xs, ys = numpy.asarray(X[:n]), numpy.asarray(y[:n])
    model.eval()
    try:
        with no_grad():
            out = model(tensor(xs))
            values = [loss(out, ys)] + ([loss(out[i:i + 1], ys[i:i + 1]) for i in range(n)] if n > 1 else [])
    except Exception as e:  # noqa: BLE001
        raise UserCodeError(f"loss {label} fails on the model's output for one batch: {type(e).__name__}: "
                            f"{_first_line(e)}") from None
    finally:
        model.train()
    for v in values:
        if not isinstance(v, Tensor) or v.data.size != 1:
            raise UserCodeError(f"loss {label} returned {type(v).__name__} of shape {getattr(v, 'shape', ())}; it "
                                "must return one number as a tensor")
    whole = float(values[0].item())
    if not math.isfinite(whole):
        raise UserCodeError(f"loss {label} is {whole} on the first samples of the data")
    if n > 1:
        parts = sum(float(v.item()) for v in values[1:])
        if not math.isclose(whole, parts, rel_tol=1e-4, abs_tol=1e-6):
            raise UserCodeError(f"loss {label} must SUM over the samples (reduction='sum'): on {n} samples it gives "
                                f"{whole:.6g}, the sum of its values on each is {parts:.6g}")
