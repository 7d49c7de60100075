"""Jobs leave nothing behind in /dev/shm however they end; a closed stdout and a full disk under
--log-dir end as documented (docs/training.md, "When things go wrong"), never in a traceback or a
torn JSON line. Each test starts its own processes from the single-process pytest."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed_helpers import MPIEXEC, ROOT, launch_job

from distbp.training import checkpoint

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")
TRAIN = [sys.executable, "-m", "distbp.train", "--no-progress"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "DISTBP_"))}
    return {**env, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", **extra}


@pytest.mark.parametrize("ranks, ending", [(2, "abort"), (2, "kill -9"), (4, "abort")])
def test_mpich_shared_memory_file_is_gone_however_the_job_ends(tmp_path, ranks, ending):
    # each rank writes down (to a file: a killed job's last output may never reach the launcher) the
    # MPICH files it maps, and which of them still have a name after start-up
    proc, took = launch_job(tmp_path, ranks, f"""
        import json, os, signal
        from distbp.distributed.comm.leftovers import mapped_segments
        maps = [w for line in open("/proc/self/maps") for w in line.split() if w.startswith("/dev/shm/mpich_shm_")]
        with open(f"maps_{{comm.rank}}.json", "w") as f:
            json.dump({{"mapped": sorted(set(maps)), "named": sorted(mapped_segments())}}, f)
        comm.barrier()
        if comm.rank == 1:
            {"comm.abort(3)" if ending == "abort" else "os.kill(os.getpid(), signal.SIGKILL)"}
        time.sleep(30)
    """)
    assert proc.returncode != 0 and took < 60
    seen = [json.loads((tmp_path / f"maps_{r}.json").read_text()) for r in range(ranks)]
    paths = {p for s in seen for p in s["mapped"]}
    assert paths and all(p.startswith("/dev/shm/mpich_shm_") for p in paths), seen   # so the check can fail
    assert not [p for s in seen for p in s["named"]], seen     # no name left once every rank started
    assert not [p for p in paths if os.path.exists(p)]


def test_a_closed_stdout_on_one_process_drops_the_output_and_finishes_the_run(tmp_path):
    proc = subprocess.Popen([*TRAIN, "--epochs", "3", "--checkpoint-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(DISTBP_NO_MPI="1"))
    first = proc.stdout.readline()
    proc.stdout.close()                                     # what `| head -1` does after its line
    err = proc.stderr.read()
    assert proc.wait(timeout=200) == 0, err
    assert first.startswith("Dataset('digits'") and "Traceback" not in err and err == "", err
    assert checkpoint.load(checkpoint.latest(tmp_path)).meta["step"] == 60    # the whole run, saved


def test_a_closed_stdout_under_mpiexec_ends_the_job_by_sigpipe_keeping_saved_checkpoints(tmp_path):
    # mpiexec itself writes the ranks' lines to the pipe: the kernel ends it with SIGPIPE, as it
    # would `cat`, and Hydra takes the ranks with it; what was saved before stays loadable.
    proc = subprocess.Popen([str(MPIEXEC), "-n", "2", *TRAIN, "--epochs", "50", "--checkpoint-every", "20",
                             "--checkpoint-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env())
    proc.stdout.readline()
    deadline = time.monotonic() + 120
    while checkpoint.latest(tmp_path) is None:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=200) == -signal.SIGPIPE, err
    assert "Traceback" not in err
    assert checkpoint.load(checkpoint.latest(tmp_path)).meta["step"] % 20 == 0


@pytest.fixture
def tiny_disk(tmp_path):
    """A 4 KiB tmpfs (root only): the metrics log fills it within the first epochs."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_full_disk_under_log_dir_is_one_line_and_leaves_no_torn_json_line(tmp_path, tiny_disk, ranks):
    args = ["--epochs", "5", "--checkpoint-dir", str(tmp_path / "ck"), "--log-dir", str(tiny_disk / "log")]
    cmd = TRAIN + args if ranks == 1 else [str(MPIEXEC), "-n", str(ranks), *TRAIN, *args]
    t0 = time.monotonic()
    proc = subprocess.run(["timeout", "200", *cmd], capture_output=True, text=True, check=False,
                          env=_env(**({"DISTBP_NO_MPI": "1"} if ranks == 1 else {})))
    assert proc.returncode == 2 and time.monotonic() - t0 < 100, proc.stderr
    line = f"cannot write the metrics log {tiny_disk / 'log' / 'metrics.jsonl'}: No space left on device"
    mine = [text for text in proc.stderr.splitlines() if "distbp.train" in text]
    assert len(mine) == 1 and mine[0].endswith(f"distbp.train: error: {line}") and "Traceback" not in proc.stderr
    text = Path(tiny_disk / "log" / "metrics.jsonl").read_text()
    assert text.endswith("\n") and len(text) > 1000
    assert all(json.loads(row)["split"] for row in text.splitlines())   # every line whole
