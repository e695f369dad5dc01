"""deploy.runs: a finished run's stray apps are stopped, and only those; ``flwr ls`` read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.processes import alive, stop_pids
from deploy.runs import stop_stray_clientapps, unfinished_runs
from deploy.workdir import MARKER_ENV


def fake_app(tmp_path: Path, workdir: Path, name: str = "flwr-clientapp") -> subprocess.Popen:
    """A process named like Flower's per-run app, marked as one of ``workdir``'s cluster, that
    waits forever (as the app a SuperNode starts for a dropped message does)."""
    script = tmp_path / name
    if not script.exists():
        script.write_text(f"#!{sys.executable}\nimport time\nwhile True:\n    time.sleep(1)\n")
        script.chmod(0o755)
    env = {**os.environ, MARKER_ENV: str(workdir.resolve())}
    return subprocess.Popen([sys.executable, str(script)], env=env)


@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "cluster"
    path.mkdir()
    return path


@pytest.fixture
def started(tmp_path):
    procs: list[subprocess.Popen] = []
    yield procs
    stop_pids([p.pid for p in procs if p.poll() is None], grace_s=1)


def test_a_failed_runs_waiting_clientapp_is_stopped_and_named(tmp_path, workdir, started):
    since = time.time()
    app = fake_app(tmp_path, workdir)
    started.append(app)
    stopped = stop_stray_clientapps(workdir, since, grace_s=1.0, completed=False)
    assert stopped == [f"flwr-clientapp (pid {app.pid})"]
    assert app.wait(timeout=10) is not None and not alive(app.pid)


def test_apps_started_before_the_run_or_of_another_cluster_are_left_alone(tmp_path, workdir, started):
    older = fake_app(tmp_path, workdir)
    started.append(older)
    time.sleep(2.5)  # the run starts after this app (start times have 1 s tolerance)
    since = time.time()
    other = tmp_path / "other-cluster"
    other.mkdir()
    foreign = fake_app(tmp_path, other)
    started.append(foreign)
    assert stop_stray_clientapps(workdir, since, grace_s=0.5, completed=False) == []
    assert older.poll() is None and foreign.poll() is None


def test_nothing_is_stopped_while_another_run_is_in_progress(tmp_path, workdir, started):
    since = time.time()
    app = fake_app(tmp_path, workdir)
    started.append(app)
    assert stop_stray_clientapps(workdir, since, grace_s=0.5, completed=False, others_running=lambda: True) == []
    assert app.poll() is None


def test_only_flower_clientapps_count(tmp_path, workdir, started):
    since = time.time()
    serverapp = fake_app(tmp_path, workdir, name="flwr-serverapp")
    started.append(serverapp)
    assert stop_stray_clientapps(workdir, since, grace_s=0.5, completed=False) == []
    assert serverapp.poll() is None


def test_a_completed_run_without_strays_returns_at_once(workdir):
    t0 = time.monotonic()
    assert stop_stray_clientapps(workdir, time.time(), grace_s=30.0, completed=True) == []
    assert time.monotonic() - t0 < 10.0


def test_unfinished_runs_read_from_flwr_ls():
    listing = "Loading project...\n" + json.dumps({"success": True, "runs": [
        {"run-id": "11", "status": "finished:failed"},
        {"run-id": "12", "status": "running"},
        {"run-id": "13", "status": "pending"},
        {"run-id": "14", "status": "finished:completed"}]})
    assert unfinished_runs(listing) == [12, 13]
    assert unfinished_runs(listing, exclude=12) == [13]
    assert unfinished_runs("no json here") == [-1]
    assert unfinished_runs('{"runs": [{"status": "running"}]}') == [-1]
