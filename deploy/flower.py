"""What every Flower command we start needs: binaries, environment, ports, TOML, connection.

Shared by the deployment (:mod:`deploy.cluster`) and the local simulation driver
(:mod:`deploy.local_run`). Every function here is a thin, side-effect-free (or
one-file) wrapper around a Flower convention:

- Flower starts ``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp`` and
  ``flower-superlink`` *by name*, so the directory of this interpreter goes first on ``PATH``.
- ``FLWR_HOME`` holds ``flwr``'s connections and a local SuperLink's state; each run or
  cluster gets a private one so the user's own ``~/.flwr`` is never touched.
- Runtime dependency installation is off: every process uses this environment (and the
  machines may be offline).
- ``--node-config`` and ``--run-config`` take space-separated ``key=value`` pairs whose values
  are TOML literals.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from deploy.app_dir import app_directory
from deploy.pki import private_dir

# The repository root in a checkout; a copy staged from the installed wheel otherwise.
APP_DIR = app_directory()
BIN_DIR = Path(sys.executable).parent
CONNECTION = "coopt"


# ---------------------------------------------------------------------------- ports
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- TOML values
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


def parse_run_config(items: Iterable[str]) -> dict[str, Any]:
    """Run-config overrides as ``flwr run --run-config`` reads them, later ones winning.

    Each item is a ``.toml`` file, or a string of space-separated ``key=value`` pairs
    (``"num-samples=400 seed=1"``) parsed by Flower's own parser; where Flower refuses a bare
    string value (``output-dir=/abs/out``, which it wants quoted) the pairs are read one by one
    as :func:`coopt_flower.config.parse_overrides` reads them (a TOML value, else plain text).
    """
    import shlex
    import tomllib

    from coopt_flower.config import ConfigError, parse_overrides

    config: dict[str, Any] = {}
    for item in items:
        if item.endswith(".toml") and Path(item).is_file():
            config.update(tomllib.loads(Path(item).read_text()))
            continue
        pairs = shlex.split(item, posix=False)
        stray = [p for p in pairs if "=" not in p]
        if stray:  # Flower's parser would drop it without a word
            raise ConfigError(f"expected key=value, got {stray[0]!r} in --run-config {item!r}")
        try:
            config.update(parse_node_config(item))
        except Exception:  # Flower's ClickException: an unquoted string; read pair by pair
            config.update(parse_overrides(pairs))
    return config


def write_run_config(path: Path, config: Mapping[str, Any]) -> Path:
    """``config`` as a flat TOML file, for ``flwr run --run-config FILE``."""
    path = Path(path)
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in config.items()))
    return path


# ---------------------------------------------------------------------------- processes
def flower_bin(name: str) -> str:
    """The Flower executable ``name`` next to this interpreter, else ``name`` for ``PATH``."""
    path = BIN_DIR / name
    return str(path) if path.exists() else name


def flower_env(flwr_home: Path, **extra: str) -> dict[str, str]:
    """The environment of a Flower process with a private ``FLWR_HOME``, plus ``extra``."""
    env = dict(os.environ)
    env.update(
        FLWR_HOME=str(flwr_home),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_TELEMETRY_ENABLED="0",
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
    )
    env.update(extra)
    return env


def write_connection(flwr_home: Path, address: str, ca_cert: Path | None,
                     name: str = CONNECTION) -> Path:
    """``$FLWR_HOME/config.toml`` with one SuperLink connection, made the default.

    Without ``ca_cert`` the connection is ``insecure`` (plain HTTP).
    """
    private_dir(flwr_home)
    lines = ["[superlink]", f"default = {toml_value(name)}", "", f"[superlink.{name}]",
             f"address = {toml_value(address)}"]
    if ca_cert is not None:
        lines.append(f"root-certificates = {toml_value(str(Path(ca_cert).resolve()))}")
    else:
        lines.append("insecure = true")
    path = Path(flwr_home) / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def stream_output(proc: subprocess.Popen, lines: list[str], *, timeout_s: float | None = None,
                  echo: bool = False) -> bool:
    """Append ``proc``'s text output to ``lines`` until it ends or ``timeout_s`` passes.

    A reader thread feeds a queue, so the deadline holds even while the command prints
    nothing (``flwr run --stream`` can be silent for minutes between rounds). ``lines`` is
    the caller's, so what was read survives an interrupt.

    Returns
    -------
    bool
        True when the deadline passed first; the caller decides how to stop ``proc``.
    """
    received: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            received.put(line)
        received.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        try:
            if wait is not None and wait <= 0:
                raise queue.Empty
            line = received.get(timeout=wait)
        except queue.Empty:
            return True
        if line is None:
            return False
        lines.append(line)
        if echo:
            print(line, end="", flush=True)
