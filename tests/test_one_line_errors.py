"""One line means one line: run-config keys, stop messages, report cells."""

import logging
import subprocess
import sys

import pytest

from coopt_flower.config import ConfigError, app_run_config, check_run_config, check_run_config_keys
from coopt_flower.errors import EXIT_CONFIG, EXIT_OUTPUT, OutputDirError, one_line
from coopt_flower.engine import RoundFailed
from server_app.stopping import CoOptStopped, OneLineFilter, classify, stop
from simulations.local_run import run_local_simulation


def test_unknown_key_is_named_with_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown run-config key 'num-sample': did you mean 'num-samples'\?"):
        check_run_config_keys({"num-sample": 100}, app_run_config())
    with pytest.raises(ConfigError, match="valid keys: .*num-samples"):
        check_run_config_keys({"zzz": 1}, app_run_config())


def test_every_settings_key_is_in_the_app_config():
    check_run_config({"on-bad-sample": "fail", "verify-images": True, "num-samples": 300})


def test_coopt_check_prints_one_line_and_exits_with_the_code_the_run_would(tmp_path):
    def check(*overrides):
        return subprocess.run([sys.executable, "-m", "coopt_flower.preflight", "check", *overrides],
                              capture_output=True, text=True)

    proc = check("num-sampels=100")
    assert proc.returncode == 210 and proc.stdout == ""
    assert proc.stderr == "run config: unknown run-config key 'num-sampels': did you mean 'num-samples'?\n"
    ok = check("num-samples=300", f"output-dir={tmp_path / 'out'}")
    assert ok.returncode == 0 and "ok" in ok.stdout and not (tmp_path / "out").exists()  # writes nothing
    # What only a look at the world catches: a prototype, data, an output dir, a fractional int.
    (tmp_path / "file").write_text("x")
    for overrides, code, says in [
            (["prototypes=efficientnet-lite0,resnet-9000"], 210, "prototypes: "),
            (["data=folder:/no/such/dir"], 210, "does not exist"),
            ([f"output-dir={tmp_path / 'file'}"], 212, "is a file, not a directory"),
            (["seed=1.5"], 210, "seed must be an integer, got 1.5")]:
        proc = check(*overrides)
        assert proc.returncode == code and says in proc.stderr and proc.stderr.count("\n") == 1, (overrides, proc.stderr)


def test_local_run_refuses_an_unknown_key_before_starting_anything(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'num-samples'"):
        run_local_simulation({"num-sample": 100}, num_supernodes=2, flwr_home=tmp_path / "home")
    assert not (tmp_path / "home").exists()


def test_deploy_run_refuses_an_unknown_key(tmp_path):
    from deploy.cluster import main

    proc = subprocess.run([sys.executable, "-m", "deploy.cluster", "run", "--workdir", str(tmp_path),
                           "--run-config", "num-sample=100"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["run config: unknown run-config key 'num-sample': "
                                                "did you mean 'num-samples'?"]
    assert callable(main)


def test_one_line_strips_ansi_and_keeps_the_exception_line():
    traceback_text = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                      "\x1b[31mRuntimeError: no weights\x1b[0m\n")
    assert one_line(traceback_text) == "RuntimeError: no weights"
    assert one_line("\x1b[1;31mfailed\x1b[0m: a | b\nmore", table=True) == "failed: a / b"
    ray = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() (pid=1)\n"
           "  File \"x\", line 3, in run\nflwr.clientapp.client_app.ClientAppException: \n"
           "Exception ClientAppException occurred. Message: injected failure on page 2'>")
    assert one_line(ray) == "injected failure on page 2"


@pytest.mark.parametrize("error, code", [(ConfigError("x"), EXIT_CONFIG), (OutputDirError("y"), EXIT_OUTPUT),
                                         (RoundFailed("z"), 213)])
def test_user_errors_stop_with_their_exit_code(error, code):
    assert classify(error)[0] == code
    stopped = stop(error)
    assert isinstance(stopped, CoOptStopped) and stopped.exit_code == code
    assert stop(KeyError("bug")) is None  # a bug keeps its traceback


def test_flowers_traceback_and_banner_are_dropped_for_a_stop_only():
    flt = OneLineFilter()

    def record(msg, exc=None):
        exc_info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("flwr", logging.ERROR, __file__, 1, msg, (), exc_info)

    assert flt.filter(record("ServerApp raised an exception", KeyError("bug")))
    assert not flt.stopped
    assert flt.filter(record("CoOpt run stopped: x [exit code 210: configuration]"))
    assert not flt.filter(record("ServerApp raised an exception", CoOptStopped("x", 210)))
    assert not flt.filter(record("Exit Code: 210\n\nFor more information, visit: <...>"))
    assert flt.filter(record("another line"))


class FakeGrid:
    """A Grid whose nodes reply with the given error codes, or not at all."""

    def __init__(self, outcome, connected):
        self.outcome, self.connected = outcome, connected
        self.pushed = {}  # message id -> destination node

    def get_node_ids(self):
        return list(self.connected)

    def push_messages(self, messages):
        ids = []
        for msg in messages:
            ids.append(f"m{len(self.pushed)}")
            self.pushed[ids[-1]] = msg.metadata.dst_node_id
        return ids

    def pull_messages(self, message_ids):
        from types import SimpleNamespace

        replies = []
        for message_id in message_ids:
            node = self.pushed[message_id]
            if self.outcome.get(node) is None:
                continue
            code, reason = self.outcome[node]
            meta = SimpleNamespace(src_node_id=node, reply_to_message_id=message_id)
            replies.append(SimpleNamespace(metadata=meta, has_error=lambda: True,
                                           error=SimpleNamespace(code=code, reason=reason)))
        return replies


def test_a_dead_node_is_offline_not_a_timeout(monkeypatch):
    from types import SimpleNamespace

    import server_app.grid_transport as grid_transport
    from coopt_flower.engine.transport import exchange
    from coopt_flower.protocol import EncodeConfig, EncodeRequest
    from server_app.grid_transport import GridTransport

    # A Flower Message needs a run's identity; the fake Grid only reads its destination.
    monkeypatch.setattr(grid_transport, "round_message", lambda server_round, node_id, kind, content:
                        SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node_id)))
    grid = FakeGrid({1: (5, "Error: Node Unavailable - heartbeat"),
                     2: (2, "<class 'RuntimeError'>:<'\x1b[31mboom\x1b[0m\nTraceback...'>")},
                    connected=[2, 4])
    transport = GridTransport(grid, reply_timeout_s=3600, poll_s=0.0)
    request = EncodeRequest(EncodeConfig(target_dim=4), ids=[0, 1])
    clock = iter([0.0, 0.0, 5000.0, 5000.0, 5000.0])  # the second poll is past the timeout
    out = exchange(transport, {f"p{n}": (n, request, 1 << 20) for n in (1, 2, 3, 4)}, server_round=1,
                   timeout_s=3600, clock=lambda: next(clock))
    assert out["p1"] == "node offline (heartbeat): its SuperNode stopped reporting to the SuperLink"
    assert out["p2"] == "failed: <class 'RuntimeError'>:<'boom"
    assert out["p3"].startswith("node offline (heartbeat): it left the federation")
    assert out["p4"] == "no reply within reply-timeout-s=3600 s"
