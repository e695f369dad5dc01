"""Find and stop process trees, by PID, with :mod:`psutil`.

Flower's processes outlive the command that started them: ``flower-superlink`` starts a
detached ``flower-superexec`` (a session of its own), which starts ``flwr-serverapp`` /
``flwr-clientapp`` / ``flwr-simulation`` per run. Stopping a deployment or a local simulation
therefore means stopping a tree, plus processes found by their command line or environment
after their parent is already gone.

A zombie (exited, not yet reaped by its parent) counts as gone everywhere here: it holds no
resources, cannot be signalled away, and on machines whose PID 1 does not reap orphans it
never disappears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable, Iterable

import psutil

# Processes this Python process started and must reap itself once they exit (see `track`).
_children: list[subprocess.Popen] = []


def track(proc: subprocess.Popen) -> subprocess.Popen:
    """Remember a detached child so :func:`alive` reaps it once it exits (no zombie left)."""
    _children.append(proc)
    return proc


def _reap_children() -> None:
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (reaps our own exited children)."""
    _reap_children()
    if pid is None or pid <= 0:
        return False
    try:
        return _running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch); None when it is gone. A PID and its start
    time name one process: a recycled PID has another start time."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


#: How far a process's start time may differ from a recorded one and still be that process
#: (``psutil`` reports it rounded; a recycled PID starts seconds or more later).
START_TOLERANCE_S = 1.0


def same_process(pid: int | None, started: float | None) -> bool:
    """Whether ``pid`` runs and is the process that started at ``started`` (epoch seconds; None:
    not recorded, any process with the PID counts), not a later one that got its PID."""
    if pid is None or not alive(pid):
        return False
    now = start_time(pid)
    return started is None or (now is not None and abs(now - started) <= START_TOLERANCE_S)


def program_name(pid: int) -> str:
    """What a process runs, in one word: ``flwr-clientapp``, not ``python3.11``."""
    try:
        process = psutil.Process(pid)
        args = process.cmdline()
        name = process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    for arg in args[:3]:
        base = os.path.basename(arg)
        if base.startswith(("flwr", "flower")) or (arg.endswith(".py") and base != "-c"):
            return base
    if "-m" in args[:3]:
        return args[args.index("-m") + 1] if args.index("-m") + 1 < len(args) else name
    return name


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...); [] when it is gone."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except (psutil.NoSuchProcess, ValueError):
        return []


def find_pids(match: Callable[[psutil.Process], bool]) -> list[int]:
    """PIDs of live processes (not this one) for which ``match(process)`` is true.

    ``match`` may read anything of the process; a process that vanishes or hides its details
    meanwhile does not match.
    """
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if _running(proc) and match(proc):
                found.append(proc.pid)
        except (psutil.Error, OSError):  # gone, a zombie, or another user's meanwhile
            continue
    return found


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment has ``name=value`` (other users' processes are skipped)."""
    return find_pids(lambda proc: proc.environ().get(name) == value)


def pids_with_cmdline(*parts: str) -> list[int]:
    """Processes whose command line (arguments joined by spaces) contains every one of ``parts``."""
    return find_pids(lambda proc: all(part in " ".join(proc.cmdline()) for part in parts))


def group_members(pids: Iterable[int]) -> list[int]:
    """Live processes in the process groups of ``pids``, never in this process's own group."""
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except (ProcessLookupError, PermissionError):
            pass
    groups.discard(os.getpgrp())  # a pid sharing our group must not take us down with it
    if not groups:
        return []
    return find_pids(lambda proc: os.getpgid(proc.pid) in groups)


def send_signal(pids: Iterable[int], sig: int) -> None:
    """Send ``sig`` to each of ``pids``, ignoring those that are gone or not ours."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until every pid is gone or a zombie; returns those still running at the deadline.

    Not :func:`psutil.wait_procs`: it waits for a zombie of another parent until the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def stop_pids(pids: Iterable[int], grace_s: float = 10.0, kill_wait_s: float = 5.0) -> list[int]:
    """SIGTERM ``pids`` and their descendants; SIGKILL what is left after ``grace_s``.

    Descendants are collected before the first signal (an orphan is re-parented and would
    no longer be found below its ancestor) and again before SIGKILL (for processes started
    meanwhile). Returns every PID that was signalled, ``[]`` when none was running.
    """
    pids = [pid for pid in dict.fromkeys(pids) if alive(pid)]
    targets = list(dict.fromkeys(pids + [d for pid in pids for d in descendants(pid)]))
    if not targets:
        return []
    send_signal(targets, signal.SIGTERM)
    left = _wait_gone(targets, grace_s)
    left = list(dict.fromkeys(left + [d for pid in left for d in descendants(pid)]))
    send_signal(left, signal.SIGKILL)
    _wait_gone(left, kill_wait_s)
    return targets


def listening_pids(port: int) -> set[int] | None:
    """PIDs with a TCP socket listening on ``port`` (any address); None when the system does
    not let this user see other processes' sockets."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return None
    return {c.pid for c in connections
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}


def same_network(pid: int) -> bool | None:
    """Whether ``pid`` lives in this process's network namespace (None when it cannot be told)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def listens(pid: int, port: int) -> bool | None:
    """Whether ``pid`` (or one of its descendants) listens on ``port``; None when unknown (a
    process in another network namespace: its sockets are not listed here)."""
    if same_network(pid) is False:
        return None
    pids = listening_pids(port)
    if pids is None:
        return None
    return bool(pids & {pid, *descendants(pid)})
