"""Check that this machine (and, under mpiexec, every rank) can run distbp, and say what it found.

    python -m distbp.doctor                       # this process: versions, MPI library, BLAS, GPU
    mpiexec -n 4 python -m distbp.doctor          # also: every rank's host, cores and threads, and
                                                  # collectives between the ranks, checked and timed
    python -m distbp.doctor --json                # one JSON object, for a bug report

Every rank runs the same collectives in the same order whatever it finds, so a problem on one rank
is reported, never a hang. Exit status 0 when every check passes (warnings included), 1 when one
fails; each failure is one line starting with FAIL.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import time

import numpy

from . import __version__, backend
from ._env import EnvError
from .distributed import end_job, init, launched_by_mpi
from .distributed.comm.device import transfer_path
from .distributed.gpu import DeviceError, last_choice, pin_device, setup_cuda
from .distributed.runtime import local_size

BANDWIDTH_MB = 16  # the allreduce size the bus bandwidth is quoted at (docs/distributed.md)
BUCKETS = (("4 KB", 1024), ("25 MB", 25 * 2**20 // 4))  # DDP's default bucket size is 25 MB
_PATHS = {"none": lambda hosts: "a world of one (no communication)",
          "shared memory": lambda hosts: "node shared memory",
          "hierarchical": lambda hosts: f"shared memory within each of {len(hosts)} hosts and MPI between them",
          "mpi": lambda hosts: "MPI" + (" (hosts run different numbers of ranks)"
                                        if len({len(h) for h in hosts}) > 1 else "")}


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return getattr(module, "__version__", "installed")


def _blas() -> list:
    from threadpoolctl import threadpool_info
    return [f"{p.get('internal_api')} {p.get('version')} (threads={p.get('num_threads')})"
            for p in threadpool_info() if p.get("user_api") == "blas"]


def _mpi_library() -> str | None:
    if not launched_by_mpi():
        return None
    from mpi4py import MPI
    return " ".join(MPI.Get_library_version().split("\n", 1)[0].split())


def _gpus() -> str:
    if not backend.cuda_available():
        return "none usable (cupy " + ("installed" if _version("cupy") else "not installed") + ")"
    cp = backend.cupy_module()
    return f"{cp.cuda.runtime.getDeviceCount()} (cupy {cp.__version__})"


def this_rank() -> dict:
    """What one process sees; the same keys on every rank."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return {"host": socket.gethostname(), "pid": os.getpid(), "cpus": cpus,
            "python": platform.python_version(), "distbp": __version__, "numpy": numpy.__version__,
            "mpi4py": _version("mpi4py"), "mpi_library": _mpi_library(), "blas": _blas(),
            "safetensors": _version("safetensors"), "tqdm": _version("tqdm"), "gpus": _gpus(),
            "mpiexec": shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")}


def version_mismatches(ranks: list) -> list:
    """FAIL lines for software that differs between ranks (a classic source of silent desyncs)."""
    lines = []
    for key in ("python", "distbp", "numpy", "mpi4py", "mpi_library"):
        seen = {}
        for r, info in enumerate(ranks):
            seen.setdefault(info[key], []).append(r)
        if len(seen) > 1:
            parts = "; ".join(f"{value} on ranks {rs}" for value, rs in seen.items())
            lines.append(f"FAIL {key} differs between ranks: {parts}")
    return lines


def oversubscription(ranks: list) -> list:
    """WARN lines for hosts whose ranks ask for more BLAS threads than they have cores."""
    lines = []
    for host in sorted({info["host"] for info in ranks}):
        here = [info for info in ranks if info["host"] == host]
        threads = sum(_threads(info) for info in here)
        cores = max(info["cpus"] for info in here)
        if len(here) > cores:
            lines.append(f"WARN {host}: {len(here)} ranks on {cores} cores share them: fine for tests, "
                         "slow for training")
        elif threads > cores:
            lines.append(f"WARN {host}: its {len(here)} ranks run {threads} BLAS threads on {cores} cores; "
                         "call distbp.distributed.init() (it gives each rank cores/ranks threads) or set "
                         "OPENBLAS_NUM_THREADS")
    return lines


def _threads(info: dict) -> int:
    counts = [int(s.rsplit("threads=", 1)[1].rstrip(")")) for s in info["blas"] if "threads=" in s]
    return max(counts, default=1)


def check_collectives(comm) -> tuple[list, dict]:
    """Allreduce, broadcast and the shared-memory bucket path give the right numbers; time one
    16 MB allreduce. Returns (lines, figures)."""
    lines, figures = [], {}
    n, r = comm.size, comm.rank
    got = comm.allreduce(numpy.array([r + 1.0]))[0]
    want = n * (n + 1) / 2
    lines.append(("OK  " if got == want else "FAIL") + f" allreduce: sum of rank+1 over {n} ranks = {got:g} "
                 f"(expected {want:g})")
    value = comm.bcast(numpy.array([42.0 if r == 0 else -1.0]))[0]
    lines.append(("OK  " if value == 42.0 else "FAIL") + f" broadcast from rank 0: {value:g} (expected 42)")
    hosts = comm.hosts()
    figures["hosts"] = len(hosts)
    paths = {}
    for label, numel in BUCKETS:  # how DDP allocates its gradient buckets, and what moves them
        bucket = comm.alloc_buffer(numel, numpy.float32)
        times = []
        for _ in range(3):  # the first call also maps the fresh pages
            bucket[...] = r + 1
            t0 = time.perf_counter()
            comm.iallreduce(bucket).wait()
            times.append(time.perf_counter() - t0)
        path = paths[label] = comm.buffer_path(bucket)
        ok = bool(numpy.all(bucket == want))
        lines.append(("OK  " if ok else "FAIL") + f" {label} gradient-bucket allreduce through {_PATHS[path](hosts)}"
                     + (f": {1e3 * min(times[1:]):.2f} ms" if n > 1 else ""))
        del bucket
    figures["bucket_paths"] = paths
    figures["bucket_path"] = paths[BUCKETS[0][0]]
    if n > 1:
        buf = numpy.ones(BANDWIDTH_MB * 2**20 // 4, dtype=numpy.float32)
        times = []
        for _ in range(7):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce(buf)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times[2:])
        figures["allreduce_16mb_ms"] = 1e3 * sec
        figures["allreduce_16mb_bus_gbps"] = 2 * (n - 1) / n * buf.nbytes / sec / 1e9
        lines.append(f"OK   {BANDWIDTH_MB} MB allreduce: {1e3 * sec:.2f} ms, "
                     f"{figures['allreduce_16mb_bus_gbps']:.2f} GB/s bus bandwidth")
    return lines, figures


def check_gpu_buckets(comm) -> tuple[list, dict]:
    """The path a GPU gradient bucket takes (distbp/distributed/gpu.py), checked with a sum; or why
    there is none. Collective: every rank takes the same branch."""
    problems = comm.allgather_obj(backend.cuda_problem())
    missing = [(r, p) for r, p in enumerate(problems) if p]
    if missing:
        r, why = missing[0]
        line = (f"OK   GPU gradient buckets: no GPU (rank {r}: {why}); --device cuda is unavailable, "
                "gradients stay in host memory")
        return [line], {"gpu_bucket_path": "no GPU"}
    try:
        dev = setup_cuda(comm)
    except DeviceError as e:
        return [f"FAIL GPU gradient buckets: {e}"], {"gpu_bucket_path": "error"}
    cp = backend.cupy_module()
    bucket = dev.alloc_buffer(1024, numpy.float32, cp)
    bucket[...] = comm.rank + 1
    dev.iallreduce(bucket).wait()
    want = comm.size * (comm.size + 1) / 2
    ok = bool((bucket == want).all())
    path = transfer_path(dev, bucket)
    words = "a world of one (no communication)" if path == "none" else path
    lines = [("OK  " if ok else "FAIL") + f" GPU gradient-bucket allreduce through {words}"]
    lines += [f"OK   GPU path passed over: {why}" for why in last_choice()[1]] if comm.size > 1 else []
    return lines, {"gpu_bucket_path": path}


def diagnose(comm) -> dict:
    pin_device(comm)  # this rank's GPU, before anything allocates on one (a no-op without GPUs)
    ranks = comm.allgather_obj(this_rank())
    lines, figures = check_collectives(comm)
    gpu_lines, gpu_figures = check_gpu_buckets(comm)
    lines, figures = lines + gpu_lines, {**figures, **gpu_figures}
    lines += version_mismatches(ranks) + oversubscription(ranks)
    if ranks[0]["mpiexec"] is None:
        lines.append("WARN no mpiexec next to this python or on PATH: `pip install mpich` (or use your MPI's)")
    hosts = comm.hosts()
    return {"world_size": comm.size, "ranks_per_host": local_size(comm), "ranks": ranks,
            "host_ranks": [{"host": ranks[h[0]]["host"], "ranks": h} for h in hosts], "checks": lines, **figures}


def _print_report(report: dict) -> None:
    first = report["ranks"][0]
    print(f"distbp {first['distbp']}, Python {first['python']}, numpy {first['numpy']}, "
          f"mpi4py {first['mpi4py'] or 'not installed'}")
    print(f"MPI library: {first['mpi_library'] or '(not launched by MPI: a world of one)'}")
    print(f"mpiexec: {first['mpiexec'] or 'not found'}")
    print(f"BLAS: {', '.join(first['blas']) or 'not found by threadpoolctl'}")
    print(f"safetensors {first['safetensors'] or 'MISSING'}, tqdm {first['tqdm'] or 'MISSING'}; "
          f"GPUs: {first['gpus']}")
    hosts = report["host_ranks"]
    print(f"{report['world_size']} rank(s) on {len(hosts)} host(s): "
          + ", ".join(f"{h['host']} (ranks {_ranges(h['ranks'])})" for h in hosts))
    for r, info in enumerate(report["ranks"]):
        print(f"  rank {r}: host {info['host']} pid {info['pid']}, {info['cpus']} cores, "
              f"BLAS {', '.join(info['blas']) or '-'}")
    for line in report["checks"]:
        print(line)


def _ranges(ranks: list) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs, start = [], ranks[0]
    for a, b in zip(ranks, ranks[1:] + [None]):
        if b != a + 1:
            runs.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(runs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m distbp.doctor", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = p.parse_args(argv)
    try:
        comm = init()
    except EnvError as e:   # a bad DISTBP_* setting: one line, exit 2, on every rank
        return end_job(2, f"distbp.doctor: error: {e}")
    report = diagnose(comm)
    if comm.rank == 0:
        if args.json:
            print(json.dumps(report))
        else:
            _print_report(report)
    return 1 if any(line.startswith("FAIL") for line in report["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
