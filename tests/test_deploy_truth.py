"""Deployment helpers tell the truth: `up` refuses a busy port and confirms its own SuperLink."""

import os
import socket
import subprocess
import sys

import pytest

from deploy.flower import free_port
from deploy.processes import alive, listens
from deploy.workdir import read_pid


def up(workdir, port, *extra):
    return subprocess.run([sys.executable, "-m", "deploy.cluster", "up", "--workdir", str(workdir),
                           "--port", str(port), "--nodes", "0", "--insecure", *extra],
                          capture_output=True, text=True, timeout=120)


def test_up_refuses_a_busy_port_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = up(tmp_path / "cluster", port)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: port {port} is already in use by ")
    assert f"pid {os.getpid()}" in lines[0] and "--port" in lines[0]
    assert list((tmp_path / "cluster" / "pids").glob("*.pid")) == []  # nothing was started


@pytest.mark.slow
def test_up_confirms_its_own_superlink_listens(tmp_path):
    workdir, port = tmp_path / "cluster", free_port()
    proc = up(workdir, port)
    try:
        assert proc.returncode == 0, proc.stderr
        pid = read_pid(workdir / "pids" / "superlink.pid")
        assert alive(pid) and listens(pid, port) is True
        again = up(tmp_path / "other", port)  # a second `up` on the same port is refused
        assert again.returncode == 1 and f"port {port} is already in use by " in again.stderr
    finally:
        subprocess.run([sys.executable, "-m", "deploy.cluster", "down", "--workdir", str(workdir)],
                       capture_output=True, timeout=120)
    assert not alive(pid)
