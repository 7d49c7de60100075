"""distbp.plot draws the pipeline schedules' simulated timelines (needs matplotlib, else skipped)."""
import pytest

from distbp import plot

pytest.importorskip("matplotlib")


def test_plot_schedules_writes_a_png(tmp_path):
    out = plot.plot_schedules(str(tmp_path / "s.png"), ("gpipe", "1f1b"), num_stages=3, num_micro_batches=5)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_draws_schedules(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert plot.main(["--schedule", "1f1b", "--stages", "2", "--micro-batches", "4", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and capsys.readouterr().out.strip() == str(out)


def test_cli_unknown_schedule_is_one_line(tmp_path, capsys):
    assert plot.main(["--schedule", "zigzag", "--out", str(tmp_path / "s.png")]) == 2
    assert "zigzag" in capsys.readouterr().err


def test_cli_needs_a_run_dir_or_a_schedule():
    with pytest.raises(SystemExit):
        plot.main([])
