"""Multi-round CoOpt in real Flower simulations: refinement, versioned rounds, kill and resume."""

import json
import threading
import time

import numpy as np
import pytest

from coopt_flower.dataset_format import load_optimized_dataset
from simulations.local_run import run_local_simulation, stop_superlink

pytestmark = pytest.mark.slow

CONFIG = {
    # Weak prototypes: a student trained on their data soon scores better than they do.
    "prototypes": "random:efficientnet-lite0,onnx:open-nsfw",
    "num-samples": 160, "shared-size": 64, "image-size": 32, "target-dim": 32, "page-size": 8,
    "seed": 2, "num-server-rounds": 2, "train-epochs": 6, "refinement": "switch",
    "probe-train-samples": 160, "probe-test-samples": 200,
}


def run(out, flwr_home, **extra):
    return run_local_simulation({**CONFIG, "output-dir": str(out), **extra}, num_supernodes=2,
                                timeout_s=600, echo=False, flwr_home=flwr_home)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    result = run(out, tmp_path_factory.mktemp("home-a"))
    assert result.returncode == 0 and (out / "round-002").is_dir(), result.output[-4000:]
    return out


def test_rounds_are_versioned_and_the_student_joins_round_two(uninterrupted):
    out = uninterrupted
    for r in (1, 2):
        assert (out / f"round-00{r}" / "manifest.json").exists()
        assert (out / "students" / f"round-00{r}" / "last.pt").exists()
    first = json.loads((out / "round-001" / "report.json").read_text())
    second = json.loads((out / "round-002" / "report.json").read_text())
    assert first["student"] is None
    student = second["student"]
    assert student is not None and np.isfinite(student["uniform_value"])
    # switch: exactly the participants whose own prototype scores worse than the student
    # encoded with it.
    for p in second["participants"]:
        assert p["encoder"] == ("student" if student["uniform_value"] < p["uniform_value"] else "own")
    assert any(p["encoder"] == "student" for p in second["participants"])
    summary = json.loads((out / "progress.json").read_text())
    assert sorted(summary["rounds"]) == ["1", "2"]
    assert all(r["student"]["probe_accuracy"] > 0.3 for r in summary["rounds"].values())
    assert "| 2 |" in (out / "summary.md").read_text()


def test_killed_mid_round_and_resumed_gives_the_same_dataset(uninterrupted, tmp_path):
    out, home = tmp_path / "out", tmp_path / "home-b"
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("run", run(out, home)))
    worker.start()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not list(out.glob(".round-002.tmp-*")):
        time.sleep(0.05)
    assert list(out.glob(".round-002.tmp-*")), "round 2 never started"
    stop_superlink(home)  # kills the ServerApp (and everything of this run) mid-round
    worker.join(120)
    assert not (out / "round-002").exists()
    assert sorted(json.loads((out / "progress.json").read_text())["rounds"]) == ["1"]

    resumed = run(out, home)
    assert resumed.returncode == 0, resumed.output[-4000:]
    assert "round 1 already finished (progress file); skipping" in resumed.output
    assert not list(out.glob(".round-*"))  # the interrupted write was cleaned up
    a = load_optimized_dataset(uninterrupted / "round-002")
    b = load_optimized_dataset(out / "round-002")
    assert np.array_equal(a.sample_ids, b.sample_ids) and len(np.unique(b.sample_ids)) == 160
    assert np.array_equal(np.asarray(a.owners), np.asarray(b.owners))
    assert np.array_equal(np.asarray(a.targets), np.asarray(b.targets))


def test_distill_refines_on_every_node_of_a_flower_simulation(tmp_path):
    """refinement = distill through Flower: each node refines its prototype on the shared-subset
    request, keeps the head in its context state and encodes its pages with it (the ClientApp
    may answer them from another process)."""
    out = tmp_path / "out"
    result = run(out, tmp_path / "home", refinement="distill",
                 **{"refine-epochs": 3, "refine-samples": 40, "refine-hidden": 32})
    assert result.returncode == 0 and (out / "round-002").is_dir(), result.output[-4000:]
    first = json.loads((out / "round-001" / "manifest.json").read_text())
    second = json.loads((out / "round-002" / "manifest.json").read_text())
    assert all(p["encoder"] == "own" for p in first["participants"])
    assert all(p["encoder"] == "refined" and len(p["refined_digest"]) == 16 and p["refine_seconds"] > 0
               for p in second["participants"])
    assert second["student"]["digest"] and "+distill:" in second["reference_prototype"]
    dataset = load_optimized_dataset(out / "round-002")
    assert len(np.unique(dataset.sample_ids)) == 160 and np.isfinite(np.asarray(dataset.targets)).all()
    assert "policy `distill`" in (out / "round-002" / "report.md").read_text()
