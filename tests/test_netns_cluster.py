"""Several hosts for real: launch/netns-cluster.sh makes 2 network-namespace hosts with TCP between them
(root and `ip` needed; skipped otherwise), and distbp trains on them as on two machines: 2 hosts x 2
ranks equal one process (float64, 1e-10), a run resumes on another number of hosts, a lost host ends the
job within seconds naming the host, and distbp.launch restarts on the host still alive."""
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "launch" / "netns-cluster.sh"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TOL = 1e-10

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="no `ip` command (iproute2)"),
    pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python"),
]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHON=sys.executable, OPENBLAS_NUM_THREADS="1")
    for var in ("PMI_RANK", "PMI_SIZE", "DISTBP_FAULT", "DISTBP_RANKS_PER_HOST"):
        env.pop(var, None)
    return env


def _cluster(*args, timeout=240, **kw):
    return subprocess.run(["timeout", str(timeout), "bash", str(SCRIPT), *args], check=False, capture_output=True,
                          text=True, env=_env(), **kw)


@pytest.fixture(scope="module")
def cluster():
    """Two hosts under a name unique to this run (concurrent runs on one machine never collide)."""
    name = "t" + uuid.uuid4().hex[:7]
    up = _cluster("up", name, "2")
    try:
        if up.returncode != 0:
            pytest.skip(f"cannot create network namespaces here: {up.stderr.strip()}")
        yield name
    finally:
        _cluster("down", name)


def _train_flags(directory, steps, *extra):
    return ["--dataset", "xor", "--dtype", "float64", "--epochs", "1000", "--steps", str(steps), "--no-progress",
            "--checkpoint-dir", str(directory), *extra]


def _one_process(directory, steps):
    out = subprocess.run([sys.executable, "-m", "distbp.train", *_train_flags(directory, steps)], check=False,
                         capture_output=True, text=True, env=_env(), timeout=240)
    assert out.returncode == 0, out.stderr
    return _weights(directory, steps)


def _weights(directory, step) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(Path(directory) / f"ckpt-{step:08d}.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def test_doctor_sees_two_hosts_and_reduces_buckets_hierarchically(cluster):
    import json
    out = _cluster("run", cluster, "-ppn", "2", "--", sys.executable, "-m", "distbp.doctor", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["world_size"] == 4 and report["hosts"] == 2
    assert report["host_ranks"] == [{"host": f"{cluster}-h0", "ranks": [0, 1]},
                                    {"host": f"{cluster}-h1", "ranks": [2, 3]}]
    assert set(report["bucket_paths"].values()) == {"hierarchical"}
    assert all(line.startswith(("OK", "WARN")) for line in report["checks"])


def test_two_hosts_by_two_ranks_equal_one_process_and_resume_on_one_host(cluster, tmp_path):
    want = _one_process(tmp_path / "one", 30)
    full = _cluster("run", cluster, "-ppn", "2", "--", sys.executable, "-m", "distbp.train",
                    *_train_flags(tmp_path / "full", 30))
    assert full.returncode == 0, full.stderr
    assert "4 rank(s)" in full.stdout
    assert _max_diff(_weights(tmp_path / "full", 30), want) <= TOL
    # the first 15 steps on 2 hosts, the rest on 1 host
    half = _cluster("run", cluster, "-ppn", "2", "--", sys.executable, "-m", "distbp.train",
                    *_train_flags(tmp_path / "moved", 15))
    assert half.returncode == 0, half.stderr
    rest = _cluster("run", cluster, "-ppn", "2", "-hosts", "1", "--", sys.executable, "-m", "distbp.train",
                    *_train_flags(tmp_path / "moved", 30, "--resume"))
    assert rest.returncode == 0, rest.stderr
    assert "resumed from" in rest.stdout and "2 rank(s)" in rest.stdout
    assert _max_diff(_weights(tmp_path / "moved", 30), want) <= TOL


def _wait_for(directory: Path, step: int, proc, seconds=120):
    """Until a checkpoint of `step` or later is in `directory` (older ones are pruned as the run goes on)."""
    from distbp.training import checkpoint
    end = time.monotonic() + seconds
    while not any(int(Path(p).name[5:13]) >= step for p in checkpoint.list_checkpoints(directory)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"no checkpoint of step {step} or later in {directory}"
        time.sleep(0.05)


def test_a_lost_host_ends_the_job_within_seconds_naming_it(cluster, tmp_path):
    cmd = ["timeout", "300", "bash", str(SCRIPT), "run", cluster, "-ppn", "2", "--", sys.executable, "-m",
           "distbp.train", *_train_flags(tmp_path, 100000, "--checkpoint-every", "20")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(tmp_path, 20, proc)
        assert _cluster("kill", cluster, "1").returncode == 0
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=120)
        seconds = time.monotonic() - t0
    finally:
        proc.kill()
        _cluster("revive", cluster, "1")
    assert proc.returncode != 0
    assert f"lost host {cluster}-h1" in err
    assert seconds < 60, f"the job took {seconds:.0f} s to end after its host was lost"


def test_launch_restarts_on_the_host_still_alive_and_equals_one_process(cluster, tmp_path):
    steps = 1500
    cmd = ["timeout", "300", "bash", str(SCRIPT), "launch", cluster, "--nproc", "2", "--max-restarts", "1", "--",
           *_train_flags(tmp_path / "ck", steps, "--checkpoint-every", "20")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        _wait_for(tmp_path / "ck", 40, proc)
        assert _cluster("kill", cluster, "1").returncode == 0
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
        _cluster("revive", cluster, "1")
    assert proc.returncode == 0, err
    assert f"lost host {cluster}-h1" in err and f"host {cluster}-h1 does not answer" in err
    assert "restart 1 of 1 on 2 rank(s) from" in err and "resumed from" in out
    assert _max_diff(_weights(tmp_path / "ck", steps), _one_process(tmp_path / "one", steps)) <= TOL
