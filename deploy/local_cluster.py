"""A real Flower deployment of coopt-flower: one SuperLink, N SuperNodes, TLS and node auth.

This is Flower's deployment runtime (``flower-superlink`` / ``flower-supernode`` / ``flwr
run``), not the simulation engine. TLS and SuperNode authentication are on by default:

- ``certs/``: a private CA and the SuperLink's server certificate (:mod:`deploy.pki`). The
  SuperLink serves its Fleet, Control and Runtime APIs over HTTPS on one port.
- ``keys/``: one EC P-384 key pair per SuperNode (OpenSSH format). The SuperLink runs with
  ``--enable-supernode-auth``; each public key is registered with ``flwr supernode register``
  through the Control API before its SuperNode starts. A SuperNode whose key is not
  registered is refused (it exits with Flower exit code 305, "Failed to activate SuperNode").
- ``flwr-home/config.toml``: the connection ``flwr`` uses (``address`` + ``root-certificates``),
  in a private ``FLWR_HOME`` so the user's own ``~/.flwr`` is never touched.
- Isolation: Flower's default ``subprocess`` mode on both sides. The SuperLink starts a
  ``flower-superexec`` that launches ``flwr-serverapp`` per run; each SuperNode starts a
  ``flower-superexec`` that launches one ``flwr-clientapp`` process per run (prototypes are
  loaded once per run, not once per message). The SuperNode's own Runtime API, which only its
  ``flwr-clientapp`` talks to, is bound to 127.0.0.1 without TLS (Flower's default).
- Runtime dependency installation is off (``--disable-runtime-dependency-installation`` and
  ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``): every machine uses this environment.
- Every process we start gets a pid file in ``pids/`` and the environment variable
  ``COOPT_DEPLOY_WORKDIR=<workdir>``; :func:`stop_workdir` stops each pid, the processes it
  started, and any process still carrying the marker (Flower's ``flower-superexec`` children
  are detached or outlive their parent for a moment), by PID: SIGTERM, then SIGKILL.

Modules: :mod:`deploy.flower` (binaries, environment, TOML values, connection config, shared
with the local simulation driver), :mod:`deploy.processes` (process trees, with psutil),
:mod:`deploy.workdir` (state file, pid files, stopping), :mod:`deploy.runs` (``flwr run`` and
the run's status), :mod:`deploy.pki` (certificates and keys). This module holds
:class:`LocalCluster` and the lone SuperNode of a participant's machine; :mod:`deploy.cluster`
is the command line above it (``python -m deploy.cluster``) and re-exports the names callers
import.

Node order: the platform sorts participants by ``partition-id`` when nodes report one, else by
node id (random in deployment). :class:`LocalCluster` therefore gives node ``i`` the node
config ``partition-id=i`` unless one is set, so shards go to prototypes in the same order as
in simulation.

Python (``from deploy.cluster import LocalCluster`` works too)::

    with LocalCluster(2, [{"prototype": "efficientnet-lite0"}, {"prototype": "onnx:open-nsfw"}],
                      workdir="/tmp/cluster") as cluster:
        returncode, output = cluster.run_app({"num-samples": 120, "output-dir": "/abs/out"})
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import psutil

from coopt_flower.config import DEFAULT_PROTOTYPES
from coopt_flower.errors import one_line
from deploy.netns import Hosts
from deploy.flower import APP_DIR, CONNECTION, flower_bin, free_port, node_config_arg, port_open, write_connection
from deploy.pki import NodeKey, TlsFiles, make_certificates, make_node_key, private_dir
from deploy.processes import alive, listening_pids, listens
from deploy.refusals import NODE_ID_RE, key_fingerprint, refusal_reason
from deploy.supernode_launcher import HEARTBEAT_ENV, heartbeat_seconds
from deploy.runs import RunResult, run_app
from deploy.workdir import (
    ClusterError, ClusterState, NodeInfo, check_workdir, read_pid, running_pid, running_pids, spawn,
    StoppedProcess, stop_workdir, workdir_env,
)

REFUSED_MARKERS = ("Failed to activate SuperNode", "Exit Code: 305")
#: The SuperLink runs through this script: Flower's own, with public keys out of its log.
SUPERLINK_LAUNCHER = Path(__file__).with_name("superlink_launcher.py")
#: ... and the SuperNodes through this one: Flower's own, with a configurable heartbeat.
SUPERNODE_LAUNCHER = Path(__file__).with_name("supernode_launcher.py")


def heartbeat_env(seconds: float | None) -> dict[str, str]:
    """The environment that sets a SuperNode's heartbeat (none: Flower's default)."""
    return {} if seconds is None else {HEARTBEAT_ENV: f"{seconds:g}"}


def _read_log(path: Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def wait_for_node_id(log: Path, pid: int, timeout_s: float) -> int | None:
    """Poll a SuperNode's log until it names its node id (returned).

    Returns None when the process exits or ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if match := NODE_ID_RE.search(_read_log(log)):
            return int(match.group(1))
        if not alive(pid) or time.monotonic() > deadline:
            return None
        time.sleep(0.3)


def was_refused(log_text: str) -> bool:
    """Whether a SuperNode's log says the SuperLink refused it (key not registered)."""
    return any(marker in log_text for marker in REFUSED_MARKERS) and not NODE_ID_RE.search(log_text)


# ---------------------------------------------------------------------------- the cluster
class LocalCluster:
    """A SuperLink and SuperNodes on this machine, as separate real processes.

    Parameters
    ----------
    num_nodes : int
        SuperNodes to start (0: only the SuperLink, e.g. on a platform machine whose
        participants run elsewhere).
    node_configs : list of dict, optional
        Node config per SuperNode (``prototype``, ``device``, ``partition-id``, ``data`` ...).
        Missing entries default to ``prototype`` from :data:`DEFAULT_PROTOTYPES` and
        ``device='cpu'``; ``partition-id`` defaults to the node's index.
    tls, auth : bool
        TLS on the SuperLink's APIs; SuperNode authentication (needs TLS).
    workdir : path, optional
        Where certificates, keys, logs, pid files and the private ``FLWR_HOME`` go (a new
        temporary directory when omitted). Certificates and keys already there are reused.
    port : int, optional
        The SuperLink's one HTTP(S) port (Fleet, Control and Runtime APIs); a free one when
        omitted. SuperNode Runtime API ports are picked free too.
    bind : str
        Interface the SuperLink listens on (``0.0.0.0`` to accept SuperNodes of other machines).
    hosts : list of str
        Extra names/IPs for the server certificate (the names other machines use).
    start_timeout_s : float
        How long to wait for the SuperLink and for each SuperNode to connect.
    network : deploy.netns.Hosts, optional
        Separate hosts on this machine (opened; one named ``superlink`` and one per node name,
        ``node-0`` ...): each process runs in its host's network namespace, the SuperLink bound
        to its host's address (``bind`` is ignored); each SuperNode's Flower home and key, and
        the SuperLink's home and private keys, are hidden from every other host. The caller
        closes the network after :meth:`stop`.
    """

    def __init__(self, num_nodes: int = 2, node_configs: list[Mapping[str, Any]] | None = None, *,
                 tls: bool = True, auth: bool = True, workdir: str | Path | None = None,
                 port: int | None = None, bind: str = "127.0.0.1", hosts: Iterable[str] = (),
                 app_dir: Path = APP_DIR, start_timeout_s: float = 90.0,
                 node_ports: Iterable[int] | None = None, heartbeat_s: float | None = None,
                 network: Hosts | None = None) -> None:
        if auth and not tls:
            raise ValueError("SuperNode authentication needs TLS (Flower refuses it otherwise)")
        configs = [dict(c) for c in (node_configs or [])]
        if len(configs) > num_nodes:
            raise ValueError(f"{len(configs)} node configs for {num_nodes} nodes")
        configs += [{} for _ in range(num_nodes - len(configs))]
        self.node_configs = [self._default_node_config(i, c) for i, c in enumerate(configs)]
        self.tls, self.auth = tls, auth
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="coopt-cluster-")).resolve()
        self.app_dir = Path(app_dir).resolve()
        check_workdir(self.workdir, self.app_dir)
        self.network = network
        self.bind = network["superlink"].address if network else bind
        self.hosts = list(hosts)
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._node_ports = list(node_ports or [])
        self.heartbeat_s = heartbeat_seconds(None if heartbeat_s is None else str(heartbeat_s))
        self.state: ClusterState | None = None
        self.tls_files: TlsFiles | None = None

    @staticmethod
    def _default_node_config(index: int, config: dict[str, Any]) -> dict[str, Any]:
        out = {"prototype": DEFAULT_PROTOTYPES[index % len(DEFAULT_PROTOTYPES)], "device": "cpu"}
        out.update(config)
        out.setdefault("partition-id", index)
        return out

    # -------------------------------------------------------------- paths
    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def pid_dir(self) -> Path:
        return self.workdir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def address(self) -> str:
        assert self.state is not None, "cluster not started"
        return self.state.address

    @property
    def nodes(self) -> list[NodeInfo]:
        return self.state.nodes if self.state else []

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Certificates, keys, SuperLink, registrations, SuperNodes; stops all on failure."""
        private_dir(self.workdir)
        for d in (self.pid_dir, self.log_dir):
            private_dir(d)
        if running_pids(self.workdir):
            raise ClusterError(f"{self.workdir} already runs a cluster (pid files in "
                               f"{self.pid_dir}); stop it first (`down --workdir {self.workdir}`)")
        for stale in self.pid_dir.glob("*.pid"):  # from a cluster whose processes are gone
            stale.unlink()
        try:
            self._start_superlink()
            if self.network:
                self._declare_private()
            for index, config in enumerate(self.node_configs):
                self.add_node(config, name=f"node-{index}")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_superlink(self) -> None:
        port = self.port or free_port()
        connect_host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "127.0.0.1") else self.bind
        self.state = ClusterState(str(self.workdir), connect_host, port, self.tls, self.auth)
        command = [sys.executable, str(SUPERLINK_LAUNCHER), "--host", self.bind, "--port", str(port),
                   "--disable-runtime-dependency-installation"]
        if self.tls:
            self.tls_files = make_certificates(self.workdir / "certs", [*self.hosts, connect_host])
            self.state.ca_cert = str(self.tls_files.ca_cert)
            command += ["--ssl-ca-certfile", str(self.tls_files.ca_cert),
                        "--ssl-certfile", str(self.tls_files.server_cert),
                        "--ssl-keyfile", str(self.tls_files.server_key)]
        else:
            command += ["--insecure"]
        if self.auth:
            command += ["--enable-supernode-auth"]
        port_in_use(connect_host, port)
        superlink_dir = private_dir(self.workdir / "superlink")
        pid = self._spawn("superlink", command, flwr_home=superlink_dir, cwd=superlink_dir)
        write_connection(self.flwr_home, self.state.address,
                         self.tls_files.ca_cert if self.tls else None)
        self.state.save()
        # Success means *our* SuperLink is alive and listening: something else answering on
        # the port (another SuperLink) is not success.
        deadline = time.monotonic() + self.start_timeout_s
        while not (port_open(connect_host, port) and listens(pid, port) is not False):
            if not alive(pid) or time.monotonic() > deadline:
                lines = self.log_tail("superlink", 2000).strip().splitlines()
                tail = one_line(lines[-1]) if lines else "no output"
                state = "exited" if not alive(pid) else f"is not listening on port {port}"
                raise ClusterError(f"the SuperLink (pid {pid}) {state}: {tail} "
                                   f"(log: {self.log_dir / 'superlink.log'})")
            time.sleep(0.2)

    def add_node(self, node_config: Mapping[str, Any] | None = None, *, name: str | None = None,
                 register: bool = True, wait: bool = True) -> NodeInfo:
        """Start one more SuperNode (``register=False``: its key is not registered).

        With ``wait`` (default) this returns once the node has connected, and raises
        :class:`ClusterError` if it exits or does not connect in time; an unregistered node
        is expected to be refused, so for it ``wait`` returns once it has exited.
        """
        assert self.state is not None, "start the SuperLink first"
        index = len(self.state.nodes)
        name = name or f"node-{index}"
        config = self._default_node_config(index, dict(node_config or {}))
        port = self._node_ports[index] if index < len(self._node_ports) else free_port()
        node = NodeInfo(name, config, port, register=register)
        node_dir = self._node_dir(name)
        command = [sys.executable, str(SUPERNODE_LAUNCHER), "--superlink", self.state.address,
                   "--node-config", node_config_arg(config), "--port", str(port)]
        if self.tls:
            command += ["--root-certificates", self.state.ca_cert]
        else:
            command += ["--insecure"]
        if self.auth:
            key = self._node_key(name)
            node.key = str(key.private)
            command += ["--auth-supernode-private-key", str(key.private)]
            if register:
                node.node_id = self.register(key)
        node.log = str(self.log_dir / f"{name}.log")
        node.pid = self._spawn(name, command, flwr_home=node_dir, cwd=node_dir, env=heartbeat_env(self.heartbeat_s))
        self.state.nodes.append(node)
        self.state.save()
        if wait:
            self.wait_for_node(node)
        return node

    def register(self, key: NodeKey | Path) -> int:
        """``flwr supernode register KEY.pub`` through the Control API; returns the node id."""
        public = key.public if isinstance(key, NodeKey) else Path(key)
        proc = self.flwr("supernode", "register", str(public), CONNECTION, "--format", "json")
        try:
            reply = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            reply = {}
        if not reply.get("success"):
            raise ClusterError(f"registering {public} failed:\n{proc.stdout}\n{proc.stderr}")
        return int(reply["node-id"])

    def wait_for_node(self, node: NodeInfo, timeout_s: float | None = None) -> None:
        """Until ``node`` says it connected; for an unregistered node, until it was refused."""
        timeout_s = timeout_s or self.start_timeout_s
        node_id = wait_for_node_id(self.log_dir / f"{node.name}.log", node.pid or -1, timeout_s)
        if node_id is not None:
            node.node_id = node_id
            assert self.state is not None
            self.state.save()
            return
        text = self.log_tail(node.name, 3000)
        reason = self.why_not_connected(self.log_dir / f"{node.name}.log", key=node.key, pid=node.pid)
        because = f": {reason}" if reason else ""
        if alive(node.pid or -1):
            raise ClusterError(f"SuperNode {node.name} did not connect within {timeout_s:.0f} s{because}\n{text}")
        if node.register:
            raise ClusterError(f"SuperNode {node.name} exited{because}\n{text}")
        # An unregistered node is expected to be refused (see `node_refused`).

    def node_refused(self, node: NodeInfo) -> bool:
        """True when the SuperLink refused ``node`` (its log says so and it is gone)."""
        return was_refused(self.log_tail(node.name, 20000)) and not alive(node.pid or -1)

    def why_not_connected(self, node_log: str | Path, *, key: str | Path | None = None,
                          superlink: str | None = None, pid: int | None = None) -> str | None:
        """One line on why the SuperNode with this log is not connected (None if it is): its
        key unknown or in use (told apart by this SuperLink's log), TLS, or unreachable."""
        text = _read_log(Path(node_log))
        fingerprint = ""
        if key and Path(f"{key}.pub").is_file():
            fingerprint = key_fingerprint(f"{key}.pub")
        return refusal_reason(text, superlink=superlink or (self.state.address if self.state else ""),
                              superlink_log=self.log_tail("superlink", 200000), fingerprint=fingerprint,
                              alive=alive(pid) if pid else False)

    def stop(self, grace_s: float = 10.0) -> list[StoppedProcess]:
        """Stop every process of this cluster by PID and start time (nodes first), then what
        they started; returns each stopped process, named (:func:`describe_stopped`)."""
        return stop_workdir(self.workdir, grace_s)

    # -------------------------------------------------------------- runs
    def flwr(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """A ``flwr`` CLI command with this cluster's private ``FLWR_HOME``."""
        return subprocess.run([flower_bin("flwr"), *args], env=workdir_env(self.flwr_home, self.workdir),
                              cwd=self.app_dir, capture_output=True, text=True, timeout=timeout_s)

    def run_app(self, run_config: Mapping[str, Any] | None = None, *, timeout_s: float = 900.0,
                echo: bool = False) -> RunResult:
        """``flwr run <app> coopt --stream`` with ``run_config`` overrides.

        ``num-participants`` (``min-participants`` in app versions without it) defaults to the
        number of SuperNodes started here that are still running (the app would otherwise
        wait ``node-wait-s`` for one node per entry of ``prototypes``). Returns
        ``(returncode, output, run_id, status)``: ``returncode`` is 0 only when the run's final
        status is ``finished:completed`` (``flwr run --stream`` exits 0 after a failed
        ServerApp, so the status is read back with ``flwr ls``).
        """
        return run_app(self.workdir, run_config, timeout_s=timeout_s, echo=echo, app_dir=self.app_dir)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        """The last ``chars`` characters of process ``name``'s log ("" before it has one)."""
        return _read_log(self.log_dir / f"{name}.log")[-chars:]

    # -------------------------------------------------------------- internals
    def _spawn(self, name: str, command: list[str], *, flwr_home: Path, cwd: Path,
               env: Mapping[str, str] | None = None) -> int:
        if self.network:
            command = self.network.command(name, command)
        return spawn(self.workdir, name, command, flwr_home=flwr_home, cwd=cwd, env=env)

    def _declare_private(self) -> None:
        """On separate hosts: make every configured node's home and key now and declare them,
        with the SuperLink's home and private keys, private to their hosts, so each process
        starts with the others' covered (a path is hidden from processes started after it)."""
        assert self.network is not None
        platform = [self.workdir / "superlink"]
        if self.tls_files:
            platform += [self.tls_files.ca_key, self.tls_files.server_key]
        self.network["superlink"].keep_private(*platform)
        for index in range(len(self.node_configs)):
            name = f"node-{index}"
            paths = [self._node_dir(name)]
            if self.auth:
                paths.append(self._node_key(name).private)
            self.network[name].keep_private(*paths)

    def _node_dir(self, name: str) -> Path:
        """Node ``name``'s private Flower home (made if missing)."""
        return private_dir(private_dir(self.workdir / "nodes") / name)

    def _node_key(self, name: str) -> NodeKey:
        """Node ``name``'s key pair (made once, then reused)."""
        return make_node_key(self.workdir / "keys" / name)

    def _read_pid(self, name: str) -> int:
        pid = read_pid(self.pid_dir / f"{name}.pid")
        return -1 if pid is None else pid


def port_in_use(host: str, port: int) -> None:
    """Refuse a port that something already listens on, in one line naming it and ``--port``."""
    owners = listening_pids(port)
    if port_open(host, port) or owners:
        names = []
        for pid in sorted(owners or ()):
            try:
                names.append(f"{psutil.Process(pid).name()} pid {pid}")
            except psutil.Error:
                names.append(f"pid {pid}")
        by = f" by {', '.join(names)}" if names else ""
        raise ClusterError(f"port {port} is already in use{by}: stop it or choose another port with --port")


# ---------------------------------------------------------------------------- a lone SuperNode
def start_supernode(workdir: Path, *, superlink: str, ca_cert: Path | None, key: Path | None,
                    node_config: Mapping[str, Any], port: int = 9094, name: str = "supernode",
                    heartbeat_s: float | None = None) -> int:
    """Start one detached SuperNode (e.g. on a GPU machine) with a pid file in ``workdir/pids``;
    ``heartbeat_s`` (10-1800) sets how often it reports to the SuperLink (Flower: 30 s), so a
    node that dies is noticed after about twice that."""
    heartbeat = heartbeat_seconds(None if heartbeat_s is None else str(heartbeat_s))
    check_workdir(workdir)
    workdir = private_dir(Path(workdir).resolve())
    if (old := running_pid(workdir, name)) is not None:
        raise ClusterError(f"{name} already runs (pid {old}): run `down --workdir {workdir}` first")
    (workdir / "pids" / f"{name}.pid").unlink(missing_ok=True)
    command = [sys.executable, str(SUPERNODE_LAUNCHER), "--superlink", superlink,
               "--node-config", node_config_arg(node_config), "--port", str(port)]
    command += ["--root-certificates", str(Path(ca_cert).resolve())] if ca_cert else ["--insecure"]
    if key:
        command += ["--auth-supernode-private-key", str(Path(key).resolve())]
    node_dir = private_dir(private_dir(workdir / "nodes") / name)
    return spawn(workdir, name, command, flwr_home=node_dir, cwd=node_dir, env=heartbeat_env(heartbeat))
