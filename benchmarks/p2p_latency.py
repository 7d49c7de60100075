"""How soon a waiting receiver gets a message whose sender went straight back to computing.

    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/p2p_latency.py [--rounds 60]
    MPIR_CVAR_CH4_CMA_ENABLE=0 OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python benchmarks/p2p_latency.py

Rank 1 posts its receive and waits; rank 0 computes 1 ms (so rank 1 is surely waiting), starts
the send, then computes 3 ms of matrix products with no MPI call before it waits on the send.
Printed: the median and 90th percentile, over rounds, of the time from the send's start returning
on rank 0 to the receive's end on rank 1 (perf_counter, the system's monotonic clock, which both
ranks share), for 4, 64 and 128 KB, and the time a receive of an already arrived message takes.
If MPI moved a message only while its sender is inside an MPI call, the latency would be the 3 ms
of compute; a receiver that copies the data itself (MPICH's CMA) gets it at once.

Three ways to send and receive: `raw` (mpi4py Isend/Irecv, spinning on Test), `comm` (distbp's
MPIComm.isend/irecv: watched waits that nap between tests) and `p2p` (send_array/recv_array, the
checked transfers the pipeline stages use).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from distbp.distributed import init, p2p

_A = numpy.random.default_rng(0).random((256, 256), dtype=numpy.float32)


def _compute(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        _A @ _A


def _ms(values) -> str:
    v = sorted(values)
    return f"median {1e3 * statistics.median(v):.3f} ms, 90th pct {1e3 * v[9 * len(v) // 10]:.3f} ms"


def _send(comm, mode, data, tag):
    """Start sending `data` to rank 1; returns what finishes the send."""
    if mode == "raw":
        return comm.comm.Isend(data, 1, tag=tag).Wait
    if mode == "comm":
        return comm.isend(data, 1, tag).wait
    return p2p.send_array(comm, data, 1, tag).wait


def _recv(comm, mode, shape, tag) -> None:
    if mode == "raw":
        req = comm.comm.Irecv(numpy.empty(shape, numpy.float32), 0, tag=tag)
        while not req.Test():
            pass
    elif mode == "comm":
        comm.irecv(numpy.empty(shape, numpy.float32), 0, tag).wait()
    else:
        p2p.recv_array(comm, shape, numpy.float32, 0, tag).wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--modes", default="raw,comm,p2p")
    args = p.parse_args(argv)
    comm = init(threads=1)
    if comm.size != 2:
        raise SystemExit("run on 2 ranks: mpiexec -n 2 python benchmarks/p2p_latency.py")
    mpi, rank = comm.comm, comm.rank
    for mode in args.modes.split(","):
        for nbytes in (4096, 65536, 131072):
            shape = (16, nbytes // 64)
            data = numpy.ones(shape, dtype=numpy.float32)

            latency, arrived = [], []
            for i in range(args.rounds):
                tag = p2p.tag(i % 64, "forward")
                comm.barrier()
                if rank == 0:  # the receiver waits; the sender computes right after its send
                    _compute(1.0)
                    finish = _send(comm, mode, data, tag)
                    started = time.perf_counter()
                    _compute(3.0)
                    finish()
                    mpi.send(started, 1, tag=30000)
                else:
                    _recv(comm, mode, shape, tag)
                    done = time.perf_counter()
                    latency.append(done - mpi.recv(source=0, tag=30000))
                comm.barrier()
                if rank == 0:  # the message arrives while the receiver computes
                    finish = _send(comm, mode, data, tag)
                    _compute(3.0)
                    finish()
                else:
                    _compute(2.0)
                    t0 = time.perf_counter()
                    _recv(comm, mode, shape, tag)
                    arrived.append(time.perf_counter() - t0)
            if rank == 1:
                skip = min(10, args.rounds // 2)  # warm-up
                print(f"{mode:<4} {nbytes // 1024:>3} KB: send returned -> receive done {_ms(latency[skip:])}; "
                      f"receiving an arrived message {_ms(arrived[skip:])}", flush=True)
    comm.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
