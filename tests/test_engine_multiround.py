"""The multi-round loop in the core (coopt_flower.engine.multiround), driven in process."""

import json

import pytest

from coopt_flower.data import open_source
from coopt_flower.engine import InProcessTransport, run_rounds
from coopt_flower.engine import progress
from tests.test_engine_round import LinearParticipant, settings


@pytest.fixture(scope="module")
def fashion():
    return open_source("fashion-mnist")


def test_rounds_run_in_one_process_and_a_rerun_skips_what_is_finished(tmp_path, fashion):
    s = settings(tmp_path, refinement="static", **{"num-server-rounds": 2})
    transport = InProcessTransport([LinearParticipant(fashion, i) for i in range(3)])
    state = run_rounds(s, fashion, transport)
    assert sorted(state["rounds"]) == ["1", "2"]
    for r in (1, 2):
        assert (progress.round_dir(s.output_dir, r) / "manifest.json").exists()
    written = json.loads((tmp_path / "out" / progress.PROGRESS_FILE).read_text())
    assert written == json.loads(json.dumps(state))
    # Static rounds of the same participants give the same dataset every round.
    first, second = (progress.round_dir(s.output_dir, r) / "targets.npy" for r in (1, 2))
    assert first.read_bytes() == second.read_bytes()
    # A rerun finds both rounds finished and runs nothing (its participants would fail if asked).
    broken = InProcessTransport([LinearParticipant(fashion, i, fault="raise", fault_page=1) for i in range(3)])
    assert run_rounds(s, fashion, broken)["rounds"] == state["rounds"]


def test_a_round_published_before_the_stop_is_kept_and_recorded(tmp_path, fashion):
    s = settings(tmp_path, refinement="static", **{"num-server-rounds": 1})
    run_rounds(s, fashion, InProcessTransport([LinearParticipant(fashion, i) for i in range(3)]))
    (tmp_path / "out" / progress.PROGRESS_FILE).unlink()  # killed between publishing and recording
    state = run_rounds(s, fashion, InProcessTransport([]))  # nobody to ask: the round must be recovered
    assert state["rounds"]["1"]["reference_prototype"].startswith("linear-")


def test_a_participant_that_leaves_for_a_round_and_comes_back_is_recorded(tmp_path, fashion):
    """Each round describes its participants anew: one that is gone in round 2 is not waited
    for (in process), the round is published with the others, and it takes part again in
    round 3; the summary says who left and who joined."""
    s = settings(tmp_path, refinement="static", **{"num-server-rounds": 3})
    everyone = [LinearParticipant(fashion, i) for i in range(3)]
    state = run_rounds(s, fashion, InProcessTransport(lambda r: everyone[:2] if r == 2 else everyone))
    assert [len(state["rounds"][r]["participants"]) for r in ("1", "2", "3")] == [3, 2, 3]
    second = json.loads((progress.round_dir(s.output_dir, 2) / "manifest.json").read_text())
    assert second["num_samples"] == 300 and second["missing_samples"] == 0  # nothing lost
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "- round 2: p2 left (`linear-2`)" in summary and "- round 3: p2 joined with `linear-2`" in summary
