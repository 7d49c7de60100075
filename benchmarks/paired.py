"""Paired timing of two or more implementations of one training step, each in its own process.

Why separate processes: two thread pools in one process (NumPy's BLAS and torch's OpenMP, or two
BLAS builds) spin over each other, so whichever side ran second in a shared process measured the
other's idle workers as well. Here every side is a worker process, started once with the same
thread count set in its environment before NumPy or torch load, and the coordinator asks the
workers in turn for a block of N steps: ours, peer, ours, peer, ... A slow spell of the shared
machine then hits neighbouring blocks alike, so each round's ratio (ours' block against the peer's
block of the same round) is steadier than a ratio of two separate medians.

Coordinator side: `Workers`/`Worker`, `run_cases` (per case: set up every side, check that one step
gives the same weights everywhere, `calibrate`, `alternate`, `summarize`), `print_table`.
Worker side: `serve_steps(build)`, which answers the coordinator's JSON lines until told to quit.
NumPy is imported only where arrays are handled, never before a worker has set its threads."""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def add_timing_args(ap, blocks: int = 10, block_seconds: float = 0.3) -> None:
    """The options every paired benchmark takes."""
    ap.add_argument("--threads", type=int, default=2, help="BLAS / OpenMP / torch threads of every side")
    ap.add_argument("--blocks", type=int, default=blocks, help="rounds of alternating blocks (one per side)")
    ap.add_argument("--block-seconds", type=float, default=block_seconds,
                    help="about how long one block runs; sets its step count, the same for every side")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of each side first")
    # OpenBLAS's idle workers spin about 2^28 cycles (~0.1 s) before they sleep: without a pause, the
    # side that ran before would take CPU from the side now timed
    ap.add_argument("--gap", type=float, default=0.3, help="seconds of rest before each block")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave each side with the allocator settings it starts with; by default every side "
                         "keeps freed memory as `import distbp` arranges, so only the step itself is compared")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def check_timing_args(ap, args) -> None:
    if args.threads < 1 or args.blocks < 1 or args.warmup < 0 or args.block_seconds <= 0 or args.gap < 0:
        ap.error("--threads and --blocks must be >= 1, --warmup and --gap >= 0, --block-seconds > 0")


# `import distbp` has glibc keep freed blocks for reuse (distbp/_process.py); a peer process that does not
# import distbp would otherwise pay page faults for every large temporary of every step. These variables
# give every side that same setting from the start (glibc reads them at start-up).
SAME_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


def worker_env(threads: int, pythonpath: str | None = None, same_malloc: bool = True) -> dict:
    """The environment of a worker: every thread pool sized before any library reads it, and (unless
    `same_malloc` is False) the same allocator settings for every side."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **{v: str(threads) for v in THREAD_VARS})
    if same_malloc:
        env.update(SAME_MALLOC)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p)
    return env


class WorkerError(RuntimeError):
    pass


class Worker:
    """One side of the comparison: `argv` started once, spoken to in JSON lines over its stdin/stdout
    (its stderr is ours, so its tracebacks and warnings show)."""

    def __init__(self, name: str, argv: list[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def call(self, cmd: str, **fields) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"{self.name} worker exited (status {self.proc.wait()}) during {cmd!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.name} worker failed in {cmd!r}:\n{reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Workers(dict):
    """name -> Worker, closed together (a with-block, so no worker outlives an error)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for w in self.values():
            w.close()


def calibrate(worker: Worker, block_seconds: float, min_steps: int = 3) -> int:
    """Steps per block: enough for `block_seconds` of `worker`'s step. Probes of 1, 2, 4, ... steps
    until one lasts a quarter block, then two more; the fastest step of any probe counts, so one
    probe slowed by a busy machine does not shrink every block."""
    steps, best = 1, float("inf")
    for _ in range(30):
        sec = worker.call("run", steps=steps)["seconds"]
        best = min(best, sec / steps)
        if sec >= block_seconds / 4:
            break
        steps *= 2
    for _ in range(2):
        best = min(best, worker.call("run", steps=steps)["seconds"] / steps)
    return max(min_steps, math.ceil(block_seconds / max(best, 1e-9)))


def alternate(workers: dict, steps: int, blocks: int, gap: float) -> dict:
    """Seconds of each block, per side: round r runs one block of `steps` steps on every side, in the
    dict's order. `gap` seconds of rest before each block let the previous side's threads go to sleep."""
    seconds = {name: [] for name in workers}
    for _ in range(blocks):
        for name, w in workers.items():
            time.sleep(gap)
            seconds[name].append(w.call("run", steps=steps)["seconds"])
    return seconds


def _spread(values: list) -> dict:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "min": min(values), "max": max(values)}


def summarize(seconds: dict, ours: str, samples_per_block: int) -> dict:
    """Per side samples/s (median over its blocks); per peer the paired speed ratio ours/peer of each
    round (the peer's block time over ours': above 1, ours is faster), its median and spread."""
    out = {"samples_per_sec": {n: samples_per_block / statistics.median(s) for n, s in seconds.items()},
           "paired_ratio": {}}
    for peer, s in seconds.items():
        if peer != ours:
            out["paired_ratio"][peer] = _spread([p / o for o, p in zip(seconds[ours], s)])
    return out


def run_cases(cases: list[dict], workers: Workers, ours: str, args, lr: float = 0.01,
              check_lr: float = 0.1) -> list[dict]:
    """One row per case. `ours` (the first worker) builds the case's model and data, the others load
    them; one step at `check_lr` must then give every side the same weights (else the timings would
    compare different work); then `args.blocks` rounds of alternating blocks at `lr`."""
    if next(iter(workers)) != ours:
        raise ValueError(f"{ours!r} must be the first worker: it makes the weights the others load")
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="distbp-bench-") as tmp:
            init = os.path.join(tmp, "init.npz")
            info = {}
            for name, w in workers.items():
                where = {"export": init} if name == ours else {"load": init}
                info[name] = w.call("setup", case=case, lr=lr, warmup=args.warmup, **where)
            check_same_step(workers, ours, tmp, init, check_lr)
        steps = calibrate(workers[ours], args.block_seconds)
        seconds = alternate(workers, steps, args.blocks, args.gap)
        rows.append({"label": case["label"], "batch": case["batch"], "steps": steps, "blocks": args.blocks,
                     **summarize(seconds, ours, case["batch"] * steps), "block_seconds": seconds,
                     "distbp_path": {n: i.get("distbp") for n, i in info.items()}})
    return rows


def check_same_step(workers: dict, ours: str, tmp: str, init: str, lr: float,
                    rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """One step from the shared weights, on every side: the weights after it must agree with ours
    (float32 rounding aside) and differ from where they started. WorkerError otherwise."""
    import numpy as np
    after = {}
    for name, w in workers.items():
        out = os.path.join(tmp, f"check-{name}.npz")
        w.call("check", lr=lr, out=out)
        with np.load(out) as f:
            after[name] = dict(f)
    with np.load(init) as f:
        start = {k: v for k, v in f.items() if not k.startswith("__")}
    want = after[ours]
    unmoved = [k for k, v in want.items() if v.dtype.kind == "f" and np.array_equal(v, start[k])]
    if unmoved:
        raise WorkerError(f"{ours}: one step left {', '.join(unmoved)} unchanged; the check would prove nothing")
    for name, got in after.items():
        if sorted(got) != sorted(want):
            raise WorkerError(f"{name} has the state {sorted(got)}, {ours} has {sorted(want)}")
        for k, v in got.items():
            if not np.allclose(v, want[k], rtol=rtol, atol=atol):
                diff = float(np.max(np.abs(v.astype(np.float64) - want[k])))
                raise WorkerError(f"{name} and {ours} disagree on {k} after one step (max |diff| {diff:.3g}): "
                                  "the timings would compare different work")


def print_table(title: str, rows: list[dict], sides: list[str], ours: str) -> None:
    """rows: {"label", "batch", "steps", **summarize(...)}."""
    peers = [s for s in sides if s != ours]
    print(title)
    print(f"{ours}/peer: the paired speed ratio, median [quartiles] (range) over rounds; above 1, {ours} is faster")
    head = f"{'model':<24}{'batch':>6}{'steps':>6}" + "".join(f"{s + ' samples/s':>18}" for s in sides)
    print(head + "".join(f"  {ours + '/' + p:<36}" for p in peers))
    for r in rows:
        line = f"{r['label']:<24}{r['batch']:>6}{r['steps']:>6}"
        line += "".join(f"{r['samples_per_sec'][s]:>18.0f}" for s in sides)
        for p in peers:
            q = r["paired_ratio"][p]
            cell = f"{q['median']:.3f} [{q['q1']:.3f}-{q['q3']:.3f}] ({q['min']:.2f}-{q['max']:.2f})"
            line += f"  {cell:<36}"
        print(line.rstrip())


def print_json(meta: dict, rows: list[dict]) -> None:
    print(json.dumps({**meta, "results": rows}))


def serve(handlers: dict) -> None:
    """Worker loop: one JSON command a line on stdin, one JSON reply a line. `handlers[cmd](**fields)`
    returns the reply's dict; an exception becomes {"error": traceback}. The replies go to the original
    stdout; anything a library prints goes to stderr instead, so it cannot corrupt the protocol."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = handlers[cmd](**msg)
        except Exception:  # noqa: BLE001 - the coordinator reports it with the side's name
            reply = {"error": traceback.format_exc()}
        replies.write(json.dumps(reply) + "\n")


def serve_steps(build) -> None:
    """Worker loop of one side. `build(case, x, y, lr, state) -> (step, params)`: the side's model and
    optimizer for `case` at learning rate `lr`, starting from `state` (name -> array, the model's
    state_dict) or, when `state` is None, freshly initialised from case["seed"]; `step()` runs one
    training step on (x, y); `params()` returns copies of the state_dict's arrays.

    setup(case, lr, warmup, export=path | load=path): builds the timed model; `export` writes its
    initial state and the data to `path`, `load` reads them from there. check(lr, out): a fresh model
    from the same start takes one step, its state goes to `out`. run(steps): times `steps` steps."""
    import numpy as np
    held = {}

    def setup(case, lr, warmup, export=None, load=None):
        state = None
        if load is not None:
            with np.load(load) as f:
                state = dict(f)
            x, y = state.pop("__x__"), state.pop("__y__")
        else:
            rng = np.random.default_rng(case.get("seed", 0))
            x = rng.standard_normal((case["batch"], *case["input_shape"])).astype(np.float32)
            y = rng.integers(0, case["num_outputs"], case["batch"])
        step, params = build(case, x, y, lr, state)
        held.update(case=case, x=x, y=y, state=state if state is not None else params(), step=step)
        if export is not None:
            np.savez(export, __x__=x, __y__=y, **held["state"])
        for _ in range(warmup):
            step()
        return {"distbp": getattr(sys.modules.get("distbp"), "__file__", None)}

    def check(lr, out):
        step, params = build(held["case"], held["x"], held["y"], lr, held["state"])
        step()
        np.savez(out, **params())
        return {}

    def run(steps):
        step = held["step"]
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return {"seconds": time.perf_counter() - t0}

    serve({"setup": setup, "check": check, "run": run})
