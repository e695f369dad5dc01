from pathlib import Path

from simulations.local_run import LocalRun, _quote, run_succeeded, toml_value


def test_a_stopped_run_is_reported_as_failed():
    ok = LocalRun(0, "INFO: CoOpt round 1 done: /x\n", Path("/tmp"))
    stopped = LocalRun(0, "ERROR: CoOpt run stopped: after describe only 1 participant(s)\n", Path("/tmp"))
    assert run_succeeded(ok) and not run_succeeded(stopped)
    assert not run_succeeded(LocalRun(1, "", Path("/tmp")))


def test_run_config_values_become_toml():
    assert toml_value(True) == "true" and toml_value(3) == "3"
    assert toml_value('a"b') == '"a\\\\"b"'.replace("\\\\", "\\")
    assert _quote("output-dir=/abs/out") == 'output-dir = "/abs/out"'
    assert _quote("num-samples=0") == "num-samples = 0"
