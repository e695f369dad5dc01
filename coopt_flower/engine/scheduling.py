"""Which participant encodes which page next, and what happens when one of them fails.

Pages are stateless requests (a list of sample ids), so a failed participant's unfinished
work can be handed to the others. :class:`PageScheduler` keeps one queue of pages per live
participant and hands them out in one of two ways (the run config's ``page-assignment``):

- ``waves`` (default): one page per participant per wave (``next_for(name, steal=False)``
  for every live participant), every wave waits for its slowest page. Who encodes which sample depends only on the seed, so runs are reproducible byte for
  byte.
- ``steal``: a participant that is free takes its next page, and once its own queue is empty,
  the last page of whoever has the most left (:meth:`PageScheduler.next_for`). Fast nodes do
  more of the work; which prototype encoded a sample then depends on timing.

When a participant fails, its in-flight pages and its queue are either reassigned to the
survivors (round robin, in page sized pieces) or recorded as missing, as the user chose.
Node-local pages (``pinned``) never move: only their owner can read them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from coopt_flower.config import ON_FAILURE_POLICIES
from coopt_flower.data import pages
from coopt_flower.engine.failures import RoundFailed



@dataclass
class PageScheduler:
    """Per-participant page queues with failure handling.

    Parameters
    ----------
    shards : dict
        Participant name -> its shard's sample ids.
    page_size : int
        Samples per page.
    on_failure : str
        ``"reassign"`` (hand a failed participant's pages to the others) or ``"drop"``
        (finish without them and record their samples as missing).
    min_participants : int
        Fewer live participants than this fails the round.
    pinned : dict, optional
        Participant name -> ids only that participant can encode (its node-local data). They
        are queued after its shard and never reassigned: if it fails they are missing.
    reassign_to : set, optional
        Participants that may take over others' shard pages (default: all); a participant
        that holds only node-local data has no copy of the platform's data to read them from.
    pinned_page_sizes : dict, optional
        Page size per participant for its pinned ids (uploaded images make those pages
        heavier); ``page_size`` by default.
    """

    shards: dict[str, np.ndarray]
    page_size: int
    on_failure: str = "reassign"
    min_participants: int = 1
    pinned: dict[str, np.ndarray] = field(default_factory=dict)
    reassign_to: set[str] | None = None
    pinned_page_sizes: dict[str, int] = field(default_factory=dict)
    queues: dict[str, deque] = field(init=False)
    pinned_queues: dict[str, deque] = field(init=False)
    missing: list[np.ndarray] = field(init=False, default_factory=list)
    failed: set[str] = field(init=False, default_factory=set)
    stolen: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_failure not in ON_FAILURE_POLICIES:
            raise ValueError(f"on-failure must be one of {ON_FAILURE_POLICIES}, got {self.on_failure!r}")
        self.queues = {name: deque(pages(ids, self.page_size)) for name, ids in self.shards.items()}
        self.pinned_queues = {
            name: deque(pages(self.pinned.get(name, np.empty(0, np.int64)),
                              self.pinned_page_sizes.get(name, self.page_size)))
            for name in self.shards}
        self._pinned_ids = {name: set(np.asarray(ids).tolist()) for name, ids in self.pinned.items()}
        self._rr = 0

    @property
    def live(self) -> list[str]:
        return [name for name in self.queues if name not in self.failed]

    def pending_samples(self) -> int:
        return sum(len(page) for name in self.live
                   for page in (*self.queues[name], *self.pinned_queues[name]))

    def pending_pages(self) -> int:
        return sum(len(self.queues[name]) + len(self.pinned_queues[name]) for name in self.live)

    def may_take_others(self, name: str) -> bool:
        """Whether ``name`` holds the platform's data, so it can encode others' shard pages."""
        return self.reassign_to is None or name in self.reassign_to

    def next_for(self, name: str, *, steal: bool = True) -> np.ndarray | None:
        """The next page for ``name``, which is free now.

        Its own shard pages first, then its node-local ones; then, with ``steal``
        (``page-assignment = steal``) and if it holds the platform's data, the last shard page
        of the live participant with the most samples left (the page that participant would
        reach last). ``None`` when there is nothing it may take.
        """
        if name in self.failed:
            return None
        queue = self.queues[name] or self.pinned_queues[name]
        if queue:
            return queue.popleft()
        if not steal or not self.may_take_others(name):
            return None
        victims = [n for n in self.live if n != name and self.queues[n]]
        if not victims:
            return None
        victim = max(victims, key=lambda n: sum(len(page) for page in self.queues[n]))
        self.stolen[name] = self.stolen.get(name, 0) + 1
        return self.queues[victim].pop()

    def fail(self, name: str, in_flight: np.ndarray | list[np.ndarray] | None = None) -> tuple[str, int]:
        """Mark ``name`` failed; returns ``(action, samples affected)``.

        ``in_flight`` is the page (or pages) it was asked for and did not deliver. For a
        participant that has already failed, only those pages are handed on (a page it still
        had in flight when it failed on another).

        Raises
        ------
        RoundFailed
            When fewer than ``min_participants`` remain.
        """
        if in_flight is None:
            in_flight = []
        elif isinstance(in_flight, np.ndarray):
            in_flight = [in_flight]
        leftover = [page for page in in_flight if len(page)]
        if name in self.failed:
            if not leftover:
                return "already failed", 0
        else:
            self.failed.add(name)
            leftover += list(self.queues[name]) + list(self.pinned_queues[name])
            self.queues[name].clear()
            self.pinned_queues[name].clear()
        affected = int(sum(len(p) for p in leftover))
        live = self.live
        if len(live) < self.min_participants:
            raise RoundFailed(
                f"{name} failed and only {len(live)} participant(s) remain, fewer than "
                f"min-participants={self.min_participants}")
        if not leftover:
            return "nothing left to reassign", 0
        # Node-local samples exist only on the failed node: they cannot be reassigned.
        own = self._pinned_ids.get(name, set())
        local = [page[np.isin(page, list(own))] for page in leftover] if own else []
        shard = [page[~np.isin(page, list(own))] for page in leftover] if own else leftover
        local = [p for p in local if len(p)]
        shard = [p for p in shard if len(p)]
        self.missing.extend(local)
        takers = [n for n in live if self.reassign_to is None or n in self.reassign_to]
        if self.on_failure == "drop" or not takers:
            self.missing.extend(shard)
            return ("dropped" if not local else "dropped (node-local samples cannot move)"), affected
        for page in shard:
            for piece in pages(page, self.page_size):
                self.queues[takers[self._rr % len(takers)]].append(piece)
                self._rr += 1
        action = f"reassigned to {', '.join(takers)}"
        if local:
            action += f"; {sum(map(len, local))} node-local samples missing"
        return action, affected

    def missing_ids(self) -> np.ndarray:
        if not self.missing:
            return np.empty(0, np.int64)
        return np.sort(np.concatenate(self.missing)).astype(np.int64)
