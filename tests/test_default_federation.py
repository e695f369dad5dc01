"""`flwr run .` on Flower's default federation (2 SuperNodes) uses all four default prototypes.

The same tiny run on 2 and on 4 simulated SuperNodes: both build the dataset from all four
prototypes, with the same bytes, and the 2-node run does not wait ``node-wait-s`` for
SuperNodes that never come.
"""

import json
import time

import pytest

from coopt_flower.config import DEFAULT_PROTOTYPES
from simulations.check_identical import dataset_checksums
from simulations.local_run import run_local_simulation, run_succeeded

pytestmark = pytest.mark.slow

TINY = {"num-samples": 200, "shared-size": 32, "image-size": 32, "target-dim": 64, "page-size": 40,
        "seed": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for nodes in (2, 4):
        path = tmp_path_factory.mktemp(f"nodes-{nodes}")
        started = time.perf_counter()
        # The prototypes are the embedded default's (pyproject's `prototypes`, not overridden).
        run = run_local_simulation(dict(TINY, **{"output-dir": str(path)}), num_supernodes=nodes,
                                   timeout_s=600, echo=False)
        out[nodes] = run, path / "round-001", time.perf_counter() - started
    return out


def test_two_nodes_host_all_four_prototypes(runs):
    run, round_dir, _ = runs[2]
    assert run_succeeded(run), run.output[-3000:]
    assert "participants connected within" not in run.output  # no wait, no one left out
    report = json.loads((round_dir / "report.json").read_text())
    participants = report["participants"]
    assert [p["prototype"] for p in participants] == list(DEFAULT_PROTOTYPES)
    assert [p["slot"] for p in participants] == [0, 1, 2, 3]
    # Partition i of 2 hosts slots i and i + 2.
    nodes = [p["node_id"] for p in participants]
    assert nodes[0] == nodes[2] != nodes[1] == nodes[3]
    assert sum(p["num_samples"] for p in participants) == 200
    assert "| node |" in (round_dir / "report.md").read_text()


def test_two_nodes_write_the_bytes_of_four_in_about_the_time(runs):
    (run2, dir2, seconds2), (run4, dir4, seconds4) = runs[2], runs[4]
    assert run_succeeded(run4), run4.output[-3000:]
    assert dataset_checksums(dir2) == dataset_checksums(dir4)
    print(f"2 SuperNodes: {seconds2:.1f} s, 4 SuperNodes: {seconds4:.1f} s")
    # Both run two ClientApps at a time on this machine (num-cpus 1 each); 120 s would mean a wait.
    assert seconds2 < 1.5 * seconds4 + 15
