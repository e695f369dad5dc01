"""A SuperNode process killed mid-round in a real deployment: its pages move, nothing is lost."""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest

from coopt_flower.data import select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from deploy.cluster import LocalCluster, marked_pids
from deploy.faults import kill_node_mid_round
from deploy.processes import send_signal

# Two clusters of real processes killed mid-run: ~7 minutes, outside the default run (CI's
# budget); `bash scripts/test.sh -m long` runs them.
pytestmark = [pytest.mark.slow, pytest.mark.long]
RUN_CONFIG = {"num-samples": 240, "shared-size": 32, "image-size": 32, "target-dim": 32,
              "page-size": 10, "seed": 5, "reply-timeout-s": 30}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    workdir = tmp_path_factory.mktemp("cluster")
    # Heartbeats every 10 s (Flower: 30): the SuperLink reports the killed node offline after ~20 s.
    cluster = LocalCluster(3, [{"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": i}
                               for i in range(3)], workdir=workdir, heartbeat_s=10)
    try:
        cluster.start()
        # Node 2 killed once a wave or two of pages went through.
        run, killed_at = kill_node_mid_round(cluster, {**RUN_CONFIG, "output-dir": str(out)}, 2, after_s=4)
    finally:
        cluster.stop()
    assert marked_pids(workdir) == []
    return run, out / "round-001", killed_at


def test_round_completes_without_the_killed_node_and_loses_nothing(killed_run):
    run, path, _ = killed_run
    assert run.returncode == 0, run.output[-4000:]
    summary = json.loads((path / "report.json").read_text())
    [failure] = summary["failures"]
    assert failure["participant"] == "p2" and failure["step"] == "optimize"
    assert failure["action"].startswith("reassigned to p0, p1") and failure["samples_affected"] > 0
    ds = load_optimized_dataset(path)
    assert summary["missing_samples"] == 0
    assert np.array_equal(ds.sample_ids, select_samples(60000, 240, seed=5))
    owners = np.bincount(np.asarray(ds.owners), minlength=3)
    assert owners.sum() == 240 and owners[2] == 80 - failure["samples_affected"]


# --------------------------------------------------------------- a ServerApp that dies
KILL_CONFIG = {"num-samples": 60, "shared-size": 16, "image-size": 32, "target-dim": 16, "page-size": 20,
               "seed": 6, "num-server-rounds": 2, "refinement": "static"}


@pytest.fixture(scope="module")
def killed_serverapp(tmp_path_factory):
    """Round 2 of a 2-round run: its ServerApp is killed (SIGKILL) while the round writes;
    then the run is started again with the same run config."""
    from deploy.faults import per_run_apps
    from deploy.processes import pids_with_cmdline

    out = tmp_path_factory.mktemp("out")
    workdir = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(2, [{"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": i}
                               for i in range(2)], workdir=workdir)
    config = {**KILL_CONFIG, "output-dir": str(out)}
    result = {}
    try:
        cluster.start()
        worker = threading.Thread(target=lambda: result.setdefault("run", cluster.run_app(config, timeout_s=600)))
        worker.start()
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not list(out.glob(".round-002.tmp-*")):
            time.sleep(0.1)
        result["round 1"] = (out / "round-001" / "targets.npy").read_bytes()
        send_signal(pids_with_cmdline("flwr-serverapp"), signal.SIGKILL)
        worker.join(600)
        result["apps after"] = [str(p) for p in per_run_apps(workdir)]
        result["leftovers"] = sorted(p.name for p in out.glob(".round-*"))
        result["rerun"] = cluster.run_app(config, timeout_s=600)
    finally:
        cluster.stop()
    assert marked_pids(workdir) == []
    return result, out


def test_a_killed_serverapp_says_why_and_how_to_resume(killed_serverapp):
    result, out = killed_serverapp
    run = result["run"]
    assert run.status == "finished:failed" and run.returncode != 0
    assert run.reason.startswith("the ServerApp process died without a word"), run.reason
    [leftover] = result["leftovers"]
    assert run.reason.endswith(f"; to resume, run the same command again (round 1 is kept, the dead round's "
                               f"{leftover} is removed)"), run.reason


def test_no_app_of_the_killed_run_outlives_it(killed_serverapp):
    # A node may start an app for a message of the run that has just died and then drop the
    # message (Flower 1.42): run_app stops such an app once the run is over.
    result, _ = killed_serverapp
    assert result["apps after"] == [], result["run"].output[-2000:]


def test_the_resumed_run_keeps_round_one_and_removes_the_dead_round(killed_serverapp):
    result, out = killed_serverapp
    rerun = result["rerun"]
    assert rerun.returncode == 0 and rerun.reason == "", rerun.output[-3000:]
    assert (out / "round-001" / "targets.npy").read_bytes() == result["round 1"]
    assert load_optimized_dataset(out / "round-002").manifest.num_samples == 60
    assert sorted(p.name for p in out.glob(".round-*")) == []


def test_the_killed_node_is_reported_offline_by_its_missed_heartbeats(killed_run):
    run, path, _ = killed_run
    [failure] = json.loads((path / "report.json").read_text())["failures"]
    assert failure["reason"].startswith("node offline (heartbeat)"), failure
