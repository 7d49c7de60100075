#!/usr/bin/env bash
# Data-parallel training on this machine:  launch/local.sh [-n RANKS] [distbp.train flags...]
# e.g. launch/local.sh -n 4 --model cnn --batch-size 256
# Each rank gets cores/RANKS BLAS threads (ranks that each start one BLAS thread per core
# oversubscribe the machine and slow every step several-fold). Override with OPENBLAS_NUM_THREADS;
# pick the interpreter with PYTHON.
set -euo pipefail
ranks=2
if [ "${1:-}" = "-n" ]; then ranks=$2; shift 2; fi
PY=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-$(dirname "$(command -v "$PY")")/mpiexec}
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
cores=$(nproc)
threads=$(( cores / ranks > 0 ? cores / ranks : 1 ))
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$threads}
export OMP_NUM_THREADS=$OPENBLAS_NUM_THREADS MKL_NUM_THREADS=$OPENBLAS_NUM_THREADS
exec "$MPIEXEC" -n "$ranks" "$PY" -m distbp.train "$@"
