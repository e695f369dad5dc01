from pathlib import Path

import pytest

from coopt_flower.config import ConfigError
from deploy.flower import parse_run_config
from simulations.local_run import LocalRun, run_succeeded, toml_value


def test_a_stopped_run_is_reported_as_failed():
    ok = LocalRun(0, "INFO: CoOpt round 1 done: /x\n", Path("/tmp"))
    stopped = LocalRun(0, "ERROR: CoOpt run stopped: after describe only 1 participant(s)\n", Path("/tmp"))
    assert run_succeeded(ok) and not run_succeeded(stopped)
    assert not run_succeeded(LocalRun(1, "", Path("/tmp")))


def test_run_config_values_become_toml():
    assert toml_value(True) == "true" and toml_value(3) == "3"
    assert toml_value('a"b') == '"a\\\\"b"'.replace("\\\\", "\\")



def test_run_config_is_read_as_flwr_run_reads_it_and_bare_strings_need_no_quotes(tmp_path):
    assert parse_run_config(["num-samples=400 seed=1"]) == {"num-samples": 400, "seed": 1}
    assert parse_run_config(["output-dir=/abs/out", "overwrite=true"]) == {"output-dir": "/abs/out", "overwrite": True}
    assert parse_run_config(["prototypes='a,b' num-samples=0 output-dir=/x"]) == \
        {"prototypes": "a,b", "num-samples": 0, "output-dir": "/x"}
    assert parse_run_config(["seed=1", "seed=2"]) == {"seed": 2}  # later ones win
    toml = tmp_path / "run.toml"
    toml.write_text('num-samples = 50\nmerge = "heads"\n')
    assert parse_run_config([str(toml)]) == {"num-samples": 50, "merge": "heads"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_run_config(["num-samples=1 oops"])
