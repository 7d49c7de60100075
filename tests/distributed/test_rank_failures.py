"""An error on ONE rank of `python -m distbp.train` ends every rank within seconds, with that rank's one
line; ranks given different settings are refused at start, naming the setting and the ranks.

Each test launches its own mpiexec job from the single-process pytest (not marked `mpi`), often an
MPMD launch (`mpiexec -n 1 A : -n 1 B`) where ranks get different arguments or environments. Times
are bounded generously: far under the 300 s watchdog that would otherwise be what ends the job."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from distributed_helpers import MPIEXEC, ROOT, launch_job

from distbp.training import checkpoint

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="mpiexec not installed next to python")
TRAIN = [sys.executable, "-m", "distbp.train", "--no-progress"]
QUICK = ["--dataset", "xor", "--epochs", "1"]
WATCHDOG_S = 300


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    for var in ("PMI_RANK", "PMI_SIZE", "DISTBP_NO_MPI"):
        env.pop(var, None)
    return {**env, **extra}


def _mpmd(*programs, env=None):
    """programs: (count, [args], {env}) per block; returns (completed process, seconds)."""
    cmd = ["timeout", "240", str(MPIEXEC)]
    for i, (count, args, extra) in enumerate(programs):
        cmd += ([":"] if i else []) + ["-n", str(count)]
        for k, v in extra.items():
            cmd += ["-env", k, v]
        cmd += TRAIN + args
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or _env(), check=False)
    return proc, time.monotonic() - t0


def _assert_error(proc, took, line_start, words, code=2):
    assert proc.returncode == code, proc.stderr
    assert took < WATCHDOG_S / 3, f"the job took {took:.0f} s to end"
    assert "Traceback" not in proc.stderr, proc.stderr
    mine = [line for line in proc.stderr.splitlines() if "distbp.train: " in line]
    assert len(mine) == 1 and mine[0].startswith(line_start) and words in mine[0], proc.stderr


# ----- class 1: one rank's error is the job's end -----
def test_a_bad_flag_on_one_rank_ends_both_ranks_with_its_line(tmp_path):
    ck = ["--checkpoint-dir", str(tmp_path / "ck")]
    proc, took = _mpmd((1, QUICK + ck, {}), (1, QUICK + ck + ["--bogus"], {}))
    _assert_error(proc, took, "rank 1: distbp.train: error: ", "unrecognized arguments: --bogus")
    assert not (tmp_path / "ck").exists()


def test_a_dataset_only_three_of_four_ranks_have_ends_the_job_naming_the_fourth(tmp_path):
    ck = ["--checkpoint-dir", str(tmp_path / "ck")]
    data = tmp_path / "d.csv"
    data.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    missing = str(tmp_path / "elsewhere" / "d.csv")
    proc, took = _mpmd((3, ["--dataset", str(data), "--epochs", "1"] + ck, {}),
                       (1, ["--dataset", missing, "--epochs", "1"] + ck, {}))
    _assert_error(proc, took, "rank 3: distbp.train: error: ", f"dataset {missing!r} is neither")


@pytest.mark.parametrize("ranks", [2, 4])
def test_a_usage_error_every_rank_makes_is_printed_once(tmp_path, ranks):
    proc, took = _mpmd((ranks, QUICK + ["--epochs", "0", "--checkpoint-dir", str(tmp_path)], {}))
    _assert_error(proc, took, "distbp.train: error: ", "invalid epochs 0: must be at least 1")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _ranks_of(marker: str) -> dict:
    """{rank: pid} of the processes whose environment carries `marker`."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        try:
            zombie = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
        except OSError:
            continue
        if f"H16_MARK={marker}".encode() in env and not zombie:
            rank = [e for e in env if e.startswith(b"PMI_RANK=")]
            if rank:
                found[int(rank[0].split(b"=")[1])] = int(pid)
    return found


def _start_long_run(tmp_path, ranks, *extra):
    marker = uuid.uuid4().hex
    ck = tmp_path / "ck"
    cmd = ["timeout", "240", str(MPIEXEC), "-n", str(ranks), *TRAIN, "--epochs", "2000", "--checkpoint-every", "10",
           "--checkpoint-dir", str(ck), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(H16_MARK=marker))
    deadline = time.monotonic() + 120
    while checkpoint.latest(ck) is None or len(_ranks_of(marker)) < ranks:   # training, checkpoints written
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    return proc, marker, ck


def _finish(proc, sent):
    out, err = proc.communicate(timeout=200)
    return out, err, time.monotonic() - sent


@pytest.mark.parametrize("ranks, victim, extra", [(2, 1, []), (4, 2, []), (2, 0, ["--pipeline-stages", "2"])],
                         ids=["2 ranks", "4 ranks", "pipeline"])
def test_sigint_to_one_rank_ends_the_job_with_130_and_keeps_the_checkpoints(tmp_path, ranks, victim, extra):
    proc, marker, ck = _start_long_run(tmp_path, ranks, *extra)
    os.kill(_ranks_of(marker)[victim], signal.SIGINT)
    _, err, took = _finish(proc, time.monotonic())
    assert proc.returncode == 130, err
    assert took < WATCHDOG_S / 3, f"{took:.0f} s from the signal to the end of the job"
    assert f"rank {victim}: distbp.train: interrupted" in err and "Traceback" not in err, err
    kept = checkpoint.latest(ck)
    assert kept is not None and checkpoint.load(kept).meta["step"] % 10 == 0   # the newest saved one loads
    _assert_gone(marker)


def _assert_gone(marker):
    """No rank of the job is left running (a killed process may take a moment to go)."""
    deadline = time.monotonic() + 30
    while _ranks_of(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ranks_of(marker)


def test_sigint_to_one_process_is_one_line_and_130_and_keeps_the_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    proc = subprocess.Popen([*TRAIN, "--epochs", "2000", "--checkpoint-every", "10", "--checkpoint-dir", str(ck)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(DISTBP_NO_MPI="1"))
    deadline = time.monotonic() + 120
    while checkpoint.latest(ck) is None:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err, took = _finish(proc, time.monotonic())
    assert proc.returncode == 130 and took < WATCHDOG_S / 3 and err == "distbp.train: interrupted\n", err
    assert checkpoint.load(checkpoint.latest(ck)).meta["step"] % 10 == 0


def test_ctrl_c_on_mpiexec_interrupts_every_rank_and_prints_one_line(tmp_path):
    proc, _, ck = _start_long_run(tmp_path, 2)
    # mpiexec passes SIGINT on to every rank. Sent to mpiexec itself: signalled, the `timeout` wrapper
    # would pass it to mpiexec and again to its whole process group, and the doubled SIGINT can fail an
    # assertion in MPICH's launcher (a terminal's Ctrl-C, one SIGINT to the group, gives 130: checked by hand).
    mpiexec = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
    os.kill(mpiexec, signal.SIGINT)
    _, err, took = _finish(proc, time.monotonic())
    assert proc.returncode == 130, err
    assert took < WATCHDOG_S / 3
    assert [line for line in err.splitlines() if "distbp.train" in line] == ["distbp.train: interrupted"], err
    assert checkpoint.load(checkpoint.latest(ck)).meta["step"] % 10 == 0


# ----- class 2: ranks that disagree are refused at start -----
@pytest.mark.parametrize("blocks, words", [
    ([(1, ["--lr", "0.1"], {}), (1, ["--lr", "0.2"], {})], "--lr differs: rank 0 has 0.1, rank 1 has 0.2"),
    ([(3, [], {}), (1, ["--seed", "5"], {})], "--seed differs: ranks 0, 1, 2 have 0, rank 3 has 5"),
    ([(2, [], {}), (2, ["--hidden", "8"], {})], "--hidden differs: ranks 0, 1 have [128], ranks 2, 3 have [8]"),
    ([(1, [], {}), (1, [], {"DISTBP_COLLECTIVE_TIMEOUT": "60"})],
     "DISTBP_COLLECTIVE_TIMEOUT differs: rank 0 has 300.0, rank 1 has 60.0"),
    ([(3, [], {}), (1, ["--dataset", "digits"], {})], "--dataset differs: ranks 0, 1, 2 have xor (contents "),
])
def test_ranks_given_different_settings_are_refused_naming_the_setting_and_ranks(tmp_path, blocks, words):
    ck = ["--checkpoint-dir", str(tmp_path / "ck")]
    proc, took = _mpmd(*[(n, QUICK + ck + args, env) for n, args, env in blocks])
    _assert_error(proc, took, "distbp.train: error: ", words)
    assert not (tmp_path / "ck").exists()     # refused before any training


def test_the_same_data_from_different_paths_is_accepted(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "d.csv").write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(60)))
    ck = ["--checkpoint-dir", str(tmp_path / "ck"), "--epochs", "1"]
    proc, _ = _mpmd((1, ["--dataset", str(tmp_path / "a" / "d.csv")] + ck, {}),
                    (1, ["--dataset", str(tmp_path / "b" / "d.csv")] + ck, {}))
    assert proc.returncode == 0, proc.stderr


def test_no_mpi_under_mpiexec_is_refused_instead_of_starting_independent_runs(tmp_path):
    proc, took = _mpmd((2, QUICK + ["--checkpoint-dir", str(tmp_path / "ck")], {}), env=_env(DISTBP_NO_MPI="1"))
    _assert_error(proc, took, "distbp.train: error: ", "DISTBP_NO_MPI is set but an MPI launcher started this "
                  "process as one of 2 ranks")
    assert not (tmp_path / "ck").exists()


# ----- the same for library scripts, through init()'s excepthook -----
def test_a_keyboard_interrupt_on_one_rank_of_a_library_script_ends_the_job_with_130(tmp_path):
    proc, took = launch_job(tmp_path, 3, """
        for step in range(1000):
            if comm.rank == 1 and step == 5:
                raise KeyboardInterrupt
            comm.allreduce(np.ones(4))
    """)
    assert proc.returncode == 130 and took < 60, proc.stderr
    assert "rank 1: interrupted" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_setting_in_a_library_script_is_one_line_once(tmp_path):
    proc, took = launch_job(tmp_path, 2, "comm.allreduce(np.ones(4))\n", DISTBP_WAIT_BUSY_TESTS="many")
    assert proc.returncode == 2 and took < 60, proc.stderr
    assert proc.stderr == ("error: DISTBP_WAIT_BUSY_TESTS='many' is not allowed: use an integer from 0 to 1e+06\n")
