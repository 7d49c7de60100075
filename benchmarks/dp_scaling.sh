#!/usr/bin/env bash
# Weak scaling 1 -> 2 ranks: distbp.bench MLP 784-1024-1024-10, 256 samples per rank, float32,
# 1 BLAS thread per rank, and the bare mpi4py Allreduce of the same bytes (--compare-bare).
# Usage: bash benchmarks/dp_scaling.sh [REPEATS]. Timings on a shared 2-core machine vary up to 2x
# run to run, so two methods:
#   pairs:       a 1-rank run, then a 2-rank run, REPEATS times; each pair gives an efficiency.
#   interleaved: one 2-rank job alternating blocks on rank 0 alone (rank 1 asleep), on both ranks
#                each training alone (no communication), and on both ranks data-parallel
#                (`--scaling`), so a slow spell of the machine hits all three alike.
# Prints every JSON line, then a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
MPIEXEC="$(dirname "$PY")/mpiexec"
export OPENBLAS_NUM_THREADS=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for rep in $(seq 1 "${1:-3}"); do
  "$PY" -m distbp.bench --threads 1 --json --steps 30 | tee -a "$out"
  "$MPIEXEC" -n 2 "$PY" -m distbp.bench --threads 1 --json --steps 30 --compare-bare | tee -a "$out"
  "$MPIEXEC" -n 2 "$PY" -m distbp.bench --threads 1 --json --steps 10 --scaling 8 | tee -a "$out"
done
"$PY" - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
runs = [r for r in rows if "blocks" not in r]
pairs = [(a, b) for a, b in zip(runs[::2], runs[1::2])]
eff = [a["step_ms"] / b["step_ms"] for a, b in pairs]
inter = [r["weak_scaling_best"] for r in rows if "blocks" in r]
inter_med = [r["weak_scaling_median"] for r in rows if "blocks" in r]
machine = [r["machine_scaling_median"] for r in rows if "blocks" in r]
ddp_cost = [r["ddp_vs_alone_median"] for r in rows if "blocks" in r]
fmt = lambda xs: f"{min(xs):.3f}-{max(xs):.3f}, median {statistics.median(xs):.3f}"
print(f"weak scaling, pairs of runs:        {fmt(eff)}")
print(f"weak scaling, interleaved (best):   {fmt(inter)}")
print(f"weak scaling, interleaved (median): {fmt(inter_med)}")
print(f"  = machine (rank 0 alone / every rank alone at once, medians): {fmt(machine)}")
print(f"  x data parallelism (every rank alone / DDP, medians):        {fmt(ddp_cost)}")
print(f"comm wait % of step (2 ranks):      {fmt([b['comm_wait_pct'] for _, b in pairs])}")
print(f"  of it, the communication alone %:   "
      f"{fmt([100 * b['comm_wait_last_rank_ms'] / b['step_ms'] for _, b in pairs])}")
print(f"bucket allreduce / bare Allreduce:  {fmt([b['bucket_vs_bare'] for _, b in pairs])}")
EOF
