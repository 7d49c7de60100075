"""Rehearse GPU tests without a GPU: run pytest with tests/cupy_standin.py posing as the cupy module.

    python benchmarks/gpu_check_rehearsal.py tests/test_cuda.py
    mpiexec -n 2 python -m mpi4py benchmarks/gpu_check_rehearsal.py --with-mpi -m mpi tests/distributed/test_cuda_ddp.py

The stand-in is numpy underneath: this checks that the GPU tests' own code runs (and that distbp's
dispatch and placement hold) before a GPU is at hand. It is NOT a GPU run and proves nothing about
CUDA, cupy.fuse's compiled kernels or NCCL; benchmarks/gpu_check.sh labels its output so.
"""
import os
import sys
import types

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import cupy_standin  # (tests/ is on the path only from here)

sys.modules["cupy"] = cupy_standin.StandIn()
sys.modules["cupyx"] = types.SimpleNamespace(scatter_add=lambda t, i, v: numpy.add.at(t, i, v))

import pytest

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
