"""Work stealing in the optimize step: pages go to whichever participant is free.

With ``page-assignment = "waves"`` (the default) the platform sends one page to every
participant and waits for all replies before the next wave, so every wave lasts as long as its
slowest page: one node four times slower than the others holds the whole round to its pace.
With ``"steal"``, :func:`steal_pages` keeps ``pages-in-flight`` pages queued for every
participant (the next one waits at the SuperLink while the current one is encoded, so the
transfer overlaps compute) and refills a participant as soon as one of its replies arrives:
its own pages first, then the last page of whoever has the most left
(:meth:`coopt_flower.scheduling.PageScheduler.next_for`). Near the end only one page is kept
in flight per participant, so no page waits behind another on a slow node while the others
are idle. Node-local data is never stolen: only its owner can read it.

Everything a page goes through is the round's own (:meth:`CoOptRound.accept_page` checks,
aligns and writes it; a refused reply fails its participant and its other in-flight pages are
handed on as ``on-failure`` says). This module only moves pages over a :class:`PageTransport`:
Flower's Grid in the ServerApp (:class:`server_app.strategy.GridPages`), participants in this
process (:class:`InProcessPages`), or a simulated clock in the tests.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Collection, Hashable, Protocol

import numpy as np

from coopt_flower.protocol import EncodeReply, EncodeRequest

if TYPE_CHECKING:
    from coopt_flower.round import CoOptRound

Reply = EncodeReply | str  # a reply, or the reason there is none


class PageTransport(Protocol):
    """Moves page requests to participants and their replies back."""

    def send(self, name: str, request: EncodeRequest, reply_limit: int) -> Hashable:
        """Queue ``request`` for participant ``name``; returns a handle for its reply.

        A reply larger than ``reply_limit`` bytes is to be refused before it is decoded.
        """

    def poll(self, handles: Collection[Hashable]) -> dict[Hashable, Reply]:
        """The replies that have arrived for ``handles``; may wait a little, may be empty."""

    def no_reply(self, name: str, waited_s: float) -> str:
        """Why ``name`` sent nothing for ``waited_s`` seconds (it left, or it is too slow)."""


def steal_pages(round_: CoOptRound, transport: PageTransport, *, pages_in_flight: int = 2,
                reply_timeout_s: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
    """Encode every page of the round, each participant taking work whenever it is free.

    Parameters
    ----------
    round_ : CoOptRound
        A round inside :meth:`CoOptRound.writing`.
    transport : PageTransport
    pages_in_flight : int
        Pages queued per participant while there is plenty of work (one near the end).
    reply_timeout_s : float
        A participant that answers none of its pages for this long is failed. The clock
        restarts at each of its replies: a page queued behind another is not yet being worked
        on.
    clock : callable
        Seconds, monotonic (the tests pass a simulated one).
    """
    in_flight: dict[Hashable, tuple[str, np.ndarray]] = {}
    queued: dict[str, list[Hashable]] = defaultdict(list)  # per participant, oldest first
    waiting_since: dict[str, float] = {}

    def fill() -> None:
        for name in round_.live_participants:
            target = round_.in_flight_target(pages_in_flight)
            while len(queued[name]) < target:
                ids = round_.next_page(name)
                if ids is None:
                    break
                handle = transport.send(name, round_.page_request(name, ids),
                                        round_.page_reply_limit(name, ids))
                if not queued[name]:
                    waiting_since[name] = clock()
                in_flight[handle] = (name, ids)
                queued[name].append(handle)

    fill()
    while in_flight:
        replies = transport.poll(list(in_flight))
        now = clock()
        for name, handles in queued.items():
            if handles and handles[0] not in replies and now - waiting_since[name] > reply_timeout_s:
                replies[handles[0]] = transport.no_reply(name, now - waiting_since[name])
        for handle, reply in replies.items():
            if handle not in in_flight:  # a page already handed on after its participant failed
                continue
            name, ids = in_flight.pop(handle)
            queued[name].remove(handle)
            waiting_since[name] = clock()
            round_.accept_page(name, ids, reply)
            if round_.has_failed(name) and queued[name]:
                pages = [in_flight.pop(h)[1] for h in queued[name]]
                queued[name].clear()
                round_.release_pages(name, pages)
        fill()


class InProcessPages:
    """A transport to participants in this process: each request is answered when sent.

    Parameters
    ----------
    answer : callable
        ``answer(name, request) -> Reply``.
    """

    def __init__(self, answer: Callable[[str, EncodeRequest], Reply]) -> None:
        self._answer = answer
        self._ready: dict[int, Reply] = {}
        self._next = 0

    def send(self, name: str, request: EncodeRequest, reply_limit: int) -> int:
        self._next += 1
        self._ready[self._next] = self._answer(name, request)
        return self._next

    def poll(self, handles: Collection[Hashable]) -> dict[Hashable, Reply]:
        return {h: self._ready.pop(h) for h in list(handles) if h in self._ready}

    def no_reply(self, name: str, waited_s: float) -> str:
        return f"no reply within {waited_s:.0f} s"
