"""Run ``flwr run .`` as a local simulation, reproducibly, and clean up after it.

``flwr run`` against the built-in ``local`` connection starts a detached ``flower-superlink
--simulation`` that outlives the command (DESIGN §6). This driver gives every run a private
``FLWR_HOME`` and its own SuperLink ports, disables Flower's per-run dependency install (the
environment already has everything, and the machines here are offline), and stops that
SuperLink's whole process group by PID when the run ends, also on failure.

Usage::

    python -m simulations.local_run --num-supernodes 4 --run-config output-dir=/abs/out
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.cluster import free_port, toml_value

APP_DIR = Path(__file__).resolve().parents[1]


def _cmdlines() -> dict[int, str]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if raw:  # zombies have an empty command line and need no killing
                out[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return out


def superlink_pids(flwr_home: Path) -> list[int]:
    """PIDs of ``flower-superlink`` processes started for this ``FLWR_HOME``."""
    marker = str(Path(flwr_home) / "local-superlink")
    return [pid for pid, cmd in _cmdlines().items() if "flower-superlink" in cmd and marker in cmd]


def run_pids(flwr_home: Path) -> list[int]:
    """This run's SuperLink and the ``flower-superexec`` processes it started.

    A SuperExec runs in a session of its own (``--parent-pid`` names the SuperLink), and the
    ServerApp / simulation runs under it, so killing the SuperLink's group alone leaves the
    ServerApp running.
    """
    links = superlink_pids(flwr_home)
    cmds = _cmdlines()
    execs = [pid for pid, cmd in cmds.items() if "flower-superexec" in cmd
             and any(f"--parent-pid {link}" in cmd for link in links)]
    return links + execs


def stop_superlink(flwr_home: Path, grace_s: float = 10.0) -> list[int]:
    """Stop this run's SuperLink, its SuperExecs and everything they started (by group)."""
    pids = run_pids(flwr_home)
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(groups):
            time.sleep(0.2)
        if not _alive(groups):
            break
    return pids


def _alive(groups: set[int]) -> bool:
    for pid in _cmdlines():
        try:
            if os.getpgid(pid) in groups:
                return True
        except ProcessLookupError:
            pass
    return False


@dataclass
class LocalRun:
    returncode: int
    output: str
    flwr_home: Path


def run_local_simulation(
    run_config: dict,
    *,
    num_supernodes: int,
    num_cpus_per_client: float = 1,
    app_dir: Path = APP_DIR,
    flwr_home: Path | None = None,
    timeout_s: float | None = None,
    echo: bool = True,
) -> LocalRun:
    """``flwr run <app_dir> --stream`` in simulation with ``num_supernodes`` SuperNodes.

    Parameters
    ----------
    run_config : dict
        Overrides of ``[tool.flwr.app.config]`` (written to a TOML file for ``--run-config``).
    num_supernodes : int
        Simulated participants.
    num_cpus_per_client : float
        Ray resources per ClientApp; Flower's default of 2 serializes everything on a 2-core
        machine.
    flwr_home : Path, optional
        Private Flower home (a temporary one, removed afterwards, when omitted).
    """
    own_home = flwr_home is None
    flwr_home = Path(flwr_home or tempfile.mkdtemp(prefix="coopt-flwr-home-")).resolve()
    flwr_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
        FLWR_LOCAL_CONTROL_API_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
        # flwr starts `flower-superlink` by name: find it next to this interpreter.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    config_file = flwr_home / "run-config.toml"
    config_file.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in run_config.items()))
    flwr = Path(sys.executable).with_name("flwr")
    command = [
        str(flwr if flwr.exists() else "flwr"), "run", str(app_dir), "--stream",
        "--run-config", str(config_file),
        "--federation-config",
        f"num-supernodes={int(num_supernodes)} client-resources-num-cpus={num_cpus_per_client}",
    ]
    lines: list[str] = []
    try:
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=app_dir) as proc:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    print(line, end="", flush=True)
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
                    lines.append(f"[local_run] killed after {timeout_s:.0f} s\n")
                    break
            returncode = proc.wait()
    finally:
        stop_superlink(flwr_home)
        if own_home:  # a temporary home holds only this run's SuperLink state and logs
            shutil.rmtree(flwr_home, ignore_errors=True)
    output = "".join(lines)
    return LocalRun(returncode, output, flwr_home)


def run_succeeded(run: LocalRun) -> bool:
    """Whether the run completed.

    ``flwr run --stream`` exits 0 after a failed ServerApp too, so the streamed log is read as
    well: a ServerApp that stops logs ``CoOpt run stopped`` or a traceback.
    """
    failed = ("CoOpt run stopped", "Traceback (most recent call last)", "ServerApp raised an exception")
    return run.returncode == 0 and not any(marker in run.output for marker in failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-supernodes", type=int, default=4)
    parser.add_argument("--num-cpus-per-client", type=float, default=1)
    parser.add_argument("--run-config", action="append", default=[],
                        help="key=value (TOML value), repeatable")
    args = parser.parse_args(argv)
    import tomllib

    overrides = {}
    for item in args.run_config:
        overrides.update(tomllib.loads(_quote(item)))
    run = run_local_simulation(overrides, num_supernodes=args.num_supernodes,
                               num_cpus_per_client=args.num_cpus_per_client)
    return 0 if run_succeeded(run) else 1


def _quote(item: str) -> str:
    """``key=value`` -> TOML, quoting the value when it is not already a TOML literal."""
    import tomllib

    key, _, value = item.partition("=")
    try:
        tomllib.loads(f"x = {value}")
        return f"{key.strip()} = {value}"
    except tomllib.TOMLDecodeError:
        return f"{key.strip()} = {toml_value(value)}"


if __name__ == "__main__":
    sys.exit(main())
