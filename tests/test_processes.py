"""Process trees found and stopped by PID (deploy.processes, deploy.workdir), without Flower."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from deploy.flower import stream_output
from deploy.processes import (
    alive, descendants, group_members, pids_with_cmdline, pids_with_env, send_signal, stop_pids,
)
from deploy.workdir import describe_stopped, marked_pids, read_pid, read_pid_record, running_pids, spawn, \
    stop_workdir

# A parent that starts two grandchildren-to-be and waits; every process sleeps long enough
# that only stopping it ends the test early.
TREE = "sleep 300 & sleep 300 & wait"
IGNORES_SIGTERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); time.sleep(300)")


@pytest.fixture
def started():
    """Popen objects a test starts; whatever still runs afterwards is killed and reaped."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        send_signal([*descendants(proc.pid), proc.pid], 9)
        proc.wait(timeout=10)


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_tree_is_found_and_stopped(started):
    parent = subprocess.Popen(["bash", "-c", TREE], start_new_session=True)
    started.append(parent)
    assert _wait_for(lambda: len(descendants(parent.pid)) == 2)
    children = descendants(parent.pid)
    stopped = stop_pids([parent.pid], grace_s=5)
    assert set(stopped) == {parent.pid, *children}
    parent.wait(timeout=10)
    assert not any(alive(pid) for pid in [parent.pid, *children])
    assert stop_pids([parent.pid]) == []  # nothing left to stop


def test_sigterm_is_followed_by_sigkill(started):
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE,
                                text=True)
    started.append(stubborn)
    assert stubborn.stdout.readline() == "ready\n"  # the handler is installed
    t = time.monotonic()
    assert stop_pids([stubborn.pid], grace_s=0.5) == [stubborn.pid]
    assert stubborn.wait(timeout=10) == -9
    assert time.monotonic() - t < 5


def test_a_zombie_is_not_alive(started):
    proc = subprocess.Popen(["true"])
    started.append(proc)
    # Not waited for: it stays a zombie until reaped.
    assert _wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
    assert not alive(proc.pid)
    assert stop_pids([proc.pid]) == []
    assert not alive(-1) and not alive(0)


def test_processes_are_found_by_environment_and_command_line(started):
    token = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", token],
                            env={**os.environ, "COOPT_TEST_TOKEN": token})
    started.append(proc)
    assert _wait_for(lambda: pids_with_cmdline("time.sleep(300)", token) == [proc.pid])
    assert pids_with_env("COOPT_TEST_TOKEN", token) == [proc.pid]
    assert pids_with_env("COOPT_TEST_TOKEN", token + "x") == []
    assert pids_with_cmdline("time.sleep(300)", token, "absent") == []


def test_group_members_never_include_our_own_group(started):
    assert group_members([os.getpid()]) == []
    leader = subprocess.Popen(["bash", "-c", TREE], start_new_session=True)
    started.append(leader)
    assert _wait_for(lambda: len(group_members([leader.pid])) == 3)
    assert set(group_members([leader.pid])) == {leader.pid, *descendants(leader.pid)}


def test_stream_output_stops_waiting_at_the_deadline(started):
    proc = subprocess.Popen([sys.executable, "-c", "print('one', flush=True); import time; time.sleep(300)"],
                            stdout=subprocess.PIPE, text=True)
    started.append(proc)
    lines: list[str] = []
    t = time.monotonic()
    assert stream_output(proc, lines, timeout_s=2) is True
    assert lines == ["one\n"] and 1.5 < time.monotonic() - t < 10
    proc.kill()

    done = subprocess.Popen(["printf", "a\\nb\\n"], stdout=subprocess.PIPE, text=True)
    started.append(done)
    lines = []
    assert stream_output(done, lines, timeout_s=30) is False and lines == ["a\n", "b\n"]


def test_a_workdir_stops_what_it_spawned(tmp_path):
    workdir = tmp_path / "cluster"
    pid = spawn(workdir, "sleeper", ["bash", "-c", TREE], flwr_home=tmp_path / "home", cwd=tmp_path)
    try:
        assert read_pid(workdir / "pids" / "sleeper.pid") == pid
        assert _wait_for(lambda: len(marked_pids(workdir)) == 3)  # the marker is inherited
        assert running_pids(workdir) == [pid]
        children = descendants(pid)
        stopped = stop_workdir(workdir, grace_s=5)
        assert {s.pid for s in stopped} == {pid, *children}
        assert [(s.name, s.started_by) for s in stopped if s.pid == pid] == [("sleeper", "cluster")]
        assert {s.started_by for s in stopped if s.pid != pid} == {"a cluster process"}
        assert describe_stopped(stopped).startswith(f"stopped 3 processes: sleeper (pid {pid}); and 2 that "
                                                    "they had started")
        assert marked_pids(workdir) == [] and not alive(pid)  # alive() reaps our own child
        assert not list((workdir / "pids").glob("*.pid"))
        assert stop_workdir(workdir) == []
    finally:
        send_signal([pid, *descendants(pid)], 9)


def test_a_pid_file_names_its_process_by_pid_and_start_time(tmp_path):
    """A PID whose start time is not the recorded one is another process: not the cluster's."""
    workdir = tmp_path / "cluster"
    pid = spawn(workdir, "sleeper", ["sleep", "60"], flwr_home=tmp_path / "home", cwd=tmp_path)
    try:
        pid_file = workdir / "pids" / "sleeper.pid"
        recorded, started = read_pid_record(pid_file)
        assert recorded == pid and started == pytest.approx(psutil.Process(pid).create_time())
        assert running_pids(workdir) == [pid]
        pid_file.write_text(f"{pid} {started - 3600}\n")  # as if the PID had been given to another
        assert running_pids(workdir) == []
        [stopped] = stop_workdir(workdir, grace_s=5)
        assert (stopped.pid, stopped.name, stopped.started_by) == (pid, "sleep", "a cluster process")
        pid_file.parent.mkdir(exist_ok=True)
        pid_file.write_text(f"{pid}\n")  # a pid file of an older version: the PID alone
        assert read_pid_record(pid_file) == (pid, None)
    finally:
        send_signal([pid], 9)


def test_a_process_in_another_network_namespace_is_told_apart():
    from deploy.netns import Hosts, why_not
    from deploy.processes import listens, same_network

    assert same_network(os.getpid()) is True
    if why_not():
        pytest.skip(f"no namespaces here: {why_not()}")
    with Hosts(["a"]) as hosts:
        proc = subprocess.Popen(hosts.command("a", [sys.executable, "-c", "import time; time.sleep(30)"]))
        try:
            deadline = time.monotonic() + 10
            # Until the command itself runs: before that the PID is the forked test process,
            # then `ip netns exec`, `unshare` and the shell, which exec one another. Their
            # command lines hold the Python command too, so only argv[0] tells them apart.
            def program():
                with open(f"/proc/{proc.pid}/cmdline", "rb") as cmdline:
                    return cmdline.read().split(b"\0")[0].decode()

            while program() != sys.executable and time.monotonic() < deadline:
                time.sleep(0.05)
            assert program() == sys.executable, f"the command never started: {program()}"
            assert same_network(proc.pid) is False
            assert listens(proc.pid, 1) is None  # its sockets cannot be seen from here
        finally:
            proc.kill()
            proc.wait()
