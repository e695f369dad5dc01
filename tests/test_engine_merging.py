"""The merge phase (coopt_flower.engine.merging): a page checked, aligned and written, or refused."""

import numpy as np
import pytest

from coopt_flower.alignment import AlignmentMap
from coopt_flower.bad_samples import BadSampleLedger
from coopt_flower.config import RunSettings
from coopt_flower.data import ArraySource
from coopt_flower.engine.enrollment import Participant
from coopt_flower.engine.failures import FailureLog
from coopt_flower.engine.merging import RoundWriter
from coopt_flower.engine.plan import AlignmentPlan
from coopt_flower.engine.samples import Shards
from coopt_flower.protocol import EncodeReply

DIM = 4


@pytest.fixture
def writer(tmp_path):
    """Two participants over ids 0..7 (pages of 2); p1's map doubles its targets."""
    s = RunSettings.from_run_config({"prototypes": "a,b", "num-samples": 8, "shared-size": 8, "target-dim": DIM,
                                     "page-size": 2, "target-dtype": "float32", "output-dir": str(tmp_path)})
    people = [Participant("p0", 0), Participant("p1", 1)]
    double = AlignmentMap(2 * np.eye(DIM, dtype=np.float32), np.zeros(DIM, np.float32), 1.0, 0.1, 0.2)
    plan = AlignmentPlan({"p0": -1.0, "p1": -0.5}, "p0", {"p0": AlignmentMap.identity(DIM), "p1": double})
    shards = Shards({"p0": np.arange(0, 4), "p1": np.arange(4, 8)}, {}, {"p0", "p1"}, np.arange(8))
    source = ArraySource("test", np.zeros((8, 4, 4, 3), np.uint8))
    with RoundWriter.open(s, people, plan, shards, BadSampleLedger("skip", source), FailureLog(),
                          tmp_path / "round-001") as w:
        yield w


def reply(ids, value=1.0):
    return EncodeReply(targets=np.full((len(ids), DIM), value, np.float32), ids=np.asarray(ids), num_images=len(ids))


def test_a_page_is_aligned_by_its_participants_map_and_written_with_its_owner(writer):
    ids = writer.next_page("p1", steal=False)
    node, request, limit = writer.request("p1", ids)
    assert node == 1 and request.ids.tolist() == ids.tolist() and limit > 0
    assert writer.accept("p1", ids, reply(ids)) == 2
    rows = writer.writer.rows_of(ids)
    np.testing.assert_array_equal(np.asarray(writer.writer._targets[rows]), np.full((2, DIM), 2.0))
    assert np.asarray(writer.writer._owners[rows]).tolist() == [1, 1] and writer.merged == 2


def test_a_refused_page_fails_its_participant_and_hands_its_work_on(writer):
    ids = writer.next_page("p1", steal=False)
    bad = reply(ids)
    bad.targets[0, 0] = np.nan
    assert writer.accept("p1", ids, bad) == 0
    [failure] = writer.failures.failures
    assert failure.participant == "p1" and "NaN" in failure.reason and failure.samples_affected == 4
    assert writer.has_failed("p1") and writer.live == ["p0"]
    taken = []
    while (page := writer.next_page("p0", steal=False)) is not None:
        taken += page.tolist()
    assert sorted(taken) == list(range(8))  # p0 now encodes p1's samples too


def test_steal_takes_the_last_page_of_whoever_has_most_left(writer):
    writer.scheduler.queues["p0"].clear()
    assert writer.next_page("p0", steal=False) is None
    assert writer.next_page("p0", steal=True).tolist() == [6, 7] and writer.pages_stolen("p0") == 1
