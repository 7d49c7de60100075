#!/usr/bin/env bash
# The GPU checks of issue #14 in one script, for a machine with one NVIDIA GPU (a few minutes):
#   1. cupy installed if missing (from $CUPY_WHEEL if given, else `pip install cupy-cuda12x`), NCCL
#      best effort (from $NCCL_WHEEL if given, else nvidia-nccl-cu12, which cupy 14 loads); versions and nvidia-smi saved;
#   2. tests/test_cuda.py with DISTBP_REQUIRE_GPU=1 (a skip is a failure): every layer, loss and
#      optimizer equal to the CPU to 1e-10 (float64), gradcheck on the GPU, the compiled fused
#      kernels against their formulas, NCCL on one GPU; plus the stand-in and kernel-formula tests;
#   3. distbp.bench --device cuda against PyTorch CUDA on MLP 784-1024-1024-10, batch 256, each in
#      its own process (benchmarks/gpu_bench.py; goal: within 1.5x of torch's step time);
#   4. 2 ranks on the one GPU: the doctor (which path a GPU bucket takes), DDP on the GPU equal to
#      one process (tests/distributed/test_cuda_ddp.py) and bench --device cuda under mpiexec -n 2,
#      with the automatic path (NCCL if it starts with two ranks on one GPU, else CUDA-aware MPI,
#      else host staging) and with DISTBP_GPU_COMM=host.
# Results go to $OUT (default ./gpu_check_out): one file per step and summary.txt (step, exit
# status). Without a GPU it still runs what needs none (step 2's stand-in tests, a rehearsal of the
# GPU tests with the numpy stand-in posing as cupy, step 3's plumbing on the CPU) and says GPU NOT
# RUN; its exit status is then 3. Usage:
#   bash benchmarks/gpu_check.sh                 # from the repository root; PYTHON=... to choose one
#   CUPY_WHEEL=/path/cupy_cuda12x-*.whl OUT=/tmp/out bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
BIN=$(dirname "$(command -v "$PY" || echo "$PY")")
MPIEXEC=$BIN/mpiexec
[ -x "$MPIEXEC" ] || MPIEXEC=mpiexec
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
FAILED=0

step() {  # step NAME COMMAND...: run it, keep its output in $OUT/NAME.log, note its exit status
  local name=$1; shift
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$OUT/$name.log"
  echo "$name rc=$rc" >> "$SUMMARY"
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

# ----- 1. the GPU, cupy, NCCL -----
(nvidia-smi || echo "nvidia-smi: not found") > "$OUT/nvidia-smi.txt" 2>&1
# installs only where a GPU answers (never into an environment on a machine without one), and
# not at all with GPU_CHECK_NO_INSTALL=1
INSTALL=0
[ -z "${GPU_CHECK_NO_INSTALL:-}" ] && nvidia-smi -L > /dev/null 2>&1 && INSTALL=1
if [ $INSTALL = 1 ] && ! "$PY" -c "import cupy" 2>/dev/null; then
  echo "== installing cupy (${CUPY_WHEEL:-cupy-cuda12x from the package index})"
  "$PY" -m pip install -q --retries 1 --timeout 20 "${CUPY_WHEEL:-cupy-cuda12x}" > "$OUT/install_cupy.log" 2>&1 || echo "cupy install failed (see install_cupy.log)"
fi
if [ $INSTALL = 1 ] && ! "$PY" -c "from cupy.cuda import nccl; assert nccl.available" 2>/dev/null; then
  "$PY" -m pip install -q --retries 1 --timeout 20 "${NCCL_WHEEL:-nvidia-nccl-cu12>=2.18.1,<3}" > "$OUT/install_nccl.log" 2>&1 || echo "NCCL install failed: the NCCL steps will say so"
  NCCL_LIB=$("$PY" -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))" 2>/dev/null || true)
  [ -n "$NCCL_LIB" ] && export LD_LIBRARY_PATH=$NCCL_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
"$PY" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "devices", cupy.cuda.runtime.getDeviceCount())
    from cupy.cuda import nccl
    print("nccl available", nccl.available, nccl.get_version() if nccl.available else "")
except Exception as e:  # noqa: BLE001
    print("cupy/nccl:", type(e).__name__, e)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("torch not installed")
EOF
cat "$OUT/versions.txt"
HAVE_GPU=0
"$PY" -c "import distbp, sys; sys.exit(0 if distbp.cuda_available() else 1)" && HAVE_GPU=1
echo "gpu usable: $HAVE_GPU" >> "$SUMMARY"

# ----- 2. the test suite's GPU tests (and the stand-in ones, which need no GPU) -----
step tests_standin "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_standin.py tests/test_kernels.py
if [ $HAVE_GPU = 0 ]; then  # the GPU tests' own code, on the numpy stand-in: a rehearsal, not a GPU run
  step rehearsal_tests_cuda_on_standin "$PY" benchmarks/gpu_check_rehearsal.py tests/test_cuda.py
  step rehearsal_ddp_2ranks_on_standin env OPENBLAS_NUM_THREADS=1 MPIEXEC_TIMEOUT=300 timeout 400 "$MPIEXEC" -n 2 \
    "$PY" -m mpi4py benchmarks/gpu_check_rehearsal.py --with-mpi -m mpi -s tests/distributed/test_cuda_ddp.py
fi
if [ $HAVE_GPU = 1 ]; then
  step tests_cuda env DISTBP_REQUIRE_GPU=1 "$PY" -m pytest -q -rs -p no:cacheprovider \
    --junitxml="$OUT/tests_cuda.xml" tests/test_cuda.py
fi

# ----- 3. distbp against PyTorch on the GPU, each in its own process -----
if [ $HAVE_GPU = 1 ]; then
  step bench_vs_torch "$PY" benchmarks/gpu_bench.py --device cuda --rounds 3 --steps 100 --warmup 10 \
    && tail -n 1 "$OUT/bench_vs_torch.log" > "$OUT/bench_vs_torch.json"
else
  step bench_plumbing_cpu "$PY" benchmarks/gpu_bench.py --device cpu --rounds 1 --steps 2 --warmup 1
fi

# ----- 4. two ranks on the one GPU -----
if [ $HAVE_GPU = 1 ]; then
  MPI="env OPENBLAS_NUM_THREADS=1 MPIEXEC_TIMEOUT=300 timeout 400 $MPIEXEC -n 2"
  step doctor_2ranks $MPI "$PY" -m distbp.doctor
  step ddp_2ranks env DISTBP_REQUIRE_GPU=1 $MPI "$PY" -m mpi4py -m pytest --with-mpi -q -s -p no:cacheprovider \
    --timeout=200 -m mpi tests/distributed/test_cuda_ddp.py
  step bench_2ranks $MPI "$PY" -m distbp.bench --device cuda --json --steps 50 --warmup 5
  step bench_2ranks_host_staging env DISTBP_GPU_COMM=host $MPI "$PY" -m distbp.bench --device cuda --json \
    --steps 50 --warmup 5
fi

echo "== summary ($SUMMARY)"
if [ $HAVE_GPU = 0 ]; then
  echo "GPU NOT RUN: no usable GPU here; only the checks that need none ran" | tee -a "$SUMMARY"
  cat "$SUMMARY"
  exit 3
fi
cat "$SUMMARY"
exit $FAILED
