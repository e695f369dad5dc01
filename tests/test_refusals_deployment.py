"""Refusals name their true cause in a real TLS + node-auth cluster (issue 29, item 4):
a key not registered, a key already online, a CA that does not sign the SuperLink's
certificate, a SuperLink that is not there; and no key material in the SuperLink's log."""

from __future__ import annotations

import time

import pytest

from deploy.cluster import LocalCluster, marked_pids
from deploy.flower import free_port
from deploy.local_cluster import start_supernode
from deploy.pki import make_certificates, make_node_key
from deploy.processes import alive

pytestmark = pytest.mark.slow
NODE = {"prototype": "efficientnet-lite0", "device": "cpu"}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    keys = tmp_path_factory.mktemp("keys")
    other_ca = make_certificates(tmp_path_factory.mktemp("other-ca")).ca_cert
    cluster = LocalCluster(1, [dict(NODE, **{"partition-id": 0})], workdir=workdir)
    reasons = {}
    try:
        cluster.start()
        address, ca, online_key = cluster.state.address, cluster.state.ca_cert, cluster.nodes[0].key
        fresh = make_node_key(keys / "fresh").private
        cases = {"key in use": (address, ca, online_key), "key unknown": (address, ca, fresh),
                 "wrong CA": (address, other_ca, online_key),
                 "unreachable": (f"127.0.0.1:{free_port()}", ca, fresh)}
        pids = {name: start_supernode(workdir, superlink=link, ca_cert=cert, key=key, node_config=NODE,
                                      port=free_port(), name=name.replace(" ", "-"))
                for name, (link, cert, key) in cases.items()}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            retries = cluster.log_tail("unreachable", 20000).count("Connection attempt failed")
            if retries >= 3 and not any(alive(pids[n]) for n in cases if n != "unreachable"):
                break
            time.sleep(0.5)
        for name, (link, _, key) in cases.items():
            reasons[name] = cluster.why_not_connected(cluster.log_dir / f"{name.replace(' ', '-')}.log",
                                                      key=key, superlink=link, pid=pids[name])
        reasons["online node"] = cluster.why_not_connected(cluster.log_dir / "node-0.log", key=online_key)
        superlink_log = cluster.log_tail("superlink", 10**7)
    finally:
        cluster.stop()
    assert marked_pids(workdir) == []
    return reasons, superlink_log


def test_each_refusal_names_its_cause(refusals):
    reasons, _ = refusals
    assert reasons["key unknown"].startswith("its key is not registered on the SuperLink"), reasons
    assert reasons["key in use"].startswith("its key is already in use: a SuperNode with the same key"), reasons
    assert reasons["wrong CA"].startswith("TLS certificate mismatch"), reasons
    assert reasons["unreachable"].startswith("SuperLink unreachable at 127.0.0.1:"), reasons
    assert reasons["online node"] is None


def test_the_superlink_log_holds_no_key_material(refusals):
    _, superlink_log = refusals
    assert "ApiError:2004" in superlink_log  # the refusals were logged ...
    assert "BEGIN PUBLIC KEY" not in superlink_log and "<public key sha256:" in superlink_log  # ... keyless
