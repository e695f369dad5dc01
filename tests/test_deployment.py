"""Deployment: a real `flower-superlink` and `flower-supernode`s with TLS and node auth.

The slow tests start one SuperLink and two registered SuperNodes (plus one whose key is not
registered) on 127.0.0.1, run `flwr run .` against them, and compare the merged dataset with
the local simulation of the same run config. Everything is stopped by PID at the end.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from deploy.cluster import (
    LocalCluster, marked_pids, node_config_arg, parse_node_config, stop_workdir,
)
from deploy.pki import certificate_hosts, make_certificates, make_node_key

RUN_CONFIG = {
    "num-samples": 120, "shared-size": 32, "image-size": 32, "target-dim": 32,
    "page-size": 40, "seed": 3,
}
# Simulation: partition-id i runs PROTOTYPES[i]; deployment: node i gets prototype i and
# partition-id=i in its node config, so the platform orders participants the same way.
PROTOTYPES = ["efficientnet-lite0", "onnx:open-nsfw"]


# ---------------------------------------------------------------------------- fast checks
def test_node_key_is_what_flower_loads(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key

    key = make_node_key(tmp_path / "keys" / "node-0")
    assert key.public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert len(try_load_public_key(key.public)) > 0  # `flwr supernode register KEY.pub`
    private = load_ssh_private_key(key.private.read_bytes(), None)  # flower-supernode
    assert private.curve.name == "secp384r1"
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.private.parent.stat().st_mode) == 0o700
    assert make_node_key(tmp_path / "keys" / "node-0").public.read_text() == key.public.read_text()


def test_certificates_name_the_hosts_and_are_private(tmp_path):
    files = make_certificates(tmp_path / "certs", ["platform.example.org", "10.0.0.7"])
    assert set(certificate_hosts(files.server_cert)) == {
        "platform.example.org", "10.0.0.7", "127.0.0.1", "localhost"}
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)  # key matches certificate


def test_server_certificate_verifies_under_its_host_names(tmp_path):
    """A client holding only ca.crt accepts the SuperLink under each --host name, no other."""
    import threading

    files = make_certificates(tmp_path / "certs", ["platform.example.org"])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    results = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve(n):
            for _ in range(n):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True):
                        pass
                except (ssl.SSLError, OSError):
                    pass

        names = ["platform.example.org", "localhost", "127.0.0.1", "other.example.org"]
        thread = threading.Thread(target=serve, args=(len(names),), daemon=True)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
        for name in names:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    with client_ctx.wrap_socket(sock, server_hostname=name):
                        results[name] = True
            except ssl.SSLCertVerificationError:
                results[name] = False
        thread.join(10)
    assert results == {"platform.example.org": True, "localhost": True, "127.0.0.1": True,
                       "other.example.org": False}
    # Existing certificates are reused, but not for a name they do not cover.
    assert make_certificates(tmp_path / "certs", ["platform.example.org"]) == files
    with pytest.raises(ValueError, match="does not name new.example.org"):
        make_certificates(tmp_path / "certs", ["new.example.org"])


def test_node_config_round_trips_through_flowers_parser():
    config = {"prototype": "open_clip:ViT-B-32@/data/w.safetensors", "device": "cuda",
              "partition-id": 3}
    assert node_config_arg(config) == ('prototype="open_clip:ViT-B-32@/data/w.safetensors" '
                                       'device="cuda" partition-id=3')
    assert parse_node_config(node_config_arg(config)) == config


def test_auth_without_tls_and_a_workdir_inside_the_app_are_rejected(tmp_path):
    from deploy.cluster import APP_DIR

    with pytest.raises(ValueError, match="TLS"):
        LocalCluster(1, tls=False, auth=True, workdir=tmp_path)
    with pytest.raises(ValueError, match="inside the app directory"):
        LocalCluster(1, workdir=APP_DIR / "deploy" / ".cluster")  # would end up in the FAB


# ---------------------------------------------------------------------------- real processes
@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Simulation and deployment of the same run; the cluster is stopped before the tests."""
    from simulations.local_run import run_local_simulation

    out = tmp_path_factory.mktemp("coopt-out")
    workdir = tmp_path_factory.mktemp("cluster")
    timings = {}

    t = time.perf_counter()
    sim = run_local_simulation({**RUN_CONFIG, "prototypes": ",".join(PROTOTYPES),
                                "output-dir": str(out / "sim")},
                               num_supernodes=len(PROTOTYPES), timeout_s=600, echo=False,
                               flwr_home=tmp_path_factory.mktemp("flwr-home"))
    timings["simulation"] = time.perf_counter() - t

    t = time.perf_counter()
    cluster = LocalCluster(len(PROTOTYPES), [{"prototype": p, "device": "cpu"} for p in PROTOTYPES],
                           workdir=workdir)
    info: dict = {}
    try:
        cluster.start()
        timings["cluster start"] = time.perf_counter() - t
        rogue = cluster.add_node({"prototype": "efficientnet-lite0", "device": "cpu",
                                  "partition-id": 7}, name="rogue", register=False)
        info["rogue_refused"] = cluster.node_refused(rogue)
        info["rogue_log"] = cluster.log_tail("rogue")
        nodes = cluster.flwr("supernode", "ls", "coopt", "--format", "json").stdout
        info["listed_nodes"] = json.loads(nodes[nodes.index("{"):])["nodes"]
        info["registered_ids"] = [n.node_id for n in cluster.nodes if n.register]
        info["superlink_cmdline"] = open(f"/proc/{cluster._read_pid('superlink')}/cmdline",
                                         "rb").read().split(b"\0")
        info["tls_probe"] = _probe_tls(cluster.state.host, cluster.state.port, cluster.state.ca_cert)
        t = time.perf_counter()
        run = cluster.run_app({**RUN_CONFIG, "output-dir": str(out / "dep")}, timeout_s=600)
        timings["deployment run"] = time.perf_counter() - t
        info["superlink_log"] = cluster.log_tail("superlink", 200000)
    finally:
        info["stopped"] = cluster.stop()
    info["left"] = marked_pids(workdir)
    print(f"\n[test_deployment] timings: {timings}")
    return {"sim": sim, "run": run, "sim_path": out / "sim" / "round-001",
            "dep_path": out / "dep" / "round-001", "cluster": cluster, **info}


def _probe_tls(host: str, port: int, ca_cert: str) -> dict:
    """Does the SuperLink speak TLS with our CA, and refuse clients without it?"""
    result = {}
    ctx = ssl.create_default_context(cafile=ca_cert)
    with socket.create_connection((host, port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            result["verified_with_ca"] = tls.version()
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
                result["verified_without_ca"] = True
    except ssl.SSLCertVerificationError:
        result["verified_without_ca"] = False
    return result


@pytest.mark.slow
def test_deployment_run_completes(deployment):
    run = deployment["run"]
    assert run.returncode == 0 and run.status == "finished:completed", run.output[-4000:]
    assert deployment["dep_path"].is_dir(), run.output[-4000:]
    assert deployment["sim"].returncode == 0, deployment["sim"].output[-4000:]


@pytest.mark.slow
def test_deployment_equals_simulation(deployment):
    from coopt_flower.dataset_format import load_optimized_dataset

    sim = load_optimized_dataset(deployment["sim_path"])
    dep = load_optimized_dataset(deployment["dep_path"])
    assert np.array_equal(dep.sample_ids, sim.sample_ids)
    assert np.array_equal(np.asarray(dep.owners), np.asarray(sim.owners))
    assert [p.prototype for p in dep.manifest.participants] == PROTOTYPES
    assert [p.prototype for p in sim.manifest.participants] == PROTOTYPES
    assert dep.manifest.shared_ids == sim.manifest.shared_ids
    a = np.load(deployment["dep_path"] / "targets.npy").astype(np.float32)
    b = np.load(deployment["sim_path"] / "targets.npy").astype(np.float32)
    assert a.shape == b.shape == (120, 32)
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # float16 storage, CPU threads


@pytest.mark.slow
def test_only_registered_nodes_take_part(deployment):
    manifest = json.loads((deployment["dep_path"] / "manifest.json").read_text())
    assert [p["node_id"] for p in manifest["participants"]] == deployment["registered_ids"]
    listed = {int(n["node-id"]) for n in deployment["listed_nodes"]}
    assert listed == set(deployment["registered_ids"])


@pytest.mark.slow
def test_unregistered_supernode_is_refused(deployment):
    assert deployment["rogue_refused"], deployment["rogue_log"]
    assert "No SuperNode found with the given public key" in deployment["superlink_log"]


@pytest.mark.slow
def test_tls_and_node_auth_are_on(deployment):
    cmdline = deployment["superlink_cmdline"]
    for flag in (b"--enable-supernode-auth", b"--ssl-certfile", b"--ssl-keyfile",
                 b"--ssl-ca-certfile", b"--disable-runtime-dependency-installation"):
        assert flag in cmdline
    assert b"--insecure" not in cmdline
    assert deployment["tls_probe"]["verified_with_ca"].startswith("TLS")
    assert deployment["tls_probe"]["verified_without_ca"] is False


@pytest.mark.slow
def test_every_process_is_stopped(deployment):
    cluster = deployment["cluster"]
    assert deployment["stopped"], "nothing was stopped: were the processes tracked?"
    assert deployment["left"] == []
    assert not list(cluster.pid_dir.glob("*.pid"))
    assert stop_workdir(cluster.workdir) == []  # idempotent
