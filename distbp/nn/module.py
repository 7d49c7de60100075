"""Module, Parameter and Sequential with PyTorch's registration rules and state_dict keys."""
from __future__ import annotations

from collections import OrderedDict

import numpy

from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A tensor that a Module registers as trainable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data.data if isinstance(data, Tensor) else data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


_INSTANCE_FORWARD_CLASSES = {}


def _calls_instance_forward(cls):
    """cls with the generic __call__ (self.forward looked up per call); same name, one per class."""
    sub = _INSTANCE_FORWARD_CLASSES.get(cls)
    if sub is None:
        sub = _INSTANCE_FORWARD_CLASSES[cls] = type(cls.__name__, (cls,), {
            "__call__": Module.__call__, "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return sub


class Module:
    """Base class: assign Parameters, Modules and buffers as attributes and they are registered,
    in assignment order, which fixes `parameters()` order and `state_dict()` keys."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # NOTE: registered parameters, buffers and submodules are kept in the instance __dict__ too, so
    # `self.weight` in a forward is a plain attribute lookup. With the tables alone, every access
    # went through the __getattr__ fallback: ~1 us each, a third of an MLP step's Python overhead.
    # All writes go through __setattr__/register_*/__delattr__, which keep the two in step.
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"call super().__init__() in {type(self).__name__}.__init__ "
                                 "before assigning attributes")
        if isinstance(value, Parameter):
            own = self._parameters
        elif isinstance(value, Module):
            own = self._modules
        elif name in self._buffers:
            own = self._buffers  # re-assigning a buffer keeps it a buffer, as in torch
        else:
            own = None
        for table in (self._parameters, self._buffers, self._modules):
            if table is not own:
                table.pop(name, None)
        if own is not None:
            own[name] = value  # an existing key keeps its place: replacing a layer keeps the order
        object.__setattr__(self, name, value)
        if name == "forward" and type(self).__call__ is not Module.__call__:
            # calling runs the class's forward directly (see __init_subclass__); an instance with its
            # own forward moves to a subclass whose __call__ looks forward up, as torch's does
            object.__setattr__(self, "__class__", _calls_instance_forward(type(self)))

    def __getattr__(self, name):  # only called when normal lookup fails
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array, persistent: bool = True) -> None:
        """A non-trainable array saved in state_dict (e.g. BatchNorm's running_mean)."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)

    def register_parameter(self, name: str, param) -> None:
        if param is None:
            self._parameters.pop(name, None)
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module) -> None:
        setattr(self, name, module)

    # ----- calling -----
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass that defines forward gets it as its __call__ as well, so `model(x)` is one
        # Python frame, not two: an MLP step pays that frame for every layer. A forward assigned to
        # an instance later still runs (__setattr__); one assigned to the class later does not.
        if "forward" in cls.__dict__ and "__call__" not in cls.__dict__:
            cls.__call__ = cls.__dict__["forward"]

    # ----- traversal -----
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def children(self):
        return iter(m for m in self._modules.values() if m is not None)

    def named_children(self):
        return iter((n, m) for n, m in self._modules.items() if m is not None)

    def named_parameters(self, prefix: str = ""):
        seen = set()
        for mod_prefix, m in self.named_modules(prefix):
            for name, p in m._parameters.items():
                if p is not None and id(p) not in seen:  # shared weights appear once
                    seen.add(id(p))
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = ""):
        for mod_prefix, m in self.named_modules(prefix):
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self):
        for _, b in self.named_buffers():
            yield b

    # ----- modes and grads -----
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, flag: bool = True):
        for p in self.parameters():
            p.requires_grad = flag
        return self

    # ----- state -----
    def state_dict(self) -> OrderedDict[str, numpy.ndarray]:
        """Parameters then buffers of each module, as host numpy arrays (copies)."""
        out = OrderedDict()
        for mod_prefix, m in self.named_modules():
            skip = m.__dict__.get("_non_persistent", ())
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = backend.to_numpy(p.data).copy()
            for name, b in m._buffers.items():
                if b is not None and name not in skip:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = backend.to_numpy(b).copy()
        return out

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays into parameters and buffers in place (their device and dtype are kept)."""
        own = {}
        for mod_prefix, m in self.named_modules():
            for table in ("_parameters", "_buffers"):
                for name in getattr(m, table):
                    if getattr(m, table)[name] is not None:
                        own[f"{mod_prefix}.{name}" if mod_prefix else name] = (m, table, name)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict does not match {type(self).__name__}: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        for key, (m, table, name) in own.items():
            if key not in state_dict:
                continue
            value = state_dict[key]
            value = value.data if isinstance(value, Tensor) else value
            target = getattr(m, table)[name]
            arr = target.data if isinstance(target, Tensor) else target
            if tuple(value.shape) != tuple(arr.shape):
                raise ValueError(f"size mismatch for {key}: checkpoint has shape {tuple(value.shape)}, "
                                 f"model has {tuple(arr.shape)}")
            xp = backend.get_array_module(arr)
            arr[...] = xp.asarray(backend.to_numpy(value) if xp is numpy else value, dtype=arr.dtype)
        return missing, unexpected

    def to(self, device=None, dtype=None):
        """Move/cast every parameter and buffer in place (parameters stay the same objects)."""
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    data = p.data if device is None else backend.to_device(p.data, device)
                    p.data = data.astype(dtype, copy=False) if dtype is not None else data
                    p.grad = None
            for name, b in list(m._buffers.items()):
                if b is not None:
                    data = b if device is None else backend.to_device(b, device)
                    if dtype is not None and data.dtype.kind == "f":
                        data = data.astype(dtype, copy=False)
                    setattr(m, name, data)
        return self

    def double(self):
        return self.to(dtype=numpy.float64)

    def float(self):
        return self.to(dtype=numpy.float32)

    # ----- printing -----
    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; their state_dict keys are '0.weight', '1.bias', ..."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                setattr(self, name, m)
        else:
            for i, m in enumerate(modules):
                setattr(self, str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*mods[i])
        return mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
