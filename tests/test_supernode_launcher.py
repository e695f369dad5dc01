"""The SuperNode launcher sets Flower's node heartbeat (deploy.supernode_launcher)."""

import importlib
import subprocess
import sys

import pytest

from deploy.local_cluster import SUPERNODE_LAUNCHER, heartbeat_env
from deploy.supernode_launcher import HEARTBEAT_ENV, HEARTBEAT_MODULES, heartbeat_seconds


def test_the_interval_must_be_one_the_superlink_accepts():
    assert heartbeat_seconds(None) is None and heartbeat_seconds("") is None
    assert heartbeat_seconds("10") == 10.0
    for bad in ("5", "3600"):
        with pytest.raises(ValueError, match="between 10 and 1800 seconds"):
            heartbeat_seconds(bad)
    assert heartbeat_env(None) == {} and heartbeat_env(12.0) == {HEARTBEAT_ENV: "12"}


def test_the_launcher_sets_the_interval_flower_sends_and_waits_by():
    """In a fresh interpreter, as the SuperNode process: the modules Flower reads it from."""
    code = (f"import runpy, sys, importlib; sys.argv = ['x', '--help']; "
            f"ns = runpy.run_path({str(SUPERNODE_LAUNCHER)!r}); ns['set_heartbeat'](12.0); "
            f"print([importlib.import_module(m).HEARTBEAT_DEFAULT_INTERVAL for m in {HEARTBEAT_MODULES!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[12.0, 12.0]", out.stderr[-2000:]
    for name in HEARTBEAT_MODULES:  # this process is untouched
        assert importlib.import_module(name).HEARTBEAT_DEFAULT_INTERVAL == 30


def test_an_interval_out_of_range_stops_the_launcher_in_one_line():
    out = subprocess.run([sys.executable, str(SUPERNODE_LAUNCHER), "--help"], capture_output=True, text=True,
                         env={HEARTBEAT_ENV: "3", "PATH": ""}, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().startswith("supernode: COOPT_HEARTBEAT_S must be between")
