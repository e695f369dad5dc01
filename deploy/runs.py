"""``flwr run`` against a started cluster, and the run's final status from ``flwr ls``.

``flwr run --stream`` exits 0 after a failed ServerApp too, so a run counts as successful
only when ``flwr ls`` reports it ``finished:completed``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from deploy.flower import APP_DIR, CONNECTION, flower_bin, stream_output, write_run_config
from deploy.processes import alive, start_time, stop_pids
from deploy.run_outcome import failure_line
from deploy.workdir import ClusterState, marked_programs, read_pid, workdir_env

RUN_ID_RE = re.compile(r"Successfully started run (\d+)")
COMPLETED = "finished:completed"
#: How long a finished run's ``flwr-clientapp`` processes get to exit by themselves before
#: they are stopped (a completed run's have all exited by the time ``flwr run`` returns).
APP_EXIT_GRACE_S = 10.0


class RunResult(NamedTuple):
    """What :meth:`LocalCluster.run_app` returns (unpacks as ``returncode, output``).

    ``reason`` is one line on why a run that did not complete failed and what to do
    (:func:`deploy.run_outcome.failure_line`); "" for a completed run.
    """

    returncode: int
    output: str
    run_id: int | None = None
    status: str = ""
    reason: str = ""


def app_config_keys(app_dir: Path = APP_DIR) -> set[str]:
    """The run-config keys the app declares (``[tool.flwr.app.config]``)."""
    import tomllib

    try:
        data = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return set()
    return set(data.get("tool", {}).get("flwr", {}).get("app", {}).get("config", {}))


def with_participants(config: Mapping[str, Any], connected: int, app_keys: set[str]) -> dict[str, Any]:
    """``config`` plus the number of participants, unless it already says how many take part.

    The platform otherwise waits for one node per ``prototypes`` entry. Apps without
    ``num-participants`` call the key ``min-participants``.
    """
    config = dict(config)
    key = "num-participants" if "num-participants" in app_keys else "min-participants"
    if connected and key in app_keys and not {"num-participants", "min-participants"} & set(config):
        config[key] = connected
    return config


def run_app(workdir: Path, run_config: Mapping[str, Any] | None = None, *, timeout_s: float = 900.0,
            echo: bool = False, app_dir: Path = APP_DIR, rerun: str = "run the same command again") -> RunResult:
    """``flwr run`` against the cluster started in ``workdir`` (see :meth:`LocalCluster.run_app`);
    ``rerun`` words the resume advice of a failed run."""
    from coopt_flower.config import app_run_config, check_run_config_keys

    # Flower refuses an unknown key without naming it: name it (ConfigError) before starting.
    check_run_config_keys(run_config or {}, app_run_config(Path(app_dir) / "pyproject.toml"))
    state = ClusterState.load(workdir)
    workdir = Path(state.workdir)
    flwr_home = workdir / "flwr-home"
    connected = sum(1 for n in state.nodes if n.register and alive(n.pid or -1))
    config = with_participants(run_config or {}, connected, app_config_keys(app_dir))
    config_file = write_run_config(
        flwr_home / f"run-config-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.toml", config)
    env = workdir_env(flwr_home, workdir)
    command = [flower_bin("flwr"), "run", str(app_dir), CONNECTION, "--stream",
               "--run-config", str(config_file)]
    lines: list[str] = []
    started = time.time()
    with subprocess.Popen(command, env=env, cwd=app_dir, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            if stream_output(proc, lines, timeout_s=timeout_s, echo=echo):
                lines.append(f"[deploy] flwr run killed after {timeout_s:.0f} s\n")
            else:  # its output ended: give it a moment to exit by itself
                proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        finally:
            run_id = _run_id("".join(lines))
            if proc.poll() is None:
                stop_pids([proc.pid], grace_s=5)
                if run_id is not None:  # stop the run on the SuperLink too
                    subprocess.run([flower_bin("flwr"), "stop", str(run_id), CONNECTION],
                                   env=env, cwd=app_dir, capture_output=True, timeout=60)
            returncode = proc.wait()
    output = "".join(lines)
    status, details = run_status(workdir, run_id, app_dir=app_dir, details=True) if run_id is not None else ("", "")
    if status:
        output += f"[deploy] run {run_id}: {status}\n"
    if status.startswith("finished"):
        stray = stop_stray_clientapps(workdir, started, completed=status == COMPLETED, others_running=lambda: bool(
            runs_in_progress(workdir, exclude=run_id, app_dir=app_dir)))
        if stray:
            output += (f"[deploy] run {run_id}: stopped {len(stray)} flwr-clientapp left waiting after "
                       f"the run ended ({', '.join(stray)}): a SuperNode starts an app for a message of a "
                       "run that has just stopped, then drops the message and leaves the app waiting\n")
    reason = ""
    if status != COMPLETED:
        returncode = returncode or 1
        state = ClusterState.load(workdir)
        superlink = read_pid(workdir / "pids" / "superlink.pid")
        reason = failure_line(status=status, details=details, output=output, run_config=config,
                              superlink_alive=superlink is None or alive(superlink), timeout_s=timeout_s,
                              dead_nodes=[n.name for n in state.nodes if n.register and not alive(n.pid or -1)],
                              rerun=rerun)
        output += f"[deploy] run {run_id}: {reason}\n"
    return RunResult(returncode, output, run_id, status, reason)


def stop_stray_clientapps(workdir: Path, since: float, *, grace_s: float = APP_EXIT_GRACE_S,
                          completed: bool = True,
                          others_running: Callable[[], bool] = lambda: False) -> list[str]:
    """Stop the cluster's ``flwr-clientapp`` processes started since ``since`` (epoch seconds,
    the run's start) that still run ``grace_s`` seconds after the run finished; returns them,
    named (``flwr-clientapp (pid N)``). After a run that did not complete, the whole ``grace_s``
    is waited: a node may still start an app for one of its messages meanwhile.

    Why: Flower 1.42's SuperNode creates a task, and its SuperExec starts an app for it, as a
    message arrives; when the run has just stopped (a ServerApp killed mid-round) it then drops
    the message without finishing the task, and the app waits for input that never comes, for
    as long as its SuperNode lives. A run that finished needs none of its apps. Only apps of this
    cluster (its workdir marker) started during the run are touched, and none while another run
    is in progress on the SuperLink (``others_running()``, asked only when an app is left: its
    apps cannot be told apart).
    """
    def strays() -> list[int]:
        return [pid for pid, _ in marked_programs(workdir, ("flwr-clientapp",))
                if (start_time(pid) or 0.0) >= since - 1.0]

    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if completed and not strays():
            return []
        time.sleep(0.5)
    if not (left := strays()) or others_running():
        return []
    stop_pids(left, grace_s=5)
    return [f"flwr-clientapp (pid {pid})" for pid in left]


def runs_in_progress(workdir: Path, *, exclude: int | None = None, app_dir: Path = APP_DIR) -> list[int]:
    """Run ids the cluster's SuperLink lists as not finished (``flwr ls``), ``exclude`` left out;
    a SuperLink that cannot be asked counts as having one (nothing is stopped on a guess)."""
    try:
        stdout = _flwr_ls(workdir, app_dir)
    except (OSError, subprocess.SubprocessError):
        return [-1]
    return unfinished_runs(stdout, exclude=exclude)


def unfinished_runs(ls_json: str, *, exclude: int | None = None) -> list[int]:
    """Run ids that ``flwr ls --format json`` output lists as not finished, ``exclude`` left
    out; ``[-1]`` for output that cannot be read (nothing is stopped on a guess)."""
    try:
        ids = [(int(r["run-id"]), str(r.get("status", ""))) for r in _listed_runs(ls_json)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [-1]
    return [run for run, status in ids if not status.startswith("finished") and run != exclude]


def _run_id(output: str) -> int | None:
    match = RUN_ID_RE.search(output)
    return int(match.group(1)) if match else None


def run_status(workdir: Path, run_id: int, *, app_dir: Path = APP_DIR, wait_s: float = 30.0,
               details: bool = False) -> str | tuple[str, str]:
    """The run's status as ``flwr ls`` reports it (e.g. ``finished:completed``); with
    ``details``, ``(status, status details)`` (e.g. ``No heartbeat received from the task``).

    Polls for up to ``wait_s`` seconds until the status starts with ``finished``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        status, why = _status_from_json(_flwr_ls(workdir, app_dir, "--run-id", str(run_id)))
        if status.startswith("finished") or time.monotonic() > deadline:
            return (status, why) if details else status
        time.sleep(1.0)


def _status_from_json(stdout: str) -> tuple[str, str]:
    """The first run's ``status`` and ``status-details`` in ``flwr ls --format json`` output
    (empty when there is none)."""
    try:
        runs = _listed_runs(stdout)
        return (str(runs[0]["status"]), str(runs[0].get("status-details", ""))) if runs else ("", "")
    except (ValueError, KeyError, IndexError):
        return "", ""


def _flwr_ls(workdir: Path, app_dir: Path, *args: str) -> str:
    """The standard output of ``flwr ls --format json ARGS`` against the cluster in ``workdir``."""
    return subprocess.run([flower_bin("flwr"), "ls", CONNECTION, *args, "--format", "json"],
                          env=workdir_env(Path(workdir) / "flwr-home", Path(workdir)), cwd=app_dir,
                          capture_output=True, text=True, timeout=60).stdout


def _listed_runs(stdout: str) -> list:
    """The ``runs`` of ``flwr ls --format json`` output (after any line before its JSON)."""
    return json.loads(stdout[stdout.index("{"):]).get("runs", [])
