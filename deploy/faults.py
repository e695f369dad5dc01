"""Faults made on purpose, and what they leave behind: for trials of a real deployment.

:mod:`simulations.deployment_trial` breaks a loopback cluster the way a user's machine breaks
(a disk that fills, a ServerApp that is killed, a second SuperNode with a key already online)
and then counts what is left: processes still running, temporary files, mounts. Everything
here acts by PID (checked with its start time, :func:`deploy.processes.start_time`) or by an
explicit path, never by a process name alone, so a trial on a shared machine touches nothing
of anyone else's.

Mounting a tmpfs needs root; :class:`FaultSetupError` says so in one line where it cannot be done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from deploy.processes import program_name, same_process, send_signal, start_time
from deploy.workdir import marked_programs

#: The processes Flower starts for one run; a finished run must leave none of them.
PER_RUN_APPS = ("flwr-serverapp", "flwr-clientapp")
#: The name of the file that fills a disk (inside the mount, so unmounting removes it too).
FILLER = "someone-elses-file"


class FaultSetupError(RuntimeError):
    """A fault could not be set up here (e.g. mounting a tmpfs without root)."""


class Started(NamedTuple):
    """A process this trial started: its PID and start time name it even after the PID is reused."""

    pid: int
    started: float | None
    name: str

    @classmethod
    def of(cls, pid: int, name: str = "") -> Started:
        return cls(pid, start_time(pid), name or program_name(pid))

    def running(self) -> bool:
        """Whether this very process (not a later one with its PID) still runs."""
        return same_process(self.pid, self.started)

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


# ---------------------------------------------------------------------------- disks
def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is listed in ``/proc/mounts`` (a mount the trial left behind is)."""
    target = str(Path(path).resolve())
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return os.path.ismount(target)
    # /proc/mounts escapes spaces as \040; the trial's paths have none.
    return any(line.split()[1] == target for line in lines if len(line.split()) > 1)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"8m"``) mounted at ``path`` for the block; unmounted after,
    also when the block fails (lazily if something still holds it open)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        raise FaultSetupError(f"cannot mount a {size} tmpfs at {path} (needs root): "
                              f"{mount.stderr.strip() or mount.returncode}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill_disk(directory: Path, leave_bytes: int) -> Path:
    """Fill the filesystem of ``directory`` until ``leave_bytes`` are free, with one allocated
    (not sparse) file, as another program's data would; returns that file."""
    filler = Path(directory) / FILLER
    size = free_bytes(directory) - leave_bytes
    if size <= 0:
        raise FaultSetupError(f"{directory} has only {free_bytes(directory)} bytes free, fewer than the "
                              f"{leave_bytes} to leave")
    with open(filler, "ab") as handle:
        os.posix_fallocate(handle.fileno(), 0, size)
    return filler


def temporaries(directory: Path) -> list[str]:
    """Hidden entries anywhere below ``directory`` (relative paths): the writers' temporaries
    (``.round-001.tmp-*``, ``.publish-reserve``, ``*.tmp-*``) are all hidden, and a finished
    output directory holds no hidden file."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*"))


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """``relative path -> (kind, size, mtime_ns)`` of everything below ``directory`` ({} if
    absent): compared before and after, it tells whether a refused run left a directory as it
    found it. A directory counts by its name alone: the pre-flight check proves it writable by
    writing and removing a probe file, which moves its mtime without changing what it holds."""
    directory = Path(directory)
    if not directory.exists():
        return {}
    out = {}
    for path in sorted(directory.rglob("*")):
        stat = path.lstat()
        kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
        out[str(path.relative_to(directory))] = (kind, 0, 0) if kind == "dir" else (kind, stat.st_size,
                                                                                   stat.st_mtime_ns)
    return out


# ---------------------------------------------------------------------------- processes
def per_run_apps(workdir: Path) -> list[Started]:
    """The cluster's per-run app processes (``flwr-serverapp``, ``flwr-clientapp``) that run now,
    found by the workdir's marker in their environment."""
    return [Started.of(pid, name) for pid, name in marked_programs(workdir, PER_RUN_APPS)]


def kill_serverapp(workdir: Path) -> list[Started]:
    """SIGKILL the ServerApp of the cluster in ``workdir`` (a crash, not a clean stop): only a
    ``flwr-serverapp`` that carries this workdir's marker; returns what was killed."""
    victims = [p for p in per_run_apps(workdir) if p.name == "flwr-serverapp"]
    send_signal([p.pid for p in victims], signal.SIGKILL)
    return victims


def kill_node_mid_round(cluster, run_config: dict, node: int, *, after_s: float = 0.0, round_no: int = 1,
                        timeout_s: float = 600.0):
    """Run ``run_config`` on ``cluster`` (a started :class:`deploy.local_cluster.LocalCluster`) and
    SIGKILL SuperNode ``node`` (its index) with its process tree, a crash and not a clean stop,
    ``after_s`` seconds after round ``round_no`` starts writing into ``run_config``'s
    ``output-dir``; returns ``(the run's RunResult, when the node was killed, epoch seconds)``."""
    import threading

    from deploy.processes import descendants

    out = Path(run_config["output-dir"])
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("run", cluster.run_app(run_config, timeout_s=timeout_s)))
    worker.start()
    deadline = time.monotonic() + timeout_s / 2
    while time.monotonic() < deadline and not list(out.glob(f".round-{round_no:03d}.tmp-*")):
        time.sleep(0.1)
    time.sleep(after_s)
    victim = cluster.nodes[node].pid
    send_signal([victim, *descendants(victim)], signal.SIGKILL)
    killed_at = time.time()
    worker.join(timeout_s)
    return result.get("run"), killed_at


def still_running(processes: Iterable[Started], grace_s: float = 0.0) -> list[Started]:
    """Those of ``processes`` still running after up to ``grace_s`` seconds (exiting takes a
    moment: a finished run's apps are given that long before they count as left behind)."""
    processes = list(processes)
    deadline = time.monotonic() + grace_s
    while True:
        left = [p for p in processes if p.running()]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)
