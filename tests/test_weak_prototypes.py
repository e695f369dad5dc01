"""The weak-prototype study end to end on the benchmark's tiny config (numbers mean nothing)."""

import json

import pytest

from simulations.weak_prototypes import main


@pytest.mark.slow
def test_the_study_runs_on_the_tiny_config_and_says_when_byol_is_missing(tmp_path):
    out = tmp_path / "out"
    assert main(["--config", "simulations/configs/benchmark-tiny.yaml", "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(out), "--pool", "random:efficientnet-lite0,random:efficientnet-lite1"]) == 0
    record = json.loads((out / "weak_prototypes.json").read_text())
    assert set(record["own_feature_probe"]) == {"random:efficientnet-lite0", "random:efficientnet-lite1"}
    assert len(record["rows"]["CoOpt (aligned), random pool"]["probe_acc"]) == record["config"]["epochs"]
    assert record["missing_stored_runs"] == ["BYOL", "CoOpt (aligned), pretrained pool"]
    assert "was not found: run the benchmark first" in (out / "weak_prototypes.md").read_text()
