"""A cluster's working directory: its state file, pid files and logs, and how to stop it.

Layout of ``<workdir>``::

    cluster.json      ClusterState: what `up` started, read back by `run`/`status`/`register`
    pids/NAME.pid     one per process we started (superlink, node-0, ...)
    logs/NAME.log     its stdout and stderr
    flwr-home/        the private FLWR_HOME of `flwr` (connection config, run configs)

Every process we start also carries ``COOPT_DEPLOY_WORKDIR=<workdir>`` in its environment,
which Flower passes on to the processes it starts. That marker finds stragglers whose parent
is already gone, and guards against a pid file naming a recycled PID.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from deploy.flower import APP_DIR, flower_env
from deploy.pki import private_dir
from deploy.processes import descendants, pids_with_env, program_name, same_process, start_time, stop_pids, track

MARKER_ENV = "COOPT_DEPLOY_WORKDIR"
STATE_FILE = "cluster.json"


class ClusterError(RuntimeError):
    """A process did not start, a node did not connect, or a run failed to launch."""


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


def check_workdir(workdir: Path, app_dir: Path = APP_DIR) -> None:
    """Refuse a workdir inside the app: it would end up in every FAB ``flwr run`` builds."""
    if Path(workdir).resolve().is_relative_to(Path(app_dir).resolve()):
        raise ValueError(f"workdir {workdir} is inside the app directory {app_dir}: `flwr run` "
                         "would pack its files (installed app copies, configs) into the FAB; "
                         "use a directory outside it (default ~/.coopt-flower/cluster)")


def workdir_env(flwr_home: Path, workdir: Path) -> dict[str, str]:
    """:func:`deploy.flower.flower_env` plus this workdir's marker."""
    return flower_env(flwr_home, **{MARKER_ENV: str(workdir)})


def marked_pids(workdir: Path) -> list[int]:
    """Processes whose environment carries ``COOPT_DEPLOY_WORKDIR=<workdir>``."""
    return pids_with_env(MARKER_ENV, str(Path(workdir).resolve()))


def marked_programs(workdir: Path, programs: tuple[str, ...]) -> list[tuple[int, str]]:
    """``(pid, program)`` of the workdir's marked processes that run one of ``programs``
    (:func:`deploy.processes.program_name`, e.g. ``flwr-clientapp``)."""
    found = [(pid, program_name(pid)) for pid in marked_pids(workdir)]
    return [(pid, name) for pid, name in found if name in programs]


# A pid file holds "PID START": START is the process's start time, so a PID the system gave
# to another process since is not taken for ours (files of older versions hold the PID only;
# deploy.processes.same_process compares them).


def read_pid_record(pid_file: Path) -> tuple[int | None, float | None]:
    """(PID, start time) from ``pid_file``; (None, None) when it is missing or unreadable."""
    try:
        fields = Path(pid_file).read_text().split()
        return int(fields[0]), (float(fields[1]) if len(fields) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def read_pid(pid_file: Path) -> int | None:
    """The PID in ``pid_file``; None when it is missing or unreadable."""
    return read_pid_record(pid_file)[0]


def _is_ours(pid: int | None, workdir: Path, started: float | None = None) -> bool:
    """Running, carrying this workdir's marker and, when the pid file recorded it, started when
    the file says (so not a recycled PID)."""
    return same_process(pid, started) and pid in marked_pids(workdir)


@dataclass(frozen=True)
class StoppedProcess:
    """One process ``down`` stopped: ``name`` is its pid file's (``superlink``, ``supernode-0``)
    for the processes the cluster started, else what it ran (``flwr-clientapp``), and
    ``started_by`` says which: ``cluster`` or ``a cluster process`` (Flower's per-run apps)."""

    pid: int
    name: str
    started_by: str

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


def running_pids(workdir: Path) -> list[int]:
    """PIDs from ``workdir/pids/*.pid`` that still run and belong to this workdir."""
    workdir = Path(workdir).resolve()
    records = [read_pid_record(f) for f in sorted((workdir / "pids").glob("*.pid"))]
    return [pid for pid, started in records if _is_ours(pid, workdir, started)]


def running_pid(workdir: Path, name: str) -> int | None:
    """The PID of process ``name`` of this workdir while it runs, else None."""
    pid, started = read_pid_record(Path(workdir).resolve() / "pids" / f"{name}.pid")
    return pid if _is_ours(pid, Path(workdir).resolve(), started) else None


def stop_workdir(workdir: Path, grace_s: float = 10.0) -> list[StoppedProcess]:
    """Stop everything started for ``workdir``, each stopped process named: the processes of
    its pid files (PID and start time must match), their process trees, then what they started
    that is still running elsewhere (found by the workdir's marker in their environment)."""
    workdir = Path(workdir).resolve()
    pid_dir = workdir / "pids"
    stopped: list[StoppedProcess] = []

    def stop(pids: list[int], grace: float) -> None:
        # Named before they are stopped: a stopped process has no command line to read.
        names = {p: pid_names.get(p) or program_name(p) for pid in pids for p in [pid, *descendants(pid)]}
        stopped.extend(StoppedProcess(p, names.get(p, "?"), "cluster" if p in pid_names else "a cluster process")
                       for p in stop_pids(pids, grace))

    # SuperNodes first (they leave the federation), the SuperLink last.
    pid_files = sorted(pid_dir.glob("*.pid"), key=lambda p: p.stem == "superlink") if pid_dir.is_dir() else []
    pid_names: dict[int, str] = {}  # the cluster's own processes, by their pid files' names
    for pid_file in pid_files:
        pid, started = read_pid_record(pid_file)
        if _is_ours(pid, workdir, started):
            pid_names[pid] = pid_file.stem
            stop([pid], grace_s)
        pid_file.unlink(missing_ok=True)
    stragglers = marked_pids(workdir)
    if stragglers:
        stop(stragglers, 3.0)
    return stopped


def describe_stopped(stopped: list[StoppedProcess]) -> str:
    """``down``'s line: the cluster's own processes by name, then what they had started."""
    own = [str(s) for s in stopped if s.started_by == "cluster"]
    started = [str(s) for s in stopped if s.started_by != "cluster"]
    if not stopped:
        return "stopped 0 processes (none of this workdir's processes was running)"
    line = f"stopped {len(stopped)} processes: " + (", ".join(own) if own else "none from the pid files")
    if started:
        line += (f"; and {len(started)} that they had started and that were still running "
                 f"(Flower's per-run apps): {', '.join(started)}")
    return line


def spawn(workdir: Path, name: str, command: list[str], *, flwr_home: Path, cwd: Path,
          env: Mapping[str, str] | None = None) -> int:
    """Start ``command`` detached, logging to ``logs/NAME.log``, its PID in ``pids/NAME.pid``
    (``env``: variables added to its environment).

    The process must outlive the command that starts it (``up``); while this Python process
    stays alive (tests), :func:`deploy.processes.alive` reaps it once it exits.
    """
    workdir = Path(workdir).resolve()
    log_dir, pid_dir = private_dir(workdir / "logs"), private_dir(workdir / "pids")
    with open(log_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(command, env={**workdir_env(flwr_home, workdir), **(env or {})}, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (pid_dir / f"{name}.pid").write_text(f"{proc.pid} {start_time(proc.pid) or ''}\n")
    track(proc)
    return proc.pid
