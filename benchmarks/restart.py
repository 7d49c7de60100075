"""How long a restart takes: `python -m distbp.launch` with a rank killed by DISTBP_FAULT.

    python benchmarks/restart.py [--nproc 2] [--fault-step 37] [--checkpoint-every 20] [--repeats 3]

Each repeat trains the zoo MLP on the digits (float32) with checkpoints every --checkpoint-every steps,
rank 1 killed after step --fault-step, and --max-restarts 1. It reports, from the lines the job
prints: seconds from the kill (the time the fault line gives) to the restarted run's "resumed from"
line (printed after it has loaded the data, the model and the checkpoint, just before its first
step), the part of it spent until mpiexec had ended the failed job, and the steps lost (fault step
minus the checkpoint's)."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time


def run_once(args) -> dict:
    with tempfile.TemporaryDirectory() as ck:
        env = dict(os.environ, DISTBP_FAULT=f"1:{args.fault_step}", OPENBLAS_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "distbp.launch", "--nproc", str(args.nproc), "--max-restarts", "1", "--",
               "--steps", str(args.steps), "--checkpoint-every", str(args.checkpoint_every), "--checkpoint-dir", ck,
               "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        lines = []

        def read(stream):
            for line in stream:
                lines.append((time.time(), line.rstrip("\n")))
        threads = [threading.Thread(target=read, args=(s,)) for s in (proc.stdout, proc.stderr)]
        for t in threads:
            t.start()
        proc.wait()
        for t in threads:
            t.join()
    if proc.returncode != 0:
        sys.exit("the job failed:\n" + "\n".join(text for _, text in lines[-20:]))
    fault = next(float(m.group(1)) for _, text in lines if (m := re.search(r"after step \d+ \(at ([\d.]+)\)", text)))
    ended = next(t for t, text in lines if "the job ended with exit status" in text)
    resumed_at, resumed = next((t, text) for t, text in lines if text.startswith("resumed from"))
    step = int(re.search(r"at step (\d+)", resumed).group(1))
    return {"kill_to_training_s": resumed_at - fault, "kill_to_job_end_s": ended - fault,
            "steps_lost": args.fault_step - step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--fault-step", type=int, default=37)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    for _ in range(args.repeats):
        print(json.dumps(run_once(args)), flush=True)


if __name__ == "__main__":
    main()
