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

Node order: the platform sorts participants by ``partition-id`` when nodes report one, else by
node id (random in deployment). :class:`LocalCluster` therefore gives node ``i`` the node
config ``partition-id=i`` unless one is set, so shards go to prototypes in the same order as
in simulation.

Python::

    with LocalCluster(2, [{"prototype": "efficientnet-lite0"}, {"prototype": "onnx:open-nsfw"}],
                      workdir="/tmp/cluster") as cluster:
        returncode, output = cluster.run_app({"num-samples": 120, "output-dir": "/abs/out"})

CLI (``python -m deploy.cluster --help``)::

    python -m deploy.cluster up \\
        --node-config "prototype='efficientnet-lite0' device='cpu'" \\
        --node-config "prototype='onnx:open-nsfw' device='cpu'"
    python -m deploy.cluster run -c "num-samples=1000 output-dir='/abs/out'"
    python -m deploy.cluster down

(workdir ``~/.coopt-flower/cluster`` unless ``--workdir``/``COOPT_DEPLOY_DIR``; it must be outside
the app directory). Separate machines: ``up --nodes 0 --bind 0.0.0.0 --host NAME`` on the
platform, ``keygen`` + ``supernode`` on each participant, ``register`` on the platform; see the
README section "Deployment on separate machines".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from coopt_flower.config import DEFAULT_PROTOTYPES
from deploy.pki import NodeKey, TlsFiles, make_certificates, make_node_key, private_dir

APP_DIR = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent
MARKER_ENV = "COOPT_DEPLOY_WORKDIR"
CONNECTION = "coopt"
STATE_FILE = "cluster.json"
NODE_ID_RE = re.compile(r"SuperNode ID: (\d+)")
RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
REFUSED_MARKERS = ("Failed to activate SuperNode", "Exit Code: 305")


class ClusterError(RuntimeError):
    """A process did not start, a node did not connect, or a run failed to launch."""


class RunResult(NamedTuple):
    """What :meth:`LocalCluster.run_app` returns (unpacks as ``returncode, output``)."""

    returncode: int
    output: str
    run_id: int | None = None
    status: str = ""


# ---------------------------------------------------------------------------- small helpers
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def toml_value(value: Any) -> str:
    """A Python scalar as a TOML value (what ``--node-config`` and ``--run-config`` parse)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_config_arg(config: Mapping[str, Any]) -> str:
    """``{"prototype": "x", "partition-id": 0}`` -> ``prototype="x" partition-id=0``."""
    return " ".join(f"{key}={toml_value(value)}" for key, value in config.items())


def parse_node_config(text: str) -> dict[str, Any]:
    """Inverse of :func:`node_config_arg`, with Flower's own parser."""
    from flwr.common.config import parse_config_args

    return dict(parse_config_args([text])) if text.strip() else {}


def flower_env(flwr_home: Path, workdir: Path) -> dict[str, str]:
    """Environment for every Flower process we start."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        PYTHONUNBUFFERED="1",
        # Flower starts `flower-superexec`, `flwr-serverapp`, `flwr-clientapp` by name.
        PATH=os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
    )
    env[MARKER_ENV] = str(workdir)
    return env


def flower_bin(name: str) -> str:
    path = BIN_DIR / name
    return str(path) if path.exists() else name


def write_connection(flwr_home: Path, address: str, ca_cert: Path | None, name: str = CONNECTION) -> Path:
    """``$FLWR_HOME/config.toml`` with one SuperLink connection, made the default."""
    private_dir(flwr_home)
    lines = ["[superlink]", f"default = {toml_value(name)}", "", f"[superlink.{name}]",
             f"address = {toml_value(address)}"]
    if ca_cert is not None:
        lines.append(f"root-certificates = {toml_value(str(Path(ca_cert).resolve()))}")
    else:
        lines.append("insecure = true")
    path = flwr_home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------- processes
def _proc_table() -> dict[int, int]:
    """pid -> parent pid of every visible process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after it.
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(entry.name)] = int(fields[1])
    return table


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for child, parent in _proc_table().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def marked_pids(workdir: Path) -> list[int]:
    """Processes whose environment carries ``COOPT_DEPLOY_WORKDIR=<workdir>``."""
    marker = f"{MARKER_ENV}={Path(workdir).resolve()}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


_children: list[subprocess.Popen] = []  # processes this Python process started


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaps our own exited children)."""
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2] != "Z"


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_pids(pids: Iterable[int], grace_s: float = 10.0) -> list[int]:
    """SIGTERM ``pids`` and their descendants; SIGKILL what is left after ``grace_s``."""
    pids = [p for p in dict.fromkeys(pids) if alive(p)]
    targets = list(dict.fromkeys(pids + [d for p in pids for d in descendants(p)]))
    if not targets:
        return []
    _signal(targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in targets):
        time.sleep(0.1)
    left = [p for p in targets if alive(p)]
    left += [d for p in left for d in descendants(p)]
    _signal(left, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in left):
        time.sleep(0.1)
    return targets


def _pid_is_ours(pid: int, workdir: Path) -> bool:
    """Guard against a recycled PID: the process must carry this workdir's marker."""
    return pid in marked_pids(workdir)


def running_pids(workdir: Path) -> list[int]:
    """PIDs from ``workdir/pids/*.pid`` that still run and belong to this workdir."""
    workdir = Path(workdir).resolve()
    pids = []
    for pid_file in sorted((workdir / "pids").glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if alive(pid) and _pid_is_ours(pid, workdir):
            pids.append(pid)
    return pids


def check_workdir(workdir: Path, app_dir: Path = APP_DIR) -> None:
    """Refuse a workdir inside the app: it would end up in every FAB ``flwr run`` builds."""
    if Path(workdir).resolve().is_relative_to(Path(app_dir).resolve()):
        raise ValueError(f"workdir {workdir} is inside the app directory {app_dir}: `flwr run` "
                         "would pack its files (installed app copies, configs) into the FAB; "
                         "use a directory outside it (default ~/.coopt-flower/cluster)")


def stop_workdir(workdir: Path, grace_s: float = 10.0) -> list[int]:
    """Stop everything started for ``workdir``: pid files first, then marked stragglers."""
    workdir = Path(workdir).resolve()
    pid_dir = workdir / "pids"
    stopped: list[int] = []
    # SuperNodes first (they leave the federation), the SuperLink last.
    pid_files = sorted(pid_dir.glob("*.pid"), key=lambda p: p.stem == "superlink") if pid_dir.is_dir() else []
    for pid_file in pid_files:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = None
        if pid is not None and _pid_is_ours(pid, workdir):
            stopped += stop_pids([pid], grace_s)
        pid_file.unlink(missing_ok=True)
    stragglers = marked_pids(workdir)
    if stragglers:
        stopped += stop_pids(stragglers, grace_s=3.0)
    return stopped


@dataclass
class NodeInfo:
    """One SuperNode of the cluster."""

    name: str
    node_config: dict[str, Any]
    port: int
    register: bool = True
    key: str = ""  # private key path ("" without auth)
    node_id: int | None = None  # from registration (auth) or from the SuperNode's log
    pid: int | None = None
    log: str = ""


@dataclass
class ClusterState:
    """What ``up`` leaves in ``<workdir>/cluster.json`` for ``run``/``status``/``down``."""

    workdir: str
    host: str
    port: int
    tls: bool
    auth: bool
    ca_cert: str = ""
    nodes: list[NodeInfo] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def save(self) -> None:
        path = Path(self.workdir) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ClusterState:
        path = Path(workdir).resolve() / STATE_FILE
        if not path.is_file():
            raise ClusterError(f"no cluster in {workdir} (missing {STATE_FILE}); run `up` first")
        data = json.loads(path.read_text())
        data["nodes"] = [NodeInfo(**n) for n in data.get("nodes", [])]
        return cls(**data)


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
    """

    def __init__(self, num_nodes: int = 2, node_configs: list[Mapping[str, Any]] | None = None, *,
                 tls: bool = True, auth: bool = True, workdir: str | Path | None = None,
                 port: int | None = None, bind: str = "127.0.0.1", hosts: Iterable[str] = (),
                 app_dir: Path = APP_DIR, start_timeout_s: float = 90.0,
                 node_ports: Iterable[int] | None = None) -> None:
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
        self.bind = bind
        self.hosts = list(hosts)
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._node_ports = list(node_ports or [])
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
        command = [flower_bin("flower-superlink"), "--host", self.bind, "--port", str(port),
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
        superlink_dir = private_dir(self.workdir / "superlink")
        self._spawn("superlink", command, flwr_home=superlink_dir, cwd=superlink_dir)
        write_connection(self.flwr_home, self.state.address,
                         self.tls_files.ca_cert if self.tls else None)
        self.state.save()
        deadline = time.monotonic() + self.start_timeout_s
        while not port_open(connect_host, port):
            if not alive(self._read_pid("superlink")) or time.monotonic() > deadline:
                raise ClusterError("the SuperLink did not start:\n" + self.log_tail("superlink"))
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
        node_dir = private_dir(private_dir(self.workdir / "nodes") / name)
        command = [flower_bin("flower-supernode"), "--superlink", self.state.address,
                   "--node-config", node_config_arg(config), "--port", str(port)]
        if self.tls:
            command += ["--root-certificates", self.state.ca_cert]
        else:
            command += ["--insecure"]
        if self.auth:
            key = make_node_key(self.workdir / "keys" / name)
            node.key = str(key.private)
            command += ["--auth-supernode-private-key", str(key.private)]
            if register:
                node.node_id = self.register(key)
        node.log = str(self.log_dir / f"{name}.log")
        node.pid = self._spawn(name, command, flwr_home=node_dir, cwd=node_dir)
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
        deadline = time.monotonic() + (timeout_s or self.start_timeout_s)
        while True:
            text = self.log_tail(node.name, 20000)
            match = NODE_ID_RE.search(text)
            if match:
                node.node_id = int(match.group(1))
                assert self.state is not None
                self.state.save()
                return
            if not alive(node.pid or -1):
                if not node.register:
                    return  # refused, as expected (see `node_refused`)
                raise ClusterError(f"SuperNode {node.name} exited:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise ClusterError(f"SuperNode {node.name} did not connect within "
                                   f"{timeout_s or self.start_timeout_s:.0f} s:\n{text[-3000:]}")
            time.sleep(0.3)

    def node_refused(self, node: NodeInfo) -> bool:
        """True when the SuperLink refused ``node`` (its log says so and it is gone)."""
        text = self.log_tail(node.name, 20000)
        return (any(m in text for m in REFUSED_MARKERS) and not NODE_ID_RE.search(text)
                and not alive(node.pid or -1))

    def stop(self, grace_s: float = 10.0) -> list[int]:
        """Stop every process of this cluster by PID (nodes first); returns the PIDs."""
        return stop_workdir(self.workdir, grace_s)

    # -------------------------------------------------------------- runs
    def flwr(self, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess:
        """A ``flwr`` CLI command with this cluster's private ``FLWR_HOME``."""
        return subprocess.run([flower_bin("flwr"), *args], env=flower_env(self.flwr_home, self.workdir),
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
        path = self.log_dir / f"{name}.log"
        try:
            return path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -------------------------------------------------------------- internals
    def _spawn(self, name: str, command: list[str], *, flwr_home: Path, cwd: Path) -> int:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(command, env=flower_env(flwr_home, self.workdir), cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        (self.pid_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
        # The process must outlive `up`; when this Python process stays alive (tests), `alive`
        # reaps it once it exits, so no zombie is left behind.
        _children.append(proc)
        return proc.pid

    def _read_pid(self, name: str) -> int:
        try:
            return int((self.pid_dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return -1


def run_app(workdir: Path, run_config: Mapping[str, Any] | None = None, *, timeout_s: float = 900.0,
            echo: bool = False, app_dir: Path = APP_DIR) -> RunResult:
    """``flwr run`` against the cluster started in ``workdir`` (see :meth:`LocalCluster.run_app`)."""
    state = ClusterState.load(workdir)
    workdir = Path(state.workdir)
    flwr_home = workdir / "flwr-home"
    config = dict(run_config or {})
    keys = app_config_keys(app_dir)
    connected = sum(1 for n in state.nodes if n.register and alive(n.pid or -1))
    # The platform waits for one node per `prototypes` entry unless told how many take part.
    participants_key = "num-participants" if "num-participants" in keys else "min-participants"
    if connected and participants_key in keys and not {"num-participants", "min-participants"} & set(config):
        config[participants_key] = connected
    config_file = flwr_home / f"run-config-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.toml"
    config_file.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in config.items()))
    env = flower_env(flwr_home, workdir)
    command = [flower_bin("flwr"), "run", str(app_dir), CONNECTION, "--stream",
               "--run-config", str(config_file)]
    lines: list[str] = []
    run_id = None
    with subprocess.Popen(command, env=env, cwd=app_dir, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            deadline = time.monotonic() + timeout_s
            import selectors

            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                if time.monotonic() > deadline:
                    lines.append(f"[deploy] flwr run killed after {timeout_s:.0f} s\n")
                    break
                if not sel.select(timeout=1.0):
                    if proc.poll() is not None:
                        break
                    continue
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if echo:
                    print(line, end="", flush=True)
                if run_id is None and (m := RUN_ID_RE.search(line)):
                    run_id = int(m.group(1))
        finally:
            if proc.poll() is None:
                stop_pids([proc.pid], grace_s=5)
                if run_id is not None:  # stop the run on the SuperLink too
                    subprocess.run([flower_bin("flwr"), "stop", str(run_id), CONNECTION],
                                   env=env, cwd=app_dir, capture_output=True, timeout=60)
            returncode = proc.wait()
    output = "".join(lines)
    status = run_status(workdir, run_id, app_dir=app_dir) if run_id is not None else ""
    if status:
        output += f"[deploy] run {run_id}: {status}\n"
    if status != "finished:completed":
        returncode = returncode or 1
    return RunResult(returncode, output, run_id, status)


def app_config_keys(app_dir: Path = APP_DIR) -> set[str]:
    """The run-config keys the app declares (``[tool.flwr.app.config]``)."""
    import tomllib

    try:
        data = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return set()
    return set(data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def run_status(workdir: Path, run_id: int, *, app_dir: Path = APP_DIR, wait_s: float = 30.0) -> str:
    """The run's status as ``flwr ls`` reports it (e.g. ``finished:completed``)."""
    flwr_home = Path(workdir) / "flwr-home"
    deadline = time.monotonic() + wait_s
    status = ""
    while True:
        proc = subprocess.run([flower_bin("flwr"), "ls", CONNECTION, "--run-id", str(run_id),
                               "--format", "json"], env=flower_env(flwr_home, Path(workdir)),
                              cwd=app_dir, capture_output=True, text=True, timeout=60)
        try:
            runs = json.loads(proc.stdout[proc.stdout.index("{"):]).get("runs", [])
            status = str(runs[0]["status"]) if runs else ""
        except (ValueError, KeyError, IndexError):
            status = ""
        if status.startswith("finished") or time.monotonic() > deadline:
            return status
        time.sleep(1.0)


# ---------------------------------------------------------------------------- a lone SuperNode
def start_supernode(workdir: Path, *, superlink: str, ca_cert: Path | None, key: Path | None,
                    node_config: Mapping[str, Any], port: int = 9094, name: str = "supernode") -> int:
    """Start one detached SuperNode (e.g. on a GPU machine) with a pid file in ``workdir/pids``."""
    check_workdir(workdir)
    workdir = private_dir(Path(workdir).resolve())
    for d in ("pids", "logs"):
        private_dir(workdir / d)
    pid_file = workdir / "pids" / f"{name}.pid"
    if pid_file.exists():
        try:
            old = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            old = -1
        if alive(old) and _pid_is_ours(old, workdir):
            raise ClusterError(f"{name} already runs (pid {old}): run `down --workdir {workdir}` first")
        pid_file.unlink()
    command = [flower_bin("flower-supernode"), "--superlink", superlink,
               "--node-config", node_config_arg(node_config), "--port", str(port)]
    command += ["--root-certificates", str(Path(ca_cert).resolve())] if ca_cert else ["--insecure"]
    if key:
        command += ["--auth-supernode-private-key", str(Path(key).resolve())]
    node_dir = private_dir(private_dir(workdir / "nodes") / name)
    log_path = workdir / "logs" / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, env=flower_env(node_dir, workdir), cwd=node_dir,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


# ---------------------------------------------------------------------------- CLI
# Outside the app: `flwr run` packs every *.py/*.toml/*.json under the app directory into the
# FAB (only the top-level .gitignore is honoured), and a workdir holds installed app copies.
DEFAULT_WORKDIR = Path(os.environ.get("COOPT_DEPLOY_DIR", Path.home() / ".coopt-flower" / "cluster"))
DEFAULT_NODE_WORKDIR = DEFAULT_WORKDIR.with_name("node")


def _run_config_from_args(items: list[str]) -> dict[str, Any]:
    """``-c "a=1 b='x'"`` (repeatable) or ``-c file.toml`` -> dict (Flower's own parser)."""
    import tomllib

    from flwr.common.config import parse_config_args

    config: dict[str, Any] = {}
    for item in items:
        if item.endswith(".toml") and Path(item).is_file():
            config.update(tomllib.loads(Path(item).read_text()))
        else:
            config.update(parse_config_args([item]))
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster",
                                     description="Flower deployment of coopt-flower (TLS + SuperNode auth).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("certs", help="write a CA and the SuperLink's server certificate")
    p.add_argument("--dir", type=Path, default=DEFAULT_WORKDIR / "certs")
    p.add_argument("--host", action="append", default=[],
                   help="name or IP the SuperLink is reached at (repeatable; 127.0.0.1 and localhost are always added)")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("keygen", help="write a SuperNode key pair (PATH and PATH.pub)")
    p.add_argument("path", type=Path)
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("up", help="start a SuperLink (and N SuperNodes) on this machine, detached")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--nodes", type=int, default=None,
                   help="SuperNodes to start here (default: one per --node-config, else 2)")
    p.add_argument("--node-config", action="append", default=[],
                   help="per-node config, e.g. \"prototype='efficientnet-lite0' device='cpu'\" (repeatable, in order)")
    p.add_argument("--port", type=int, default=8000, help="the SuperLink's port (default 8000)")
    p.add_argument("--bind", default="127.0.0.1", help="interface to listen on (0.0.0.0 for other machines)")
    p.add_argument("--host", action="append", default=[], help="extra certificate name/IP (repeatable)")
    p.add_argument("--node-port", type=int, default=9094, help="first SuperNode Runtime API port")
    p.add_argument("--insecure", action="store_true", help="no TLS (implies --no-auth)")
    p.add_argument("--no-auth", action="store_true", help="no SuperNode authentication")

    p = sub.add_parser("register", help="register a SuperNode public key with the SuperLink")
    p.add_argument("public_key", type=Path)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)

    p = sub.add_parser("supernode", help="start one detached SuperNode (e.g. on a GPU machine)")
    p.add_argument("--workdir", type=Path, default=DEFAULT_NODE_WORKDIR)
    p.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    p.add_argument("--ca", type=Path, help="the platform's ca.crt (omit only with --insecure)")
    p.add_argument("--key", type=Path, help="this node's private key (from `keygen`)")
    p.add_argument("--node-config", default="", help="e.g. \"prototype='open_clip:...' device='cuda' partition-id=0\"")
    p.add_argument("--port", type=int, default=9094, help="local Runtime API port")
    p.add_argument("--name", default="supernode")
    p.add_argument("--insecure", action="store_true")

    p = sub.add_parser("run", help="`flwr run . --stream` against the cluster")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("-c", "--run-config", action="append", default=[],
                   help="\"key=value ...\" (TOML values) or a .toml file; repeatable")
    p.add_argument("--timeout", type=float, default=24 * 3600)

    p = sub.add_parser("status", help="processes and nodes of the cluster")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)

    p = sub.add_parser("down", help="stop every process started for the workdir, by PID")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)

    args = parser.parse_args(argv)
    try:
        return _dispatch(parser, args)
    except (ClusterError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "certs":
        files = make_certificates(args.dir, args.host, days=args.days, overwrite=args.overwrite)
        from deploy.pki import certificate_hosts

        print(f"CA certificate (copy to every SuperNode machine): {files.ca_cert}")
        print(f"SuperLink certificate: {files.server_cert} (names: {', '.join(certificate_hosts(files.server_cert))})")
        print(f"SuperLink key: {files.server_key}; CA key (keep private): {files.ca_key}")
        return 0
    if args.command == "keygen":
        key = make_node_key(args.path, overwrite=args.overwrite)
        print(f"private key (stays on the SuperNode machine): {key.private}")
        print(f"public key (register it on the platform): {key.public}")
        return 0
    if args.command == "up":
        configs = [parse_node_config(c) for c in args.node_config]
        num = args.nodes if args.nodes is not None else (len(configs) or 2)
        tls = not args.insecure
        cluster = LocalCluster(num, configs, tls=tls, auth=tls and not args.no_auth,
                               workdir=args.workdir, port=args.port, bind=args.bind,
                               hosts=args.host, node_ports=range(args.node_port, args.node_port + num))
        cluster.start()
        print(f"SuperLink {cluster.address} ({'TLS' if tls else 'insecure'}"
              f"{', SuperNode auth' if cluster.auth else ''}); workdir {cluster.workdir}")
        for node in cluster.nodes:
            print(f"  {node.name}: node id {node.node_id}, pid {node.pid}, {node_config_arg(node.node_config)}")
        print(f"logs: {cluster.log_dir}; stop with: python -m deploy.cluster down --workdir {cluster.workdir}")
        return 0
    if args.command == "register":
        state = ClusterState.load(args.workdir)
        cluster = LocalCluster(0, workdir=state.workdir)
        cluster.state = state
        print(f"registered: node id {cluster.register(args.public_key)}")
        return 0
    if args.command == "supernode":
        if not args.insecure and not args.ca:
            parser.error("--ca is required (or --insecure)")
        pid = start_supernode(args.workdir, superlink=args.superlink, ca_cert=None if args.insecure else args.ca,
                              key=args.key, node_config=parse_node_config(args.node_config),
                              port=args.port, name=args.name)
        log = Path(args.workdir).resolve() / "logs" / f"{args.name}.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and alive(pid):
            if NODE_ID_RE.search(log.read_text(errors="replace")):
                break
            time.sleep(0.3)
        text = log.read_text(errors="replace")
        if match := NODE_ID_RE.search(text):
            print(f"SuperNode connected: node id {match.group(1)}, pid {pid}, log {log}")
            return 0
        print(text[-3000:])
        if not alive(pid):
            (Path(args.workdir).resolve() / "pids" / f"{args.name}.pid").unlink(missing_ok=True)
            print(f"SuperNode exited (log {log})" + (": its key is not registered on the SuperLink"
                  if any(m in text for m in REFUSED_MARKERS) else ""))
        else:
            print(f"SuperNode has not connected yet (pid {pid}, log {log}); it keeps trying. "
                  f"Stop it with: python -m deploy.cluster down --workdir {args.workdir}")
        return 1
    if args.command == "run":
        result = run_app(args.workdir, _run_config_from_args(args.run_config), timeout_s=args.timeout, echo=True)
        print(f"[deploy] run {result.run_id}: {result.status or 'unknown status'}")
        return result.returncode
    if args.command == "status":
        workdir = Path(args.workdir).resolve()
        for pid_file in sorted((workdir / "pids").glob("*.pid")):
            pid = int(pid_file.read_text())
            print(f"{pid_file.stem}: pid {pid} {'running' if alive(pid) else 'gone'}")
        if (workdir / STATE_FILE).is_file():
            cluster = LocalCluster(0, workdir=workdir)
            print(cluster.flwr("supernode", "ls", CONNECTION).stdout)
        return 0
    if args.command == "down":
        stopped = stop_workdir(args.workdir)
        print(f"stopped {len(stopped)} processes" + (f": {stopped}" if stopped else ""))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
