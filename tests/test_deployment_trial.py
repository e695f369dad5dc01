"""The deployment trial of issue 29 (simulations.deployment_trial): its verdicts and table, the
fault helpers it uses (deploy.faults), and, marked ``long``, the whole trial on a real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deploy.faults import Started, snapshot, still_running, temporaries
from simulations.deployment_trial import Row, exit_code, render_markdown, render_table, totals, verdict_line


def test_a_row_passes_only_with_every_check_held_nothing_lost_and_nothing_left():
    ok = Row("key in use", "refused")
    assert ok.check(True, "never recorded") and ok.passed and verdict_line(ok) == "pass"
    failed = Row("ServerApp kill", "one line")
    assert not failed.check(False, "the cause is not\nthe dead ServerApp")
    assert failed.failures == ["the cause is not"] and verdict_line(failed) == "FAIL: the cause is not"
    lost = Row("disk full during publish", "x", samples_lost=3)
    left = Row("refused-run retry", "x", leftovers=["temporary /o/.round-001.tmp-1-2"])
    assert not lost.passed and verdict_line(lost) == "FAIL: 3 samples lost"
    assert not left.passed and verdict_line(left) == "FAIL: temporary /o/.round-001.tmp-1-2"
    assert totals([ok, failed, lost, left]) == {"rows": 4, "failing": 3, "samples_lost": 3, "leftovers": 1}
    assert exit_code([ok]) == 0 and exit_code([ok, left]) == 1 and exit_code([]) == 1  # no rows: nothing shown


def test_the_table_has_one_line_per_row_and_keeps_pipes_out_of_its_cells():
    rows = [Row("hostile manifest", "refused", observed="a | b\nsecond line"),
            Row("key in use", "refused", leftovers=["process supernode (pid 7)", "mount /m"])]
    table = render_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == 7 for line in table)  # six columns, no stray separator
    assert "a / b" in table[2] and "second line" not in table[2]
    assert "process supernode (pid 7); mount /m" in table[3] and "FAIL: process supernode" in table[3]
    report = render_markdown(rows, {"started": "then", "wall_s": 5, "load_start": "0.1 / 0.2 / 0.3"})
    assert "**1 of 2 rows failing, 0 samples lost, 2 leftovers.**" in report and "0.1 / 0.2 / 0.3" in report
    assert json.loads(json.dumps(rows[1].to_json()))["passed"] is False


def test_temporaries_snapshots_and_processes_by_pid_and_start_time(tmp_path):
    (tmp_path / "round-001").mkdir()
    (tmp_path / "round-001" / "targets.npy").write_bytes(b"x")
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "absent") == []
    (tmp_path / ".round-002.tmp-1-2").mkdir()
    (tmp_path / "round-001" / ".publish-reserve").write_bytes(b"")
    assert temporaries(tmp_path) == [".round-002.tmp-1-2", "round-001/.publish-reserve"]
    before = snapshot(tmp_path)
    assert snapshot(tmp_path) == before and snapshot(tmp_path / "absent") == {}
    (tmp_path / "round-001" / ".probe").write_text("p")  # the pre-flight's writability probe:
    (tmp_path / "round-001" / ".probe").unlink()          # the directory's mtime moves, nothing else
    assert snapshot(tmp_path) == before
    (tmp_path / "new").write_text("y")
    assert snapshot(tmp_path) != before

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = Started.of(proc.pid, "sleeper")
        assert started.running() and str(started) == f"sleeper (pid {proc.pid})"
        assert not Started(proc.pid, started.started - 3600, "x").running()  # a reused PID is another process
        proc.kill()
        proc.wait(timeout=10)
        assert still_running([started], grace_s=0) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.skipif(os.geteuid() != 0, reason="the trial mounts tmpfs disks (needs root)")
def test_the_whole_trial_has_no_failing_row_no_lost_sample_and_no_leftover(tmp_path):
    """The issue's "done when": the trial's table, re-run from scratch (6-10 minutes)."""
    from simulations.deployment_trial import trial

    code = trial(tmp_path / "results")
    report = json.loads((tmp_path / "results" / "deployment_trial.json").read_text())
    assert report["totals"] == {"rows": 6, "failing": 0, "samples_lost": 0, "leftovers": 0}, \
        (tmp_path / "results" / "deployment_trial.md").read_text()
    assert code == 0
