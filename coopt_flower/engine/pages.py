"""The optimize step's loop: pages out to participants, replies back, until none is left.

One loop serves both ``page-assignment`` values:

- ``waves`` (default): the loop with a barrier. Every live participant gets one page of its
  own; the next wave starts only when every reply of this one is in, and the replies are
  merged in the order the pages were sent, so who encodes which sample (and so every byte of
  the dataset) depends only on the seed. A wave lasts as long as its slowest page.
- ``steal``: no barrier. ``pages-in-flight`` pages stay queued for every participant (the
  next one waits at the SuperLink while the current one is encoded, so the transfer overlaps
  compute), a participant is refilled as soon as one of its replies arrives: its own pages
  first, then the last page of whoever has the most left. Near the end only one page is kept
  in flight per participant, so no page waits behind another on a slow node while the others
  are idle. Node-local data is never stolen: only its owner can read it.

Everything a page goes through is the writer's (:meth:`RoundWriter.accept` checks, aligns and
writes it; a refused reply fails its participant and its other in-flight pages are handed on
as ``on-failure`` says). A participant that answers none of its pages for ``reply-timeout-s``
is failed; its clock restarts at each of its replies (a page queued behind another is not yet
being worked on).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Callable, Hashable

import numpy as np

from coopt_flower.engine.merging import RoundWriter
from coopt_flower.engine.transport import Reply, SilenceReport, Transport

log = logging.getLogger(__name__)


def encode_pages(writer: RoundWriter, transport: Transport, *, steal: bool, server_round: int,
                 pages_in_flight: int = 2, reply_timeout_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
    """Encode every page of the round (see the module's text for ``steal``).

    Parameters
    ----------
    writer : RoundWriter
    transport : Transport
    steal : bool
        Work stealing (``page-assignment = steal``); otherwise waves with a barrier.
    server_round : int
        The round the messages belong to.
    pages_in_flight : int
        Pages queued per participant while there is plenty of work (``steal`` only).
    reply_timeout_s : float
        A participant that answers none of its pages for this long is failed.
    clock : callable
        Seconds, monotonic (the tests pass a simulated one).
    """
    in_flight: dict[Hashable, tuple[str, np.ndarray]] = {}  # in the order sent
    queued: dict[str, list[Hashable]] = defaultdict(list)    # per participant, oldest first
    waiting_since: dict[str, float] = {}
    held: dict[Hashable, Reply] = {}                         # waves: replies until the wave is in
    waves = 0
    progress = PageProgress(len(writer.all_ids) - writer.merged)

    def fill() -> None:
        if not steal and in_flight:  # the barrier: a wave starts when the last one is merged
            return
        for name in writer.live:
            target = writer.in_flight_target(pages_in_flight) if steal else 1
            while len(queued[name]) < target:
                ids = writer.next_page(name, steal=steal)
                if ids is None:
                    break
                node, request, limit = writer.request(name, ids)
                handle = transport.send(node, request, limit, server_round)
                if not queued[name]:
                    waiting_since[name] = clock()
                in_flight[handle] = (name, ids)
                queued[name].append(handle)

    def merge(handle: Hashable, reply: Reply) -> None:
        name, ids = in_flight.pop(handle)
        queued[name].remove(handle)
        waiting_since[name] = clock()
        silence.replied(name)
        merged = writer.accept(name, ids, reply)
        if steal:
            _log_progress(writer, merged)
        if writer.has_failed(name) and queued[name]:
            pages = [in_flight.pop(h)[1] for h in queued[name]]
            queued[name].clear()
            writer.release(name, pages)

    silence = SilenceReport(reply_timeout_s)
    fill()
    while in_flight:
        replies = transport.poll([h for h in in_flight if h not in held])
        for handle in replies:
            if handle in in_flight:
                progress.arrived(len(in_flight[handle][1]), writer.pending_samples())
        now = clock()
        for name, handles in queued.items():
            first = handles[0] if handles else None
            if first is None or first in replies or first in held:
                continue
            silent_s = now - waiting_since[name]
            silence.check(name, silent_s)
            if silent_s > reply_timeout_s:
                replies[first] = transport.no_reply(writer.node_of(name), silent_s)
        if steal:
            for handle, reply in replies.items():
                if handle in in_flight:  # else: a page already handed on after its participant failed
                    merge(handle, reply)
        else:
            held.update(replies)
            if len(held) == len(in_flight):
                for handle in list(in_flight):  # merged in the order sent
                    merge(handle, held.pop(handle))
                waves += 1
                log.info("[optimize] wave %d: %d/%d samples merged, %d pending", waves, writer.merged,
                         len(writer.all_ids), writer.pending_samples())
        fill()


class PageProgress:
    """One log line per arriving page, at most every ``every_s`` seconds (and for the last):
    samples in, the rate since the first request, and the time left at that rate."""

    def __init__(self, total: int, every_s: float = 10.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.every_s, self.clock = max(int(total), 1), every_s, clock
        self.started, self.received, self.last_line = clock(), 0, None

    def arrived(self, samples: int, pending: int) -> str | None:
        """Count a page of ``samples``; returns (and logs) the line when one is due."""
        self.received += int(samples)
        now = self.clock()
        done = self.received >= self.total
        if not done and self.last_line is not None and now - self.last_line < self.every_s:
            return None
        self.last_line = now
        rate = self.received / max(now - self.started, 1e-9)
        left = max(self.total - self.received, 0) / rate if rate > 0 else float("inf")
        line = (f"[optimize] {self.received}/{self.total} samples encoded ({100 * self.received / self.total:.0f} %), "
                f"{rate:.0f} samples/s, {'done' if done else 'ETA ' + _duration(left)}, {pending} pending")
        log.info("%s", line)
        return line


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _log_progress(writer: RoundWriter, merged: int) -> None:
    """Log progress every 10% of the samples (work stealing merges pages one by one)."""
    total = max(len(writer.all_ids), 1)
    if merged and (writer.merged * 10) // total != ((writer.merged - merged) * 10) // total:
        log.info("[optimize] %d/%d samples merged, %d pending", writer.merged, total, writer.pending_samples())
