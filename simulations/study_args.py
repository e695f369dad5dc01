"""Command-line pieces the studies share.

Every study reads a YAML config, lets single keys be overridden by flags named after them, and
records the exact command that reproduces its results next to them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, Mapping, Optional, Sequence

__all__ = ["add_key_overrides", "reproducing_command"]


def add_key_overrides(parser: argparse.ArgumentParser, keys: Mapping[str, Callable[[str], object]], *,
                      what: str = "the config's key", helps: Optional[Mapping[str, str]] = None) -> None:
    """Add one ``--some-key`` flag per config key ``some_key``, parsed by ``keys[key]``.

    A flag left out parses as ``None``, so the caller keeps the config's value for it.
    """
    helps = helps or {}
    for key, kind in keys.items():
        parser.add_argument("--" + key.replace("_", "-"), type=kind, help=helps.get(key, f"overrides {what}"))


def reproducing_command(module: str, argv: Optional[Sequence[str]] = None) -> str:
    """The shell command that runs ``python -m module`` with ``argv`` (default: this process's)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return f"python -m {module}" + "".join(f" {shlex.quote(a)}" for a in args)
