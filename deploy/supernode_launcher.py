"""``flower-supernode`` with a configurable heartbeat interval.

Flower 1.42's SuperNode tells the SuperLink it is alive every 30 s
(``HEARTBEAT_DEFAULT_INTERVAL``), and the SuperLink declares it offline after two intervals
without one, so a node that dies is noticed only about a minute later. There is no command-line
flag for it; this launcher runs the very same ``flower-supernode`` (same arguments, same
process) with the interval set from ``COOPT_HEARTBEAT_S`` (10 to 1800 s, the range the
SuperLink accepts). With ``COOPT_HEARTBEAT_S=10`` a dead node is reported within about 20 s.

Run as a script (``python deploy/supernode_launcher.py ARGS``): it imports only Flower and the
standard library.
"""

from __future__ import annotations

import os
import sys

HEARTBEAT_ENV = "COOPT_HEARTBEAT_S"
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S = 10.0, 1800.0  # flwr.common.constant.HEARTBEAT_MIN/MAX_INTERVAL
#: Where Flower 1.42 reads the node heartbeat interval (each module imported it by name).
HEARTBEAT_MODULES = ("flwr.supercore.heartbeat", "flwr.supernode.fleet_http_connection")


def heartbeat_seconds(value: str | None) -> float | None:
    """The interval ``value`` asks for (None: Flower's default); raises ``ValueError`` out of range."""
    if value in (None, ""):
        return None
    seconds = float(value)
    if not MIN_HEARTBEAT_S <= seconds <= MAX_HEARTBEAT_S:
        raise ValueError(f"{HEARTBEAT_ENV} must be between {MIN_HEARTBEAT_S:.0f} and {MAX_HEARTBEAT_S:.0f} "
                         f"seconds (the SuperLink refuses other intervals), got {value}")
    return seconds


def set_heartbeat(seconds: float) -> list[str]:
    """Set the node heartbeat interval in Flower's modules; returns the modules changed.

    Raises ``RuntimeError`` when this Flower version keeps it elsewhere (the launcher must not
    pretend to have set it).
    """
    import importlib

    changed = []
    for name in HEARTBEAT_MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "HEARTBEAT_DEFAULT_INTERVAL"):
            raise RuntimeError(f"{name} has no HEARTBEAT_DEFAULT_INTERVAL in this Flower version: unset "
                               f"{HEARTBEAT_ENV} to use Flower's default heartbeat")
        module.HEARTBEAT_DEFAULT_INTERVAL = seconds
        changed.append(name)
    return changed


def main() -> int:
    try:
        seconds = heartbeat_seconds(os.environ.get(HEARTBEAT_ENV))
        if seconds is not None:
            set_heartbeat(seconds)
    except (ValueError, RuntimeError) as error:
        print(f"supernode: {error}", file=sys.stderr)
        return 2
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    return flower_supernode() or 0


if __name__ == "__main__":
    sys.exit(main())
