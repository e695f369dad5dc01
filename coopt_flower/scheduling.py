"""Which participant encodes which page next, and what happens when one of them fails.

Pages are stateless requests (a list of sample ids), so a failed participant's unfinished
work can be handed to the others. :class:`PageScheduler` keeps one queue of pages per live
participant and hands out one page per participant per wave; when a participant fails, its
in-flight page and its queue are either reassigned to the survivors (round robin, in page
sized pieces) or recorded as missing, as the user chose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from coopt_flower.data import pages

ON_FAILURE_POLICIES = ("reassign", "drop")


class RoundFailed(RuntimeError):
    """Too few participants are left to finish the round."""


@dataclass
class Failure:
    """One refused reply or lost participant, as the report lists it."""

    participant: str
    step: str
    reason: str
    samples_affected: int = 0
    action: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
    """

    shards: dict[str, np.ndarray]
    page_size: int
    on_failure: str = "reassign"
    min_participants: int = 1
    queues: dict[str, deque] = field(init=False)
    missing: list[np.ndarray] = field(init=False, default_factory=list)
    failed: set[str] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        if self.on_failure not in ON_FAILURE_POLICIES:
            raise ValueError(f"on-failure must be one of {ON_FAILURE_POLICIES}, got {self.on_failure!r}")
        self.queues = {name: deque(pages(ids, self.page_size)) for name, ids in self.shards.items()}
        self._rr = 0

    @property
    def live(self) -> list[str]:
        return [name for name in self.queues if name not in self.failed]

    def pending_samples(self) -> int:
        return sum(len(page) for name in self.live for page in self.queues[name])

    def next_wave(self) -> dict[str, np.ndarray]:
        """One page for every live participant that has work left (empty when done)."""
        return {name: self.queues[name].popleft() for name in self.live if self.queues[name]}

    def fail(self, name: str, in_flight: np.ndarray | None = None) -> tuple[str, int]:
        """Mark ``name`` failed; returns ``(action, samples affected)``.

        Raises
        ------
        RoundFailed
            When fewer than ``min_participants`` remain.
        """
        if name in self.failed:
            return "already failed", 0
        self.failed.add(name)
        leftover = ([in_flight] if in_flight is not None and len(in_flight) else []) + list(self.queues[name])
        self.queues[name].clear()
        affected = int(sum(len(p) for p in leftover))
        live = self.live
        if len(live) < self.min_participants:
            raise RoundFailed(
                f"{name} failed and only {len(live)} participant(s) remain, fewer than "
                f"min-participants={self.min_participants}")
        if not leftover:
            return "nothing left to reassign", 0
        if self.on_failure == "drop" or not live:
            self.missing.extend(leftover)
            return "dropped", affected
        for page in leftover:
            for piece in pages(page, self.page_size):
                self.queues[live[self._rr % len(live)]].append(piece)
                self._rr += 1
        return f"reassigned to {', '.join(live)}", affected

    def missing_ids(self) -> np.ndarray:
        if not self.missing:
            return np.empty(0, np.int64)
        return np.sort(np.concatenate(self.missing)).astype(np.int64)
