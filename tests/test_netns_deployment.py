"""A deployment on separate hosts: the SuperLink and each SuperNode in a network namespace of
its own, each SuperNode with a data directory no other node can see (a mount namespace per
host covers the others' private paths).

One run on loopback and the same run on the hosts give the same dataset byte for byte; a second
run on the hosts loses a SuperNode mid-round and still holds every sample once. Skipped with
the reason where namespaces cannot be made (not root, no ``ip``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coopt_flower.data import open_source, select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from deploy.cluster import LocalCluster, marked_pids
from deploy.netns import Hosts, why_not
from deploy.faults import kill_node_mid_round

pytestmark = pytest.mark.slow
RUN_CONFIG = {"num-samples": 80, "shared-size": 16, "image-size": 32, "target-dim": 16,
              "page-size": 10, "seed": 8, "upload-local-images": True}
# node-2 holds images of its own; node-1 is the one killed in the second run.
NODES = [{"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": 0},
         {"prototype": "efficientnet-lite0", "device": "cpu", "partition-id": 1},
         {"prototype": "efficientnet-lite1", "device": "cpu", "partition-id": 2}]
ARRAYS = ("targets.npy", "owners.npy", "sample_ids.npy")
LOCAL_IMAGES = 12


def arrays_of(round_dir: Path) -> dict[str, bytes]:
    names = [*ARRAYS, *(p.name for p in round_dir.glob("local_images_*.npy"))]
    return {name: (round_dir / name).read_bytes() for name in names}


def write_local_images(folder: Path) -> None:
    test = open_source("fashion-mnist:test")
    for i in range(LOCAL_IMAGES):
        label = int(test.labels(np.array([i]))[0])
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images(np.array([i]))[0]).save(folder / f"class{label}" / f"img{i:02d}.png")


@pytest.fixture(scope="module")
def separate_hosts():
    reason = why_not()
    if reason:
        pytest.skip(f"separate hosts cannot be made here: {reason}")
    base = Path(tempfile.mkdtemp(prefix="coopt-hosts-"))
    base.chmod(0o711)
    images = base / "node-2-images"
    write_local_images(images)
    nodes = [dict(c) for c in NODES]
    nodes[2]["local-data"] = f"folder:{images}"
    out = base / "out"
    out.mkdir()
    found: dict = {}
    t0 = time.monotonic()
    lap = lambda what: print(f"[netns] {what}: {time.monotonic() - t0:.0f} s", flush=True)  # noqa: E731
    try:
        with LocalCluster(3, nodes, workdir=base / "loopback") as loopback:
            found["loopback"] = loopback.run_app({**RUN_CONFIG, "output-dir": str(out / "loopback")},
                                                 timeout_s=600)
        found["loopback left"] = marked_pids(base / "loopback")
        lap("loopback run")

        hosts = Hosts(["superlink", "node-0", "node-1", "node-2"]).open()
        try:
            hosts["node-2"].keep_private(images)  # node-2's alone from now on
            hosts["superlink"].keep_private(out)  # the platform's output
            cluster = LocalCluster(3, nodes, workdir=base / "hosts", network=hosts, heartbeat_s=10)
            try:
                cluster.start()
                found["address"] = cluster.address
                found["probes"] = probes(hosts, cluster, images)
                lap("hosts up")
                found["hosts"] = cluster.run_app({**RUN_CONFIG, "output-dir": str(out / "hosts")}, timeout_s=600)
                lap("hosts run")
                # The same run again, node-1 (a shard of the platform's data) killed mid-round.
                run, _ = kill_node_mid_round(cluster, {**RUN_CONFIG, "output-dir": str(out / "killed")}, 1)
                found["killed"] = {"run": run, "path": out / "killed" / "round-001"}
                lap("killed run")
            finally:
                found["stopped"] = cluster.stop()
            found["hosts left"] = marked_pids(base / "hosts")
        finally:
            found["network left"] = hosts.close()
        yield found, out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def probes(hosts: Hosts, cluster: LocalCluster, images: Path) -> dict:
    """What each host can reach and read, asked from the hosts themselves."""
    port = cluster.state.port
    connect = ("import socket,sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)"
               "\n    print('open')\nexcept OSError as e:\n    print(type(e).__name__)")
    listing = "import os,sys\nprint('read' if os.listdir(sys.argv[1]) else 'empty')"
    content = "import sys\nprint('read' if open(sys.argv[1], 'rb').read() else 'empty')"

    def run(name: str, code: str, *args: str) -> str:
        proc = subprocess.run(hosts.command(name, [sys.executable, "-c", code, *args]),
                              capture_output=True, text=True, timeout=60)
        return (proc.stdout or proc.stderr).strip()

    return {
        "node-0 to superlink": run("node-0", connect, hosts["superlink"].address, str(port)),
        "node-0 to its loopback": run("node-0", connect, "127.0.0.1", str(port)),
        "node-2 reads its images": run("node-2", listing, str(images)),
        "node-0 reads node-2's images": run("node-0", listing, str(images)),
        "node-0 reads node-1's home": run("node-0", listing, str(cluster.workdir / "nodes" / "node-1")),
        "node-1 reads its key": run("node-1", content, str(cluster.workdir / "keys" / "node-1")),
        "node-0 reads node-1's key": run("node-0", content, str(cluster.workdir / "keys" / "node-1")),
        "node-0 reads the server key": run("node-0", content, str(cluster.tls_files.server_key)),
        "node-0 reads the platform's output": run("node-0", listing, str(images.parent / "out")),
    }


def test_the_superlink_is_reached_at_its_own_address_only(separate_hosts):
    found, _ = separate_hosts
    assert not found["address"].startswith("127."), found["address"]
    assert found["probes"]["node-0 to superlink"] == "open"
    assert found["probes"]["node-0 to its loopback"] == "ConnectionRefusedError"


def test_a_node_cannot_read_another_nodes_files(separate_hosts):
    probes = separate_hosts[0]["probes"]
    assert probes["node-2 reads its images"] == probes["node-1 reads its key"] == "read", probes
    for other in ("node-2's images", "node-1's home", "node-1's key", "the server key", "the platform's output"):
        assert probes[f"node-0 reads {other}"] == "empty", probes


def test_separate_hosts_give_the_loopback_dataset_byte_for_byte(separate_hosts):
    found, out = separate_hosts
    for run in ("loopback", "hosts"):
        assert found[run].returncode == 0, found[run].output[-4000:]
    loopback, hosts = arrays_of(out / "loopback" / "round-001"), arrays_of(out / "hosts" / "round-001")
    assert len(loopback) == len(ARRAYS) + 1  # the node-local images were uploaded
    assert loopback == hosts
    ds = load_optimized_dataset(out / "hosts" / "round-001")  # checksums verified
    [local] = ds.manifest.local_sources
    assert local.participant == "p2" and local.count == LOCAL_IMAGES


def test_a_node_killed_on_its_host_loses_no_sample(separate_hosts):
    killed = separate_hosts[0]["killed"]
    run, path = killed["run"], killed["path"]
    assert run.returncode == 0, run.output[-4000:]
    report = json.loads((path / "report.json").read_text())
    [failure] = report["failures"]
    assert failure["participant"] == "p1" and failure["action"].startswith("reassigned to p0")
    assert report["missing_samples"] == 0
    ds = load_optimized_dataset(path)
    platform = select_samples(60000, RUN_CONFIG["num-samples"], seed=RUN_CONFIG["seed"])
    assert ds.sample_ids.tolist() == platform.tolist() + list(range(60000, 60000 + LOCAL_IMAGES))


def test_nothing_is_left_behind(separate_hosts):
    found, _ = separate_hosts
    assert found["stopped"]
    assert found["loopback left"] == [] and found["hosts left"] == []
    assert found["network left"] == []
