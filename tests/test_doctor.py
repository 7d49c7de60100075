"""distbp.doctor: its checks on made-up rank reports, and a run in a world of one (its mpiexec run
is in tests/distributed/test_launches.py)."""
import json

from distbp import doctor


def _rank(host="a", cpus=2, threads=1, **versions):
    info = {"host": host, "cpus": cpus, "blas": [f"openblas 0.3 (threads={threads})"], "python": "3.11",
            "distbp": "0.1.0", "numpy": "2.4", "mpi4py": "4.1", "mpi_library": "MPICH 5"}
    info.update(versions)
    return info


def test_software_that_differs_between_ranks_fails_naming_the_ranks():
    assert doctor.version_mismatches([_rank(), _rank()]) == []
    lines = doctor.version_mismatches([_rank(), _rank(numpy="1.26"), _rank()])
    assert lines == ["FAIL numpy differs between ranks: 2.4 on ranks [0, 2]; 1.26 on ranks [1]"]


def test_more_ranks_or_threads_than_cores_on_a_host_is_a_warning():
    assert doctor.oversubscription([_rank(), _rank(), _rank(host="b", cpus=1)]) == []
    ranks_warning = doctor.oversubscription([_rank(cpus=2)] * 3)
    assert len(ranks_warning) == 1 and ranks_warning[0].startswith("WARN a: 3 ranks on 2 cores")
    threads_warning = doctor.oversubscription([_rank(cpus=4, threads=4), _rank(cpus=4, threads=4)])
    assert len(threads_warning) == 1 and "8 BLAS threads on 4 cores" in threads_warning[0]


def test_a_world_of_one_passes_and_reports_versions(capsys):
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "1 rank(s) on 1 host(s):" in out
    assert "OK   allreduce: sum of rank+1 over 1 ranks = 1" in out
    assert "FAIL" not in out


def test_json_report_has_every_rank_and_the_checks(capsys):
    assert doctor.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["world_size"] == 1 and len(report["ranks"]) == 1
    assert report["bucket_path"] == "none" and all(line.startswith("OK") for line in report["checks"])


def test_a_collective_giving_wrong_numbers_fails_and_the_exit_status_says_so(monkeypatch, capsys):
    from distbp.distributed import SelfComm

    class Broken(SelfComm):
        def allreduce(self, array, op="sum"):
            return array * 2

    monkeypatch.setattr(doctor, "init", lambda: Broken())
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "FAIL allreduce: sum of rank+1 over 1 ranks = 2 (expected 1)" in out
