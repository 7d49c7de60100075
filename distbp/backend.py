"""The one place that knows about array libraries: numpy on the CPU, cupy on a GPU.

Every op asks `get_array_module(*arrays)` for `xp` instead of importing numpy directly, so the
GPU path changes this module only. Also holds the default float dtype and the global RNG.
Imports nothing from distbp but _process, whose C-runtime tuning every distbp process gets
(the lowest module that `import distbp` always loads).
"""
from __future__ import annotations

import os

import numpy

from . import _process

_process.retain_freed_memory()  # once per process; DISTBP_RETAIN_FREED_MEMORY=0 opts out

_cupy = None          # the cupy module once we know it works, else None
_cupy_checked = False
_cupy_problem = ""    # why cupy is not usable, for error messages ("" while unknown or usable)
_device_index = None  # the GPU this process uses (use_device), chosen before cupy's first allocation
_default_dtype = numpy.dtype(numpy.float32)
_rng = numpy.random.default_rng(0)
_seed = 0             # the last manual_seed; distbp.random keys its counter-based draws with it
_unkeyed_draws = 0    # distbp.random's draws outside a batch(...) block since the last manual_seed


def cupy_module():
    """cupy if it imports and a GPU answers a one-element allocation, else None (never raises)."""
    global _cupy, _cupy_checked, _cupy_problem
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy
            # NOTE: `import cupy` succeeds without a GPU; only an allocation tells.
            if cupy.cuda.is_available():
                if _device_index is not None:  # this rank's GPU, before the allocation makes a context
                    cupy.cuda.Device(_device_index).use()
                cupy.zeros(1)
                _cupy = cupy
            else:
                _cupy_problem = "cupy is installed but the CUDA runtime finds no GPU"
        except ImportError as e:
            _cupy, _cupy_problem = None, ("cupy is not installed (pip install 'distbp[cuda]')" if e.name == "cupy"
                                          else f"cupy does not import ({e})")
        except (OSError, RuntimeError) as e:
            _cupy, _cupy_problem = None, f"cupy cannot use a GPU here ({type(e).__name__}: {e})"
    return _cupy


def cuda_problem() -> str:
    """Why `cuda_available()` is False, in words ("" when it is True)."""
    return "" if cupy_module() is not None else _cupy_problem


def device_count() -> int:
    """GPUs the CUDA runtime sees (0 without cupy or a driver); makes no allocation, so it can run
    before `use_device` picks this process's GPU."""
    if _cupy is not None:
        return _cupy.cuda.runtime.getDeviceCount()
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() if cupy.cuda.is_available() else 0
    except (ImportError, OSError, RuntimeError):
        return 0


def use_device(index: int) -> None:
    """Make GPU `index` this process's device: for cupy's first allocation if it has not happened
    yet (so no rank makes a context on GPU 0 it never uses), else from now on."""
    global _device_index
    _device_index = int(index)
    if _cupy is not None:
        _cupy.cuda.Device(_device_index).use()


def synchronize() -> None:
    """Wait for the GPU work queued so far (a timer's end must not be a kernel launch); no-op on CPU."""
    if _cupy is not None:
        _cupy.cuda.get_current_stream().synchronize()


def gpu_comm_preference() -> str:
    """How GPU arrays cross ranks, from DISTBP_GPU_COMM: auto (default: NCCL, else CUDA-aware MPI,
    else host staging), nccl, mpi (CUDA-aware MPI) or host (staging through host memory)."""
    value = os.environ.get("DISTBP_GPU_COMM", "auto").strip().lower() or "auto"
    if value not in ("auto", "nccl", "mpi", "host"):
        raise ValueError(f"DISTBP_GPU_COMM={value!r}; expected auto, nccl, mpi or host")
    return value


def cuda_available() -> bool:
    return cupy_module() is not None


def get_array_module(*arrays):
    """numpy, or cupy when any argument is a cupy array (chainer.backend's rule)."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return numpy


def is_array(a) -> bool:
    return isinstance(a, numpy.ndarray) or (_cupy is not None and isinstance(a, _cupy.ndarray))


def device_of(array) -> str:
    return "cuda" if get_array_module(array) is not numpy else "cpu"


def to_device(array, device: str):
    """Copy an array to 'cpu' or 'cuda' (no copy when it is already there)."""
    device = str(device).split(":")[0]
    if device == "cpu":
        return array.get() if get_array_module(array) is not numpy else array
    if device == "cuda":
        cp = cupy_module()
        if cp is None:
            raise RuntimeError("device 'cuda' asked for, but cupy or a GPU is not available "
                               "(pip install 'distbp[cuda]' on a machine with an NVIDIA GPU)")
        return cp.asarray(array)
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'cuda'")


def to_numpy(array) -> numpy.ndarray:
    return to_device(array, "cpu")


def get_default_dtype() -> numpy.dtype:
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """float32 (the default) or float64, for new floating tensors and parameters."""
    global _default_dtype
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"default dtype must be float32 or float64, got {dtype}")
    _default_dtype = dtype


def manual_seed(seed: int) -> None:
    """Seed every random draw distbp makes (parameter init, dropout, shuffling defaults)."""
    global _rng, _seed, _unkeyed_draws
    _rng = numpy.random.default_rng(seed)
    _seed, _unkeyed_draws = int(seed), 0  # restarts distbp.random's unkeyed draws, as torch's sequence
    cp = cupy_module() if _cupy_checked else None
    if cp is not None:
        cp.random.seed(seed)


def initial_seed() -> int:
    """The seed given to the last manual_seed (0 before any), as torch.initial_seed."""
    return _seed


def rng() -> numpy.random.Generator:
    """The global host generator; parameters are drawn here so init is identical on any device."""
    return _rng


def next_unkeyed_draw() -> int:
    """Count one of distbp.random's draws made outside a batch(...) block; returns its number (1, 2, ..)."""
    global _unkeyed_draws
    _unkeyed_draws += 1
    return _unkeyed_draws


def get_rng_state() -> dict:
    """Everything that decides the next random draws, as plain data (it goes into checkpoints): the
    host generator's state, and the seed and draw count that key distbp.random's draws (dropout)."""
    return {"generator": _rng.bit_generator.state, "seed": _seed, "unkeyed_draws": _unkeyed_draws}


def set_rng_state(state: dict) -> None:
    """Restore what get_rng_state returned (a bare numpy bit-generator state sets the generator only)."""
    global _seed, _unkeyed_draws
    if "generator" not in state:
        _rng.bit_generator.state = state
        return
    _rng.bit_generator.state = state["generator"]
    _seed, _unkeyed_draws = int(state["seed"]), int(state["unkeyed_draws"])


def scatter_add(target, index, values) -> None:
    """target[index] += values with repeated indices summed (numpy.add.at / cupyx.scatter_add)."""
    xp = get_array_module(target)
    if xp is numpy:
        numpy.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)
