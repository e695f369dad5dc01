"""A run's progress file (coopt_flower.engine.progress): resume, the legacy name, the summary."""

import json

from coopt_flower.engine import progress
from coopt_flower.manifest import Manifest


def test_a_run_written_before_the_rename_resumes_from_its_checkpoint_json(tmp_path):
    assert progress.load_progress(tmp_path) == {"rounds": {}}
    (tmp_path / progress.LEGACY_PROGRESS_FILE).write_text(json.dumps({"rounds": {"1": {"x": 1}}}))
    assert progress.load_progress(tmp_path)["rounds"] == {"1": {"x": 1}}
    progress.save_progress(tmp_path, {"rounds": {"1": {"x": 2}}})  # the new name wins from now on
    assert progress.load_progress(tmp_path)["rounds"] == {"1": {"x": 2}}


def test_round_entry_keeps_what_the_summary_shows():
    manifest = Manifest.from_json({
        "round": 1, "source": "s", "num_samples": 4, "target_dim": 2, "target_dtype": "float16",
        "reference": "p1", "reference_prototype": "b", "dataset_path": "/d", "missing_samples": 1,
        "failures": [{"participant": "p0", "step": "optimize", "reason": "x"}],
        "student": {"digest": "ab", "arch": "small-cnn", "uniform_value": -2.0},
        "participants": [{"name": "p0", "prototype": "a", "uniform_value": -1.0, "num_samples": 1},
                         {"name": "p1", "prototype": "b", "uniform_value": -2.0, "num_samples": 2}]})
    entry = progress.round_entry(manifest)
    assert entry["dataset"] == "/d" and entry["failures"] == 1 and entry["missing_samples"] == 1
    assert entry["student_in"] == {"digest": "ab", "arch": "small-cnn", "uniform_value": -2.0}
    assert [p["name"] for p in entry["participants"]] == ["p0", "p1"] and entry["student"] is None
    assert "| 1 | `b` | `ab` (-2.0000) | p0 -1.000 own, p1 -2.000 own | - | - |" in \
        progress.render_summary({"rounds": {"1": entry}})


def test_stale_temporaries_of_a_round_are_removed(tmp_path):
    (tmp_path / ".round-002.tmp-1-2").mkdir()
    (tmp_path / ".round-001.tmp-1-2").mkdir()
    assert [p.name for p in progress.remove_stale_temporaries(tmp_path, 2)] == [".round-002.tmp-1-2"]
    assert (tmp_path / ".round-001.tmp-1-2").exists()
