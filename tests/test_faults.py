"""Fault injection in real Flower simulations: refused replies, lost participants, no data loss."""

import json
from pathlib import Path

import numpy as np
import pytest

from coopt_flower.data import select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from deploy.app_dir import app_with_client
from simulations.local_run import run_local_simulation

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BASE = {"num-samples": 120, "shared-size": 32, "image-size": 32, "target-dim": 32,
        "page-size": 10, "seed": 1}


@pytest.fixture(scope="module")
def faulty_app(tmp_path_factory):
    """A copy of the app whose ClientApp is tests/fault_injection.py."""
    return app_with_client(tmp_path_factory.mktemp("faulty-app"), REPO / "tests" / "fault_injection.py",
                           {"fault": ""}, note="fault-injection copy of coopt-flower")


def run(app, tmp_path, nodes, **config):
    out = tmp_path / "out"
    config = {**BASE, "prototypes": ",".join(["efficientnet-lite0"] * nodes),
              "output-dir": str(out), **config}
    result = run_local_simulation(config, num_supernodes=nodes, app_dir=app, timeout_s=600,
                                  echo=False, flwr_home=tmp_path / "flwr-home")
    return result, out / "round-001"


def report(path):
    return json.loads((path / "report.json").read_text())


def test_four_kinds_of_bad_replies_are_refused_and_their_pages_reassigned(faulty_app, tmp_path):
    result, path = run(faulty_app, tmp_path, 5, fault="1:raise:2,2:nan:1,3:ids:1,4:dim:2")
    assert path.is_dir(), result.output[-4000:]
    summary = report(path)
    reasons = {f["participant"]: f["reason"] for f in summary["failures"]}
    assert set(reasons) == {"p1", "p2", "p3", "p4"}
    assert "injected failure on page 2" in reasons["p1"]
    assert "NaN or Inf" in reasons["p2"]
    assert "returned ids differ" in reasons["p3"]
    assert "targets of shape (10, 31), expected (10, 32)" in reasons["p4"]
    assert all(f["action"].startswith("reassigned to p0") for f in summary["failures"])
    # Nothing lost, nothing duplicated, and the refused pages were not merged.
    ds = load_optimized_dataset(path)
    assert summary["missing_samples"] == 0
    assert np.array_equal(ds.sample_ids, select_samples(60000, 120, seed=1))
    owners = np.bincount(np.asarray(ds.owners), minlength=5)
    # p1 and p4 had one good page (10 samples) before failing; p2 and p3 none.
    assert owners.tolist() == [120 - 20, 10, 0, 0, 10]
    assert [p["num_samples"] for p in summary["participants"]] == owners.tolist()
    affected = {f["participant"]: f["samples_affected"] for f in summary["failures"]}
    # p2 failed first, with its whole shard (24) unfinished; the others had also been handed
    # pages of those who failed before them, so theirs is at least their own remainder.
    assert affected["p2"] == 24 and affected["p3"] >= 24 and affected["p1"] >= 14 and affected["p4"] >= 14
    assert np.isfinite(np.asarray(ds.targets, np.float32)).all()


def test_drop_policy_reports_exactly_the_missing_samples(faulty_app, tmp_path):
    result, path = run(faulty_app, tmp_path, 2, fault="1:raise:3", **{"on-failure": "drop"})
    assert path.is_dir(), result.output[-4000:]
    summary = report(path)
    ds = load_optimized_dataset(path)
    expected = select_samples(60000, 120, seed=1)
    missing = np.array(summary["missing_sample_ids"])
    assert summary["missing_samples"] == len(missing) == 60 - 20
    assert ds.manifest.missing_sample_ids == missing.tolist()
    assert sorted(ds.sample_ids.tolist() + missing.tolist()) == expected.tolist()
    assert "dropped" in summary["failures"][0]["action"]


def test_below_min_participants_the_round_fails_and_publishes_nothing(faulty_app, tmp_path):
    result, path = run(faulty_app, tmp_path, 2, fault="0:shared:0", **{"min-participants": 2})
    assert "CoOpt run stopped: after the shared subset only 1 participant(s) are left" in result.output
    assert not path.exists()
    # Refused before it wrote: the output directory was not even claimed (no run.json).
    assert not path.parent.exists() or list(path.parent.iterdir()) == []

