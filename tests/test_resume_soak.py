"""Soak: a 2-rank job killed with SIGKILL at random moments, DISTBP_SOAK_CYCLES times (50 by default), each
time resumed with `--resume`, ends bitwise equal to the run that was never interrupted.

A cycle's kill lands either at a random time after launch (start-up, the claim of the folder, the first
steps) or a few steps after a random target step (inside a step or a save). After every kill each
checkpoint on disk must load (checksum intact) and the newest may not go back."""
import os
import random
import time

import numpy as np
import pytest
import train_jobs as jobs
from safetensors.numpy import load_file

from distbp.training import checkpoint

CYCLES = int(os.environ.get("DISTBP_SOAK_CYCLES", "50"))
# xor: 700 training samples, batch 20: 35 steps an epoch, 350 in all; adam and dropout: optimizer and RNG state
ARGS = ["--no-progress", "--dataset", "xor", "--hidden", "8", "--batch-size", "20", "--epochs", "10", "--optimizer",
        "adam", "--lr", "0.01", "--dropout", "0.2", "--checkpoint-every", "1"]
TOTAL = 350

pytestmark = [pytest.mark.skipif(not jobs.MPIEXEC.exists() or not os.path.isdir("/proc"),
                                 reason="needs mpiexec and /proc"), pytest.mark.timeout(900)]


def _step(folder) -> int:
    path = checkpoint.latest(folder)
    return 0 if path is None else int(os.path.basename(path)[5:13])


def _kill_at_random(proc, tag: str, folder, rng: random.Random) -> bool:
    """Kill the job at a random moment; False when it ended by itself first (the run was complete)."""
    if rng.random() < 0.3:   # start-up, the claim of the folder or the first step: a random time, cut short
        first, until = _step(folder), time.monotonic() + rng.uniform(0.0, 1.5)   # by the first new checkpoint
        while time.monotonic() < until and _step(folder) == first and proc.poll() is None:
            time.sleep(0.002)
    else:
        target = min(_step(folder) + rng.randint(1, 4), TOTAL)
        deadline = time.monotonic() + 120
        while _step(folder) < target and proc.poll() is None:
            assert time.monotonic() < deadline, f"no checkpoint of step {target} in 120 s"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.004))   # into the next step or save
    alive = proc.poll() is None
    jobs.kill_job(tag)
    return alive


def test_kill_9_and_resume_cycles_on_two_ranks_end_bitwise_as_the_unbroken_run(tmp_path):
    ref, soak = tmp_path / "ref", tmp_path / "soak"
    unbroken = jobs.run(2, *ARGS, "--checkpoint-dir", ref)
    assert unbroken.returncode == 0, unbroken.stderr
    rng = random.Random(16)
    t0, progressed, interrupted_saves = time.monotonic(), 0, 0
    for cycle in range(CYCLES):
        before = _step(soak)
        resume = ["--resume"] if before else []          # killed before its first save: a new run
        tag = f"soak-{os.getpid()}-{cycle}"
        proc = jobs.start(2, *ARGS, "--checkpoint-dir", soak, *resume, tag=tag)
        killed = _kill_at_random(proc, tag, soak, rng)
        _, err = proc.communicate(timeout=60)
        assert killed or proc.returncode == 0, (cycle, proc.returncode, err[-3000:])   # killed, or finished
        # nothing lost or spoiled: every checkpoint loads, and the newest never goes back
        for path in checkpoint.list_checkpoints(soak):
            checkpoint.load(path)
        progressed += _step(soak) > before
        interrupted_saves += any(name.endswith(".tmp") for name in os.listdir(soak))
    cycles_s = time.monotonic() - t0
    start = _step(soak)
    final = jobs.run(2, *ARGS, "--checkpoint-dir", soak, *(["--resume"] if start else []))
    assert final.returncode == 0, final.stderr
    print(f"\n{CYCLES} kill -9 cycles in {cycles_s:.1f} s; {progressed} advanced the run, {interrupted_saves} "
          f"killed a save mid-write; the last resume started at step {start}")
    assert not any(name.endswith(".tmp") for name in os.listdir(soak))
    assert progressed >= CYCLES // 2
    a, b = load_file(str(checkpoint.latest(ref))), load_file(str(checkpoint.latest(soak)))
    assert checkpoint.latest(soak).endswith(f"ckpt-{TOTAL:08d}.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), "weights or optimizer state differ"
    ra, rb = checkpoint.load(checkpoint.latest(ref)).meta, checkpoint.load(checkpoint.latest(soak)).meta
    assert (ra["step"], ra["epoch"], ra["batch"], ra["rng"]) == (rb["step"], rb["epoch"], rb["batch"], rb["rng"])
