"""Enrollment (coopt_flower.engine.enrollment): who takes part, in which order, and when to start."""

import pytest

from coopt_flower.engine import RoundFailed
from coopt_flower.engine.enrollment import enroll, name_participants
from coopt_flower.engine.failures import FailureLog
from coopt_flower.protocol import Description, EncodeConfig


class LateNodes:
    """A federation in which node ``i`` connects at second ``joins[i]`` of a simulated clock."""

    may_grow = True

    def __init__(self, joins, num_partitions=0):
        self.joins, self.num_partitions = joins, num_partitions
        self.now, self.asked, self.calls = 0.0, set(), 0

    def describe(self, config, server_round):
        self.calls += 1
        here = [i for i, t in enumerate(self.joins) if t <= self.now]
        new = {f"node-{i}": (i, Description(prototype=f"m{i}", partition_id=i, num_partitions=self.num_partitions))
               for i in here if i not in self.asked}
        self.asked.update(here)
        return len(here), new

    def sleep(self, seconds):
        self.now += seconds


def run_enroll(nodes, expected, min_participants=1, wait_s=10.0):
    return enroll(nodes, EncodeConfig(), expected=expected, min_participants=min_participants,
                  node_wait_s=wait_s, server_round=1, failures=FailureLog(), clock=lambda: nodes.now,
                  sleep=nodes.sleep)


def test_waits_for_late_nodes_until_every_expected_participant_is_known():
    nodes = LateNodes([0, 3, 5])
    participants = run_enroll(nodes, expected=3)
    assert [p.prototype for p in participants] == ["m0", "m1", "m2"] and nodes.now == 5.0


def test_starts_with_whoever_is_there_when_the_wait_runs_out():
    nodes = LateNodes([0, 2, 50])
    assert [p.name for p in run_enroll(nodes, expected=3, wait_s=10.0)] == ["p0", "p1"]
    with pytest.raises(RoundFailed, match="only 2 of 3 participants connected within 10 s"):
        run_enroll(LateNodes([0, 2, 50]), expected=3, min_participants=3, wait_s=10.0)


def test_a_complete_simulated_federation_starts_without_waiting_for_more():
    nodes = LateNodes([0, 0], num_partitions=2)  # 2 nodes, the run config names 4 prototypes
    assert len(run_enroll(nodes, expected=4)) == 2 and nodes.now == 0.0


def test_participants_are_ordered_by_slot_then_partition_and_a_failed_describe_is_refused():
    failures = FailureLog()
    described = {"node-9": (9, Description(prototype="late", partition_id=1)),
                 "node-3": (3, Description(prototype="first", partition_id=0)),
                 "node-5": "failed: no such prototype",
                 "node-7": (7, Description(prototype="slotted", slot=0))}
    participants = name_participants(described, failures)
    assert [(p.name, p.prototype) for p in participants] == [("p0", "slotted"), ("p1", "first"), ("p2", "late")]
    assert [(f.participant, f.step) for f in failures.failures] == [("node-5", "describe")]
