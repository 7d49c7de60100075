#!/usr/bin/env bash
# Several hosts on one machine (launch/netns-cluster.sh; root and `ip`): the hierarchical allreduce
# against MPI's flat one on 2 hosts x 2 ranks, and weak scaling of the MLP 784-1024-1024-10.
#   bash benchmarks/multi_host.sh
# For each of hierarchical and flat (DISTBP_HIERARCHICAL_ALLREDUCE=0): benchmarks/multi_host_allreduce.py
# (25 MB bucket: time and bytes between hosts; DDP on the MLP: step time and bytes between hosts per
# step), then `distbp.bench --scaling` (256 samples per rank, 1 BLAS thread) at 2 hosts x 2 ranks and
# 2 hosts x 1 rank. Every "host" shares this machine's cores: scaling is bounded by the cores, and
# timings on a shared machine vary up to 2x run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-$PWD/.venv/bin/python} PYTHONPATH=$PWD OPENBLAS_NUM_THREADS=1
name=b$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
trap 'bash launch/netns-cluster.sh down "$name"' EXIT
bash launch/netns-cluster.sh up "$name" 2
BENCH=(-m distbp.bench --sizes 784,1024,1024,10 --batch-per-rank 256 --threads 1 --steps 5 --warmup 2 --scaling 5 --json)
for mode in hierarchical flat; do
  flag=1; [ "$mode" = flat ] && flag=0
  export DISTBP_HIERARCHICAL_ALLREDUCE=$flag
  echo "== $mode: 2 hosts x 2 ranks, 25 MB bucket and DDP MLP step"
  bash launch/netns-cluster.sh run "$name" -ppn 2 -- "$PYTHON" benchmarks/multi_host_allreduce.py
  for ppn in 2 1; do
    echo "== $mode: weak scaling, 2 hosts x $ppn rank(s)"
    bash launch/netns-cluster.sh run "$name" -ppn "$ppn" -- "$PYTHON" "${BENCH[@]}"
  done
done
