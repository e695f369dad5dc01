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
from deploy.processes import descendants, send_signal

pytestmark = pytest.mark.slow
RUN_CONFIG = {"num-samples": 240, "shared-size": 32, "image-size": 32, "target-dim": 32,
              "page-size": 10, "seed": 5, "reply-timeout-s": 30}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    workdir = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(3, [{"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": i}
                               for i in range(3)], workdir=workdir)
    result = {}
    try:
        cluster.start()
        worker = threading.Thread(target=lambda: result.setdefault(
            "run", cluster.run_app({**RUN_CONFIG, "output-dir": str(out)}, timeout_s=600)))
        worker.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(out.glob(".round-001.tmp-*")):
            time.sleep(0.1)
        time.sleep(4)  # let a wave or two of pages through first
        victim = cluster.nodes[2].pid
        send_signal([victim, *descendants(victim)], signal.SIGKILL)  # a crash, not a clean stop
        worker.join(600)
    finally:
        cluster.stop()
    assert marked_pids(workdir) == []
    return result["run"], out / "round-001"


def test_round_completes_without_the_killed_node_and_loses_nothing(killed_run):
    run, path = killed_run
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
