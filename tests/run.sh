#!/usr/bin/env bash
# The whole test suite: MPI tests at 1, 2, 3 and 4 ranks (1: MPI's world of one; 3: shards and
# shared-memory slices that do not divide evenly), then the single-process suite (last, so its
# summary line is the last one printed). Uses .venv's python when there is one.
# The MPI form cannot hang: `python -m mpi4py` turns a failing rank into
# MPI_Abort, pytest-timeout and MPIEXEC_TIMEOUT are backstops.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
BIN=$(dirname "$PY")
if [ "${CI:-}" = true ] && ! "$PY" -c "import torch" 2>/dev/null; then
  # the torch parity tests would only skip: fail at once instead (tests/conftest.py fails them too)
  echo "CI=true but torch is not importable by $PY: pip install -e '.[test,parity]'" >&2
  exit 1
fi
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # ranks share 2 cores
export PYTHONDONTWRITEBYTECODE=1
for n in 1 2 3 4; do
  if ls tests/distributed/test_*.py >/dev/null 2>&1; then
    echo "== MPI tests on $n ranks"
    MPIEXEC_TIMEOUT=400 timeout 500 "$BIN/mpiexec" -n "$n" "$PY" -m mpi4py -m pytest --with-mpi -x -q \
      -p no:cacheprovider --timeout=120 --timeout-method=thread -m mpi tests/distributed
  fi
done
unset OPENBLAS_NUM_THREADS OMP_NUM_THREADS MKL_NUM_THREADS
echo "== single-process tests"
"$PY" -m pytest -q -p no:cacheprovider tests "$@"
