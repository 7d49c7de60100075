"""`python -m distbp.launch`: run `distbp.train` under mpiexec and, when a rank or a host dies, start
it again from the newest checkpoint, up to --max-restarts times (torchrun's restarts).

    python -m distbp.launch --nproc 2 --max-restarts 3 -- --steps 500 --checkpoint-every 50
    python -m distbp.launch --hostfile hosts.txt --nproc 2 --max-restarts 3 -- --checkpoint-dir /shared/ck ...

Everything after `--` goes to distbp.train, checked here first (a bad flag is one line and exit 2,
before any rank starts). --nproc is ranks per host; a hostfile lists one host per line. Before a
restart every host of the hostfile is asked to run `true` (through ssh, or --launcher-exec), and the
job restarts on the hosts that answer, with fewer ranks if some are gone: training resumes exactly
on another number of ranks (up to rounding; bitwise on the same number). A run that ends with exit
status 2 (a usage error) is not restarted. The restarted runs do not inherit DISTBP_FAULT (the
fault injection of distbp/training/fault.py), so an injected fault fires once.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from .training import checkpoint, rundir
from .training.config import ConfigError, parse_config

USAGE_ERROR = 2  # distbp.train's exit status for a user's mistake: restarting would repeat it


def _print(message: str) -> None:
    print(f"distbp.launch: {message}", file=sys.stderr, flush=True)


def read_hostfile(path: str) -> list:
    """Host names from a Hydra-style hostfile (`host` or `host:N` per line, # comments)."""
    try:
        with open(path) as f:
            lines = [line.split("#", 1)[0].strip() for line in f]
    except OSError as e:
        raise ConfigError(f"--hostfile {path}: {e.strerror}") from None
    hosts = [line.split(":", 1)[0] for line in lines if line]
    if not hosts:
        raise ConfigError(f"--hostfile {path} lists no host")
    return hosts


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m distbp.launch", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--nproc", type=int, default=1, metavar="N", help="ranks per host (default 1)")
    p.add_argument("--hostfile", metavar="FILE", help="hosts to run on, one per line (default: this machine)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="restart a failed job up to K times from its newest checkpoint (default 0)")
    p.add_argument("--launcher-exec", metavar="PROGRAM",
                   help="start processes on other hosts with PROGRAM instead of ssh (Hydra's -launcher-exec; "
                        "called as PROGRAM HOST COMMAND)")
    p.add_argument("--probe-timeout", type=float, default=10.0, metavar="S",
                   help="seconds a host has to answer before a restart (default 10)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then distbp.train's flags")
    args = p.parse_args(argv)
    if args.train_args[:1] == ["--"]:
        args.train_args = args.train_args[1:]
    if args.nproc < 1:
        p.error(f"--nproc {args.nproc}: use 1 or more ranks per host")
    if args.max_restarts < 0:
        p.error(f"--max-restarts {args.max_restarts}: use 0 or more")
    return args


def without_resume(train_args: list) -> list:
    """distbp.train's flags minus any --resume (with or without its PATH)."""
    out, skip = [], False
    for i, a in enumerate(train_args):
        if skip:
            skip = False
            continue
        if a == "--resume":
            nxt = train_args[i + 1] if i + 1 < len(train_args) else "-"
            skip = not nxt.startswith("-")
            continue
        if a.startswith("--resume="):
            continue
        out.append(a)
    return out


def _snapshot(directory: str) -> set:
    """(path, mtime) of the checkpoints in `directory`: those a restart must not mistake for its own."""
    found = set()
    for path in checkpoint.list_checkpoints(directory):
        try:
            found.add((path, os.stat(path).st_mtime_ns))
        except OSError:
            pass
    return found


def _step_of(path: str) -> int:
    m = re.search(r"ckpt-(\d+)\.safetensors$", path)
    return int(m.group(1)) if m else -1


def alive_hosts(hosts: list, launcher_exec: str | None, timeout: float) -> list:
    """The hosts that run `true` within `timeout` seconds (this machine always counts)."""
    me = {"localhost", "127.0.0.1", socket.gethostname()}
    probe = [launcher_exec] if launcher_exec else ["ssh", "-o", "BatchMode=yes", "-o",
                                                   f"ConnectTimeout={max(1, int(timeout))}"]
    alive = []
    for host in hosts:
        if host in me:
            alive.append(host)
            continue
        try:
            ok = subprocess.run(probe + [host, "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=timeout, check=False).returncode == 0
        except (subprocess.TimeoutExpired, OSError):
            ok = False
        if ok:
            alive.append(host)
        else:
            _print(f"host {host} does not answer: leaving it out")
    return alive


def mpiexec_command(args, hosts: list | None, train_args: list) -> list:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec") or "mpiexec"
    ranks = args.nproc * (len(hosts) if hosts else 1)
    cmd = [mpiexec, "-n", str(ranks)]
    if hosts:
        cmd += ["-hosts", ",".join(f"{h}:{args.nproc}" for h in hosts)]
    if args.launcher_exec:
        cmd += ["-launcher", "ssh", "-launcher-exec", args.launcher_exec]
    # ranks that each start a BLAS thread per core would oversubscribe the machine (launch/local.sh)
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // args.nproc))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        cmd += ["-genv", var, threads]
    return cmd + [sys.executable, "-m", "distbp.train"] + train_args


def _run(cmd: list, env: dict) -> int:
    """Run the job; Ctrl-C or SIGTERM here ends it (and this launcher) too."""
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM: end the job as Ctrl-C does


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg, explicit = parse_config(args.train_args)   # a bad flag: one line now, not once per rank later
        hosts = read_hostfile(args.hostfile) if args.hostfile else None
    except ConfigError as e:
        _print(f"error: {e}")
        return USAGE_ERROR
    signal.signal(signal.SIGTERM, _interrupt)
    if args.max_restarts and not cfg.checkpoint_every:
        _print("note: without --checkpoint-every a restart starts again from the beginning")
    if "checkpoint_dir" not in explicit and cfg.resume in ("", "latest"):
        # the folder train would pick (checkpoints/run-N), fixed now so that every restart writes and
        # resumes in it rather than starting a run of its own
        cfg.checkpoint_dir = rundir.versioned_folder(cfg.checkpoint_dir, bool(cfg.resume))
        args.train_args = [*args.train_args, "--checkpoint-dir", cfg.checkpoint_dir]
    before = _snapshot(cfg.checkpoint_dir)   # an earlier run's checkpoints are not this run's
    env = dict(os.environ)
    train_args = list(args.train_args)
    restarts = 0
    try:
        while True:
            t0 = time.monotonic()
            rc = _run(mpiexec_command(args, hosts, train_args), env)
            if rc == 0:
                return 0
            _print(f"the job ended with exit status {rc} after {time.monotonic() - t0:.1f} s")
            if rc == USAGE_ERROR or restarts >= args.max_restarts:
                if rc != USAGE_ERROR and args.max_restarts:
                    _print(f"giving up after {restarts} restart(s) (--max-restarts {args.max_restarts})")
                return rc
            restarts += 1
            env.pop("DISTBP_FAULT", None)   # an injected fault fires once
            if hosts:
                hosts = alive_hosts(hosts, args.launcher_exec, args.probe_timeout)
                if not hosts:
                    _print("no host answers: giving up")
                    return rc
            newest = checkpoint.latest(cfg.checkpoint_dir)
            if newest is not None and (newest, os.stat(newest).st_mtime_ns) not in before:
                train_args = without_resume(args.train_args) + ["--resume", newest]
                where = f"from {newest} (step {_step_of(newest)})"
            else:
                train_args = list(args.train_args)
                where = "from the start (no checkpoint of this run yet)"
            ranks = args.nproc * (len(hosts) if hosts else 1)
            _print(f"restart {restarts} of {args.max_restarts} on {ranks} rank(s) {where}")
    except KeyboardInterrupt:
        _print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
