"""The optimize step's page loop (coopt_flower.engine.pages), driven over a simulated clock.

Participants answer for real (their targets are checked, aligned and written by the round);
only time is simulated: every node encodes its queued pages one after the other at its own
speed, so the round's wall clock is exact and the tests do not depend on this machine's load.
"""

import heapq

import numpy as np
import pytest

from coopt_flower.data import select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.engine import run_in_process, run_round
from tests.test_engine_round import LinearParticipant, fashion, settings  # noqa: F401 (fixture)


class SimulatedNodes:
    """A transport whose node ``i`` takes ``seconds_per_sample[i]`` per sample of a page, one
    page at a time; the shared subset is answered at once. Silent nodes never answer a page."""

    may_grow = False

    def __init__(self, participants, seconds_per_sample, silent=()):
        self.participants, self.speed, self.silent = participants, seconds_per_sample, set(silent)
        self.now = 0.0
        self.busy_until = [0.0] * len(participants)
        self.done = []  # heap of (finish time, handle)
        self.replies = {}
        self.pages = [0] * len(participants)
        self._next = 0
        self._described = False

    def clock(self):
        return self.now

    def describe(self, config, server_round):
        if self._described:
            return len(self.participants), {}
        self._described = True
        return len(self.participants), {f"node-{i}": (i, p.describe(config)) for i, p in enumerate(self.participants)}

    def send(self, node, request, reply_limit, server_round):
        self._next += 1
        if request.pixels is not None:
            finish = self.now
        else:
            finish = self.busy_until[node] = max(self.now, self.busy_until[node]) + self.speed[node] * len(request.ids)
            self.pages[node] += 1
            if node in self.silent:
                return self._next
        try:
            self.replies[self._next] = self.participants[node].encode(request)
        except Exception as error:  # as the in-process transport does
            self.replies[self._next] = f"failed: {error}"
        heapq.heappush(self.done, (finish, self._next))
        return self._next

    def poll(self, handles):
        wanted = set(handles)
        if not self.done:  # only silent nodes left: let a second pass
            self.now += 1.0
            return {}
        self.now = max(self.now, self.done[0][0])
        out = {}
        while self.done and self.done[0][0] <= self.now:
            _, handle = heapq.heappop(self.done)
            if handle in wanted:
                out[handle] = self.replies.pop(handle)
        return out

    def no_reply(self, node, waited_s):
        return f"no reply within {waited_s:.0f} s"


def run_paced(tmp_path, source, speeds, silent=(), reply_timeout_s=3600.0, assignment="steal", **overrides):
    """A whole round over simulated nodes of the given speeds (node ``i`` = participant ``i``)."""
    faults = overrides.pop("fault", {})
    participants = [LinearParticipant(source, i, **faults.get(i, {})) for i in range(len(speeds))]
    s = settings(tmp_path, **{"prototypes": ",".join(p.name for p in participants),
                              "page-assignment": assignment, "reply-timeout-s": reply_timeout_s, **overrides})
    nodes = SimulatedNodes(participants, speeds, silent=silent)
    result = run_round(s, source, nodes, clock=nodes.clock)
    by_name = {p.name: speeds[p.node_id] for p in result.manifest.participants}
    return result, nodes, by_name


def run_steal(tmp_path, source, speeds, silent=(), reply_timeout_s=3600.0, **overrides):
    return run_paced(tmp_path, source, speeds, silent, reply_timeout_s, "steal", **overrides)


def ideal_split(num_samples, speeds):
    """Wall clock if every node worked all the time: samples / summed throughput."""
    return num_samples / sum(1.0 / s for s in speeds.values())


def waves_wall_clock(num_samples, speeds, page_size):
    """The same round in synchronous waves: each wave lasts as long as its slowest page."""
    per_node = num_samples // len(speeds)
    return -(-per_node // page_size) * page_size * max(speeds.values())


@pytest.mark.parametrize("speeds", [[0.01, 0.04], [0.01, 0.01, 0.04], [0.04, 0.01, 0.01, 0.01]])
def test_a_4x_slower_node_costs_at_most_25_percent_over_the_ideal_split(tmp_path, fashion, speeds):
    n = 2400
    result, nodes, by_name = run_steal(tmp_path, fashion, speeds, **{"num-samples": n, "page-size": 50})
    wall = nodes.now
    ideal = ideal_split(n, by_name)
    assert wall <= 1.25 * ideal, (wall, ideal)
    assert wall < 0.8 * waves_wall_clock(n, by_name, 50)  # waves wait for the slow node every time
    # Every sample written exactly once, and the fast nodes did more of them.
    ds = load_optimized_dataset(result.dataset_path)
    assert np.array_equal(ds.sample_ids, select_samples(len(fashion), n, 1))
    assert sum(p.num_samples for p in result.manifest.participants) == n
    counts = np.bincount(np.asarray(ds.owners), minlength=len(speeds))
    slow = int(np.argmax(speeds))
    assert counts[slow] < min(c for i, c in enumerate(counts) if i != slow)


def test_a_participant_failing_mid_steal_loses_nothing(tmp_path, fashion):
    n = 1200
    result, nodes, _ = run_steal(tmp_path, fashion, [0.01, 0.02, 0.01],
                                 **{"num-samples": n, "page-size": 50, "fault": {1: {"fault": "nan", "fault_page": 3}}})
    ds = load_optimized_dataset(result.dataset_path)
    assert np.array_equal(ds.sample_ids, select_samples(len(fashion), n, 1))
    assert result.manifest.missing_samples == 0
    failure = result.manifest.failures
    assert len(failure) == 1 and failure[0]["step"] == "optimize"
    # The failed page and the one queued behind it were both handed on.
    assert failure[0]["samples_affected"] >= 100 and "reassigned" in failure[0]["action"]
    assert np.isfinite(np.asarray(ds.targets, np.float32)).all()


def test_a_silent_participant_is_failed_after_the_reply_timeout(tmp_path, fashion, caplog):
    n = 600
    with caplog.at_level("INFO", logger="coopt_flower.engine.transport"):
        result, nodes, _ = run_steal(tmp_path, fashion, [0.01, 0.01], silent={1}, reply_timeout_s=30.0,
                                     **{"num-samples": n, "page-size": 50})
    waits = [r.getMessage() for r in caplog.records if "waiting for" in r.getMessage()]
    assert waits and all(line.startswith("  waiting for p1: no reply for 30 s") for line in waits), waits
    ds = load_optimized_dataset(result.dataset_path)
    assert np.array_equal(ds.sample_ids, select_samples(len(fashion), n, 1))
    assert [f["reason"] for f in result.manifest.failures] == ["no reply within 31 s"]
    assert np.bincount(np.asarray(ds.owners), minlength=2)[1] == 0


def test_in_process_round_with_stealing_writes_every_sample_once(tmp_path, fashion):
    s = settings(tmp_path, **{"page-assignment": "steal"})
    result = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    ds = load_optimized_dataset(result.dataset_path)
    assert np.array_equal(ds.sample_ids, select_samples(len(fashion), 300, 1))
    assert sum(p.num_samples for p in result.manifest.participants) == 300


def test_waves_merge_in_the_order_sent_whatever_order_replies_arrive_in(tmp_path, fashion):
    """The barrier: with a slow first node (its replies arrive last) and a failure that
    reassigns pages, waves over the simulated nodes write the very bytes an in-process round
    (every reply at once, in order) writes."""
    faults = {1: {"fault": "nan", "fault_page": 2}}
    paced, nodes, _ = run_paced(tmp_path / "paced", fashion, [0.04, 0.01, 0.02], assignment="waves",
                                **{"fault": faults})
    s = settings(tmp_path / "direct", prototypes="linear-0,linear-1,linear-2")
    direct = run_in_process(s, fashion, [LinearParticipant(fashion, i, **faults.get(i, {})) for i in range(3)])
    for name in ("targets.npy", "owners.npy", "sample_ids.npy"):
        assert (paced.dataset_path / name).read_bytes() == (direct.dataset_path / name).read_bytes(), name
    assert [f.as_dict() for f in paced.failures] == [f.as_dict() for f in direct.failures]
    # A wave takes as long as its slowest page: the slow node sets the pace.
    assert nodes.now >= 0.04 * 100 - 1e-9


@pytest.mark.slow
def test_flower_simulation_with_a_4x_slower_node_stays_within_25_percent_of_the_ideal_split(tmp_path, fashion):
    """A real `flwr run` with stealing: node 1 takes four times longer per sample."""
    from simulations.steal_bench import paced_app, run_paced

    app = paced_app(tmp_path / "app")
    run = run_paced(app, tmp_path / "steal", page_assignment="steal", nodes=2, num_samples=960,
                    page_size=20, seconds_per_sample=0.025, timeout_s=600)
    assert run["optimize_s"] <= 1.25 * run["ideal_s"], (run["optimize_s"], run["ideal_s"])
    ds = load_optimized_dataset(run["round_dir"])
    assert np.array_equal(ds.sample_ids, select_samples(len(fashion), 960, 1))
    per = [p["num_samples"] for p in run["report"]["participants"]]
    assert sum(per) == 960 and per[0] > 2 * per[1]  # the fast node did most of the work
    assert sum(page["samples"] for page in run["pages"]) == 960  # no page encoded twice
    assert run["report"]["page_assignment"] == "steal"


def test_page_progress_says_rate_and_time_left_at_most_every_interval():
    from coopt_flower.engine.pages import PageProgress

    now = [0.0]
    progress = PageProgress(1000, every_s=10.0, clock=lambda: now[0])
    now[0] = 5.0
    first = progress.arrived(100, pending=900)
    assert first == "[optimize] 100/1000 samples encoded (10 %), 20 samples/s, ETA 45 s, 900 pending"
    now[0] = 6.0
    assert progress.arrived(100, pending=800) is None  # within the interval: no line
    now[0] = 100.0
    assert "4 samples/s, ETA 2 min 30 s" in progress.arrived(200, pending=600)  # 400 in 100 s: 600 left at 4/s
    now[0] = 101.0
    assert progress.arrived(600, pending=0).endswith("samples/s, done, 0 pending")  # the last page: always
