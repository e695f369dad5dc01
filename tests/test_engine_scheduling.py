import numpy as np
import pytest

from coopt_flower.engine.failures import RoundFailed
from coopt_flower.engine.scheduling import PageScheduler


def next_wave(scheduler):
    """One page of its own for every live participant that has work left (``waves``)."""
    wave = {}
    for name in scheduler.live:
        ids = scheduler.next_for(name, steal=False)
        if ids is not None:
            wave[name] = ids
    return wave


def drain(scheduler, fail_at=None):
    """Run waves; ``fail_at = (wave, name)`` fails that participant with its in-flight page."""
    done, wave = {}, 0
    while batch := next_wave(scheduler):
        for name, ids in batch.items():
            if fail_at == (wave, name):
                scheduler.fail(name, ids)
            else:
                done.setdefault(name, []).extend(ids.tolist())
        wave += 1
    return done


def test_every_sample_once_without_failures():
    shards = {"a": np.arange(0, 10), "b": np.arange(10, 17)}
    done = drain(PageScheduler(shards, page_size=3))
    assert sorted(done["a"] + done["b"]) == list(range(17))


def test_failed_participants_pages_are_reassigned_without_loss():
    shards = {"a": np.arange(0, 10), "b": np.arange(10, 20), "c": np.arange(20, 30)}
    sched = PageScheduler(shards, page_size=4)
    done = drain(sched, fail_at=(1, "b"))
    got = sum(done.values(), [])
    assert sorted(got) == list(range(30)) and len(got) == 30
    assert sched.failed == {"b"} and sched.missing_ids().size == 0
    assert set(done["b"]) == {10, 11, 12, 13}  # only its first page made it


def test_drop_policy_records_exactly_the_missing_samples():
    shards = {"a": np.arange(0, 10), "b": np.arange(10, 20)}
    sched = PageScheduler(shards, page_size=4, on_failure="drop")
    done = drain(sched, fail_at=(1, "b"))
    assert sched.missing_ids().tolist() == list(range(14, 20))
    assert sorted(sum(done.values(), [])) == list(range(0, 14))


def test_below_min_participants_fails_the_round():
    sched = PageScheduler({"a": np.arange(4), "b": np.arange(4, 8)}, page_size=2, min_participants=2)
    with pytest.raises(RoundFailed, match="min-participants=2"):
        sched.fail("a", np.arange(2))


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="on-failure"):
        PageScheduler({"a": np.arange(3)}, page_size=1, on_failure="ignore")


def test_node_local_pages_stay_with_their_owner_and_go_missing_with_it():
    shards = {"a": np.arange(0, 6), "b": np.array([], dtype=np.int64), "c": np.arange(6, 12)}
    pinned = {"b": np.arange(100, 108)}
    sched = PageScheduler(shards, page_size=4, pinned=pinned, reassign_to={"a", "c"})
    first = next_wave(sched)
    assert first["b"].tolist() == [100, 101, 102, 103]
    action, affected = sched.fail("b", first["b"])
    assert affected == 8 and action.endswith("8 node-local samples missing")
    assert sched.missing_ids().tolist() == list(range(100, 108))
    done = drain(sched)
    assert sorted(sum(done.values(), []) + first["a"].tolist() + first["c"].tolist()) == list(range(12))


def test_shard_pages_are_not_handed_to_participants_without_the_platform_data():
    shards = {"a": np.arange(0, 8), "b": np.array([], dtype=np.int64), "c": np.arange(8, 16)}
    sched = PageScheduler(shards, page_size=4, pinned={"b": np.arange(50, 52)}, reassign_to={"a", "c"})
    done = drain(sched, fail_at=(0, "a"))
    assert sorted(done["c"]) == list(range(0, 16)) and done["b"] == [50, 51]


def test_pinned_pages_use_their_own_page_size():
    sched = PageScheduler({"a": np.arange(8), "b": np.empty(0, np.int64)}, page_size=4,
                          pinned={"b": np.arange(100, 105)}, pinned_page_sizes={"b": 2})
    assert [len(p) for p in sched.pinned_queues["b"]] == [2, 2, 1]
    assert [len(p) for p in sched.queues["a"]] == [4, 4]
