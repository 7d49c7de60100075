#!/usr/bin/env bash
# Data-parallel training across machines listed in a Hydra hostfile (one `host:ranks` per line):
#   launch/hostfile.sh HOSTFILE [-n RANKS] [-ppn RANKS_PER_HOST] [distbp.train flags...]
# Needs passwordless ssh to every host and the same python + repo path on each (docker/ sets that up).
# BLAS threads per rank = cores of this machine / ranks per host (set CORES_PER_HOST if hosts differ).
# First, `python -m distbp.doctor` checks every rank (versions, collectives); DISTBP_PREFLIGHT=0 skips it.
set -euo pipefail
hostfile=${1:?usage: launch/hostfile.sh HOSTFILE [-n RANKS] [-ppn RANKS_PER_HOST] [train flags...]}
shift
ppn=1
ranks=$(awk -F: 'NF && $1 !~ /^#/ {n += ($2 == "" ? 1 : $2)} END {print n}' "$hostfile")
while [ $# -gt 0 ]; do
  case "$1" in
    -n) ranks=$2; shift 2 ;;
    -ppn) ppn=$2; shift 2 ;;
    *) break ;;
  esac
done
PY=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-$(dirname "$(command -v "$PY")")/mpiexec}
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
cores=${CORES_PER_HOST:-$(nproc)}
threads=$(( cores / ppn > 0 ? cores / ppn : 1 ))
threads=${OPENBLAS_NUM_THREADS:-$threads}
ranks_run() {  # python -m MODULE ARGS... on every rank
  "$MPIEXEC" -f "$hostfile" -n "$ranks" -ppn "$ppn" \
    -genv OPENBLAS_NUM_THREADS "$threads" -genv OMP_NUM_THREADS "$threads" -genv MKL_NUM_THREADS "$threads" \
    "$PY" -m "$@"
}
# Pre-flight: different software on some host, or broken collectives, are found in seconds here,
# not as a desync hours into the run. DISTBP_PREFLIGHT=0 skips it.
if [ "${DISTBP_PREFLIGHT:-1}" != 0 ]; then
  ranks_run distbp.doctor > "${TMPDIR:-/tmp}/distbp-preflight.$$" 2>&1 || {
    cat "${TMPDIR:-/tmp}/distbp-preflight.$$" >&2
    echo "launch/hostfile.sh: distbp.doctor found a problem (above); fix it, or skip the check with DISTBP_PREFLIGHT=0" >&2
    rm -f "${TMPDIR:-/tmp}/distbp-preflight.$$"
    exit 1
  }
  grep '^WARN' "${TMPDIR:-/tmp}/distbp-preflight.$$" >&2 || true
  rm -f "${TMPDIR:-/tmp}/distbp-preflight.$$"
fi
ranks_run distbp.train "$@"
