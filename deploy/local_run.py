"""Run ``flwr run .`` as a local simulation, reproducibly, and clean up after it.

``flwr run`` against the built-in ``local`` connection starts a detached ``flower-superlink
--simulation`` that outlives the command. This driver gives every run a private
``FLWR_HOME`` and its own SuperLink ports, disables Flower's per-run dependency install (the
environment already has everything, and the machines here are offline), and stops that
SuperLink, its SuperExecs and everything they started, by PID, when the run ends, also on
failure.

Usage (``python -m simulations.local_run`` and ``python -m deploy.local_run`` are the same)::

    coopt run --num-supernodes 4 --run-config output-dir=/abs/out

An unknown run-config key is refused before anything starts (exit 2), naming the closest key.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from coopt_flower.config import check_run_config
from coopt_flower.errors import one_line
from coopt_flower.help_format import DefaultsHelpFormatter
from coopt_flower.preflight import exit_code, preflight
from deploy.flower import (
    APP_DIR, flower_bin, flower_env, free_port, parse_run_config, stream_output, write_run_config,
)
from deploy.processes import group_members, pids_with_cmdline, stop_pids


def superlink_pids(flwr_home: Path) -> list[int]:
    """PIDs of ``flower-superlink`` processes started for this ``FLWR_HOME``."""
    return pids_with_cmdline("flower-superlink", str(Path(flwr_home) / "local-superlink"))


def run_pids(flwr_home: Path) -> list[int]:
    """This run's SuperLink and the ``flower-superexec`` processes it started.

    A SuperExec runs in a session of its own (``--parent-pid`` names the SuperLink), and the
    ServerApp / simulation runs under it, so stopping the SuperLink's group alone would leave
    the ServerApp running.
    """
    links = superlink_pids(flwr_home)
    execs = [pid for link in links for pid in pids_with_cmdline("flower-superexec", f"--parent-pid {link}")]
    return links + list(dict.fromkeys(execs))


def stop_superlink(flwr_home: Path, grace_s: float = 10.0) -> list[int]:
    """Stop this run's SuperLink, its SuperExecs and everything they started.

    Stops their process trees and, for processes already re-parented, every process left in
    their process groups. Returns :func:`run_pids` as found before stopping.
    """
    pids = run_pids(flwr_home)
    stop_pids(pids + group_members(pids), grace_s)
    return pids


@dataclass
class LocalRun:
    returncode: int
    output: str
    flwr_home: Path


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def run_local_simulation(
    run_config: dict,
    *,
    num_supernodes: int,
    num_cpus_per_client: int = 1,
    num_gpus_per_client: float | None = None,
    ray_num_cpus: int | None = None,
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
    num_cpus_per_client : int
        Ray resources per ClientApp (Flower takes whole CPUs only); Flower's default of 2
        serializes everything on a 2-core machine.
    num_gpus_per_client : float, optional
        GPU share Ray reserves per ClientApp. By default the simulated nodes share this
        machine's GPU (``1 / num_supernodes`` each) when it has one, else 0: a ClientApp
        encodes on CUDA when it sees one, and Ray must know it uses it.
    ray_num_cpus : int, optional
        CPUs Ray may hand out (default: the machine's); more than the machine has gives more
        simulation workers than cores, for ClientApps that mostly wait.
    flwr_home : Path, optional
        Private Flower home (a temporary one, removed afterwards, when omitted).
    """
    # Flower refuses an unknown key without naming it, and the ServerApp would refuse a bad
    # value only after the simulation has started: check both here, as the ServerApp will.
    preflight(check_run_config(run_config, Path(app_dir) / "pyproject.toml"), scan=False)
    own_home = flwr_home is None
    flwr_home = Path(flwr_home or tempfile.mkdtemp(prefix="coopt-flwr-home-")).resolve()
    flwr_home.mkdir(parents=True, exist_ok=True)
    # Own SuperLink ports: runs of other users or other tests may hold Flower's defaults.
    env = flower_env(flwr_home, FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
                     FLWR_LOCAL_CONTROL_API_PORT=str(free_port()))
    config_file = write_run_config(flwr_home / "run-config.toml", run_config)
    if num_gpus_per_client is None:
        num_gpus_per_client = round(1.0 / num_supernodes, 4) if _has_cuda() else 0.0
    federation = f"num-supernodes={int(num_supernodes)} client-resources-num-cpus={num_cpus_per_client}"
    if num_gpus_per_client:
        federation += f" client-resources-num-gpus={num_gpus_per_client}"
    if ray_num_cpus:
        federation += f" init-args-num-cpus={int(ray_num_cpus)}"
    command = [
        flower_bin("flwr"), "run", str(app_dir), "--stream",
        "--run-config", str(config_file), "--federation-config", federation,
    ]
    lines: list[str] = []
    try:
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=app_dir) as proc:
            if stream_output(proc, lines, timeout_s=timeout_s, echo=echo):
                proc.kill()
                lines.append(f"[local_run] killed after {timeout_s:.0f} s\n")
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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``coopt run``: parse ``argv``, run the simulation; 0 only for a completed run."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog=prog, description="Run `flwr run` on the embedded app as a local simulation "
        "(private FLWR_HOME, own ports; its SuperLink is stopped afterwards).")
    parser.add_argument("--num-supernodes", type=int, default=4,
                        help="simulated participants (default 4: one per default prototype)")
    parser.add_argument("--num-cpus-per-client", type=int, default=1,
                        help="CPUs Ray reserves per ClientApp (default 1)")
    parser.add_argument("--num-gpus-per-client", type=float, default=None,
                        help="GPU share Ray reserves per ClientApp (default: the nodes share this "
                        "machine's GPU when it has one, else 0)")
    parser.add_argument("--run-config", action="append", default=[],
                        help="space-separated key=value pairs (as flwr run --run-config reads them; "
                        "a bare string needs no quotes) or a .toml file, overriding pyproject.toml's "
                        "[tool.flwr.app.config], e.g. \"num-samples=400 seed=1\"; repeatable")
    args = parser.parse_args(argv)
    try:
        overrides = parse_run_config(args.run_config)
        run = run_local_simulation(overrides, num_supernodes=args.num_supernodes,
                                   num_cpus_per_client=args.num_cpus_per_client,
                                   num_gpus_per_client=args.num_gpus_per_client)
    except Exception as error:  # refused before Flower started: the code the run would stop with
        code = exit_code(error)
        if code is None:
            raise
        print(f"run config: {one_line(error, 2000)}", file=sys.stderr)
        return code
    return run_exit_code(run)


def run_exit_code(run: LocalRun) -> int:
    """0 for a completed run; the ServerApp's own code when it stopped on purpose (the one
    line ``CoOpt run stopped: ... [exit code N: kind]``); 1 for any other failure."""
    if run_succeeded(run):
        return 0
    stopped = re.search(r"CoOpt run stopped: .*\[exit code (\d+): ", run.output)
    return int(stopped.group(1)) if stopped else 1


if __name__ == "__main__":
    sys.exit(main())
