"""Bytes between hosts and time of gradient allreduces, run across hosts (benchmarks/multi_host.sh runs
it on the network-namespace cluster, once with the hierarchical allreduce and once with
DISTBP_HIERARCHICAL_ALLREDUCE=0, MPI's flat allreduce over all ranks).

    launch/netns-cluster.sh run NAME -ppn 2 -- python benchmarks/multi_host_allreduce.py

Prints one JSON object (rank 0): the path the buckets took; for a 25 MB bucket (DDP's default size)
the median allreduce time and the bytes every host sent per allreduce, the same for MPI's allreduce
of a plain array of that size in the same job, and the median of paired ratios (MPI's time over the
bucket's, the two alternating); for DDP on the MLP
784-1024-1024-10 (float32, 256 samples per rank) the median step time and bytes sent per step.
Bytes are the kernel's count of what left each host's network interfaces (headers included), read
from /sys/class/net/*/statistics/tx_bytes on one rank per host, summed over hosts."""
from __future__ import annotations

import glob
import json
import statistics
import time

import numpy

import distbp as db
import distbp.distributed as dist
from distbp import nn
from distbp.distributed import DistributedDataParallel
from distbp.optim import SGD

REPEATS = 10


def tx_bytes() -> int:
    """Bytes sent so far by this host's interfaces other than loopback."""
    total = 0
    for path in glob.glob("/sys/class/net/*/statistics/tx_bytes"):
        if "/lo/" not in path:
            with open(path) as f:
                total += int(f.read())
    return total


def between_hosts(comm, node_rank: int, work, repeats: int = REPEATS) -> tuple:
    """(median seconds of `work()`, bytes all hosts sent per call), over `repeats` timed calls."""
    work()   # warm-up: first touch of the pages, connections
    comm.barrier()
    before = tx_bytes() if node_rank == 0 else 0
    times = []
    for _ in range(repeats):
        comm.barrier()
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    comm.barrier()
    sent = numpy.array([tx_bytes() - before if node_rank == 0 else 0], dtype=numpy.float64)
    comm.allreduce(sent)
    seconds = max(comm.allgather(numpy.array([statistics.median(times)])))[0]
    return float(seconds), float(sent[0]) / repeats


def main() -> None:
    comm = dist.init(threads=1)
    hosts = comm.hosts()
    node_rank = next(h.index(comm.rank) for h in hosts if comm.rank in h)
    bucket = comm.alloc_buffer(25 * 2**20 // 4, numpy.float32)
    bucket[...] = comm.rank

    def allreduce():
        comm.iallreduce(bucket).wait()
    t_bucket, bytes_bucket = between_hosts(comm, node_rank, allreduce)
    # MPI's own allreduce of the same bytes in the same job, alternating with the bucket's: a slow
    # spell of the shared machine then hits both alike (paired ratios)
    plain = numpy.full(bucket.size, float(comm.rank), dtype=numpy.float32)
    pairs = []
    for _ in range(REPEATS):
        pairs.append((between_hosts(comm, node_rank, lambda: comm.allreduce(plain), repeats=1)[0],
                      between_hosts(comm, node_rank, allreduce, repeats=1)[0]))
    t_flat, bytes_flat = between_hosts(comm, node_rank, lambda: comm.allreduce(plain))

    db.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    ddp = DistributedDataParallel(model, comm)
    opt = SGD(ddp.parameters(), lr=0.01)
    rng = numpy.random.default_rng(comm.rank)
    x = db.tensor(rng.standard_normal((256, 784)).astype(numpy.float32))
    y = rng.integers(0, 10, 256)

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    t_step, bytes_step = between_hosts(comm, node_rank, step)
    if comm.rank == 0:
        paths = sorted({ddp.reducer.comm.buffer_path(b.buffer) for b in ddp.reducer.buckets})
        print(json.dumps({"world_size": comm.size, "ranks_per_host": [len(h) for h in hosts],
                          "bucket_path": comm.buffer_path(bucket), "ddp_bucket_paths": paths,
                          "bucket_mb": bucket.nbytes / 2**20, "allreduce_25mb_ms": 1e3 * t_bucket,
                          "allreduce_25mb_bytes_between_hosts": bytes_bucket,
                          "mpi_allreduce_25mb_ms": 1e3 * t_flat, "mpi_allreduce_25mb_bytes_between_hosts": bytes_flat,
                          "mpi_over_bucket_paired_median": statistics.median(f / b for f, b in pairs),
                          "mlp_bytes_reduced_per_step": ddp.reducer.bytes_per_sync,
                          "mlp_step_ms": 1e3 * t_step, "mlp_bytes_between_hosts_per_step": bytes_step}))


if __name__ == "__main__":
    main()
