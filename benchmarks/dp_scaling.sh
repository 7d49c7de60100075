#!/usr/bin/env bash
# Weak scaling 1 -> 2 ranks: distbp.bench MLP 784-1024-1024-10, 256 samples per rank, float32,
# 1 BLAS thread per rank, and the bare mpi4py Allreduce of the same bytes (--compare-bare).
# Usage: bash benchmarks/dp_scaling.sh [REPEATS]. Timings on a shared 2-core machine vary up to 2x
# run to run (PLATFORM.md): compare the 1- and 2-rank figures of the same repeat.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export OPENBLAS_NUM_THREADS=1
for rep in $(seq 1 "${1:-3}"); do
  "$PY" -m distbp.bench --threads 1 --json --steps 30
  "$(dirname "$PY")/mpiexec" -n 2 "$PY" -m distbp.bench --threads 1 --json --steps 30 --compare-bare
done
