"""Module, Parameter and Sequential with PyTorch's registration rules, state_dict keys and forward hooks."""
from __future__ import annotations

import warnings
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


def empty_parameter(*shape, dtype=None) -> Parameter:
    """An uninitialised (zero) parameter in the default dtype; layers fill it with nn.init."""
    return Parameter(numpy.zeros(shape, dtype=dtype or backend.get_default_dtype()))


# False until a forward hook or pre-hook is registered on any module of this process (or a module
# that has one is copied or unpickled in); until then calling a module skips looking for hooks.
_hooks_seen = False


def _note_hooks() -> None:
    global _hooks_seen
    _hooks_seen = True


class RemovableHandle:
    """What register_forward_hook and register_forward_pre_hook return: `.remove()` takes the hook
    out (torch.utils.hooks.RemovableHandle; also a context manager that removes it on exit)."""

    _next_id = 0

    def __init__(self, hooks: dict, *extra: dict):
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1
        self._tables = (hooks, *extra)

    def remove(self) -> None:
        for table in self._tables:
            table.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _add_hook(hooks: dict, hook, prepend: bool, *flags: tuple) -> RemovableHandle:
    """Put `hook` in the ordered table `hooks` (first when `prepend`) and mark it in each table of
    `flags`, (table, on) pairs, that is on; the handle removes it from all of them."""
    _note_hooks()
    handle = RemovableHandle(hooks, *(table for table, _ in flags))
    hooks[handle.id] = hook
    for table, on in flags:
        if on:
            table[handle.id] = True
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


class Module:
    """Base class: assign Parameters, Modules and buffers as attributes and they are registered,
    in assignment order, which fixes `parameters()` order and `state_dict()` keys."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        # hook id -> hook, in call order; the sets name the ids registered with_kwargs / always_call
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks_with_kwargs", {})
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks_with_kwargs", {})
        object.__setattr__(self, "_forward_hooks_always_called", {})

    # NOTE: registered parameters, buffers and submodules are kept in the instance __dict__ too, so
    # `self.weight` in a forward is a plain attribute lookup, not a search of the tables in a
    # __getattr__ fallback. Module defines no __getattr__ at all: a class that has one gets no
    # fast (specialized) attribute reads, on hits either, and every layer reads several per call.
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

    def __setstate__(self, state):  # copy.deepcopy and pickle: the copy keeps the hooks, as in torch
        self.__dict__.update(state)
        if state.get("_forward_pre_hooks") or state.get("_forward_hooks"):
            _note_hooks()

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

    @property
    def __call__(self):
        """`module(x)` runs forward pre-hooks, forward and forward hooks (torch's Module.__call__).

        A property that hands back what to call: the bound forward when there are no hooks, else
        `_call_with_hooks`. Every layer of every step comes through here, and this costs one small
        frame, where a `def __call__(self, *args, **kwargs)` that calls forward would also pack and
        re-spread the arguments (half again as many instructions per call). The process-wide flag
        is tested first because it is a cheap global read, where the instance's hook tables are
        attribute reads that Python cannot specialize at a site that sees every kind of layer.
        `self.forward` is looked up per call, so a forward assigned to the instance, or to the
        class later, is what runs."""
        if _hooks_seen and (self._forward_pre_hooks or self._forward_hooks):
            return self._call_with_hooks
        return self.forward

    def _call_with_hooks(self, *args, **kwargs):
        """torch's Module._call_impl: pre-hooks may replace the arguments, hooks the output."""
        output, called = None, set()
        try:
            for hook_id, hook in tuple(self._forward_pre_hooks.items()):
                if hook_id in self._forward_pre_hooks_with_kwargs:
                    result = hook(self, args, kwargs)
                    if result is not None:
                        if not (isinstance(result, tuple) and len(result) == 2):
                            raise RuntimeError("forward pre-hook must return None or a tuple of "
                                               f"(new_args, new_kwargs), but got {result}.")
                        args, kwargs = result
                else:
                    result = hook(self, args)
                    if result is not None:
                        args = result if isinstance(result, tuple) else (result,)
            output = self.forward(*args, **kwargs)
            for hook_id, hook in tuple(self._forward_hooks.items()):
                called.add(hook_id)
                output = self._run_forward_hook(hook_id, hook, args, kwargs, output)
        except Exception:
            # always_call hooks run even when forward (or an earlier hook) raised; their own errors
            # are only warned about, so the first error is the one that propagates
            for hook_id, hook in tuple(self._forward_hooks.items()):
                if hook_id in self._forward_hooks_always_called and hook_id not in called:
                    try:
                        output = self._run_forward_hook(hook_id, hook, args, kwargs, output)
                    except Exception as e:  # noqa: BLE001 - the forward's error is re-raised below
                        warnings.warn("forward hook with ``always_call=True`` raised an exception that was "
                                      f"silenced as another error was raised in forward: {e}", stacklevel=2)
            raise
        return output

    def _run_forward_hook(self, hook_id, hook, args, kwargs, output):
        """One forward hook, called as it was registered; a result other than None replaces the output."""
        if hook_id in self._forward_hooks_with_kwargs:
            result = hook(self, args, kwargs, output)
        else:
            result = hook(self, args, output)
        return output if result is None else result

    def register_forward_pre_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False):
        """hook(module, args) -> None or new args (a non-tuple is wrapped in one), run before forward;
        with_kwargs: hook(module, args, kwargs) -> None or (new_args, new_kwargs). prepend: run
        before the hooks already registered. Returns a handle whose remove() unregisters it."""
        return _add_hook(self._forward_pre_hooks, hook, prepend, (self._forward_pre_hooks_with_kwargs, with_kwargs))

    def register_forward_hook(self, hook, *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False):
        """hook(module, args, output) -> None or a new output, run after forward (args as the
        pre-hooks left them); with_kwargs: hook(module, args, kwargs, output). always_call: run even
        when forward raises (output None). Returns a handle whose remove() unregisters it."""
        return _add_hook(self._forward_hooks, hook, prepend, (self._forward_hooks_with_kwargs, with_kwargs),
                         (self._forward_hooks_always_called, always_call))

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
