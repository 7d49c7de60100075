"""`python -m distbp.train` launched as a user would, alone (1 rank) or under mpiexec (N ranks), and a
whole job killed with SIGKILL as a scheduler would (imported by name: tests/ is on sys.path under pytest)."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = Path(sys.executable).parent / "mpiexec"   # the mpich wheel puts it beside python
TAG = "DISTBP_TEST_JOB"                              # marks every process of a job, to kill them all


def command(ranks: int, *args) -> list:
    train = [sys.executable, "-m", "distbp.train", *map(str, args)]
    return train if ranks == 1 else [str(MPIEXEC), "-n", str(ranks), *train]


def environment(ranks: int, tag: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    for key in ("PMI_RANK", "PMI_SIZE", "DISTBP_NO_MPI"):
        env.pop(key, None)
    if ranks == 1:
        env["DISTBP_NO_MPI"] = "1"   # one process, no launcher: the world of one
    if tag:
        env[TAG] = tag
    return env


def run(ranks: int, *args, timeout: int = 120, cwd=None) -> subprocess.CompletedProcess:
    """Run to the end; the result has `seconds`, the wall time it took."""
    t0 = time.monotonic()
    proc = subprocess.run(command(ranks, *args), capture_output=True, text=True, env=environment(ranks),
                          timeout=timeout, check=False, cwd=cwd)
    proc.seconds = time.monotonic() - t0
    return proc


def start(ranks: int, *args, tag: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """Start a job in the background; `kill_job(tag)` ends every process of it."""
    return subprocess.Popen(command(ranks, *args), env=environment(ranks, tag), stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


def _tagged(tag: str) -> list:
    marker = f"{TAG}={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:   # gone meanwhile, or a zombie's
                continue
    return found


def kill_job(tag: str, within: float = 60.0) -> None:
    """SIGKILL mpiexec, its proxy and every rank of the job (hydra puts each in its own session, so a
    process group would miss them), again until none is left alive."""
    deadline = time.monotonic() + within
    while pids := _tagged(tag):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.monotonic() < deadline, f"processes {pids} of job {tag} survive SIGKILL"
        time.sleep(0.01)


def one_line_error(proc, words: str, ranks: int) -> str:
    """The job failed as a user mistake: exit status 2, one line naming it, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert 1 <= len(lines) <= ranks, proc.stderr          # at most one line per rank, each the error
    assert all("distbp.train: error: " in line and words in line for line in lines), proc.stderr
    return lines[0]
