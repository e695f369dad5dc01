"""How the round engine reaches participants: one interface, two implementations.

The engine (:func:`coopt_flower.engine.round.run_round`) never sees a message: it asks a
:class:`Transport` to describe the nodes, to send a request and to poll for replies. Flower's
Grid is one transport (:class:`server_app.grid_transport.GridTransport`); participants living
in this process are the other (:class:`InProcessTransport`: notebooks, the benchmark, tests).
Both carry the objects of :mod:`coopt_flower.protocol`, so the round sees exactly what a
Flower run gives it, and both rounds run the very same code.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection, Hashable, Mapping, Protocol

from coopt_flower.protocol import Description, EncodeConfig, EncodeReply, EncodeRequest

Reply = EncodeReply | str               # a reply, or why there is none
Described = tuple[int, Description] | str  # (node id, what it runs), or why there is none
Student = tuple[dict, dict]              # (weights, config) of a refined student

log = logging.getLogger(__name__)

#: Seconds between two "still waiting" lines about one silent participant.
WAIT_REPORT_S = 30.0


class SilenceReport:
    """Says, every :data:`WAIT_REPORT_S` seconds, which participants have not replied yet, so
    a node that went quiet is visible long before ``reply-timeout-s`` fails it."""

    def __init__(self, timeout_s: float, every_s: float = WAIT_REPORT_S) -> None:
        self.timeout_s, self.every_s = timeout_s, every_s
        self._reported: dict[str, int] = {}

    def check(self, name: str, silent_s: float) -> None:
        """Log one line when ``name`` has been silent for another ``every_s`` seconds."""
        step = int(silent_s // self.every_s)
        if step >= 1 and step > self._reported.get(name, 0):
            self._reported[name] = step
            log.info("  waiting for %s: no reply for %.0f s (it is failed after reply-timeout-s=%.0f s; a "
                     "node that went offline is reported once Flower misses its heartbeats)",
                     name, silent_s, self.timeout_s)

    def replied(self, name: str) -> None:
        self._reported.pop(name, None)


class Transport(Protocol):
    """Moves the platform's requests to participants and their replies back.

    ``may_grow`` says whether more nodes can still connect (a Flower federation) or every
    participant is there from the start (in process): the engine waits for late nodes only
    in the first case.
    """

    may_grow: bool

    def describe(self, config: EncodeConfig, server_round: int) -> tuple[int, dict[str, Described]]:
        """Describe the nodes that connected since the last call of this round (every node
        connected is described again in a new round: it may run another prototype now).

        Returns ``(nodes connected now, {key: description or why not})``; a node hosting
        several participants gives one key per participant.
        """

    def send(self, node_id: int, request: EncodeRequest, reply_limit: int, server_round: int) -> Hashable:
        """Queue ``request`` for the node; returns a handle for its reply.

        A reply larger than ``reply_limit`` bytes is refused before it is decoded.
        """

    def poll(self, handles: Collection[Hashable]) -> dict[Hashable, Reply]:
        """The replies that have arrived for ``handles``; may wait a little, may be empty."""

    def no_reply(self, node_id: int, waited_s: float) -> str:
        """Why the node sent nothing for ``waited_s`` seconds (it left, or it is too slow)."""


class LocalParticipant(Protocol):
    """A participant in this process (e.g. :class:`coopt_flower.participant.PrototypeParticipant`)."""

    def describe(self, config: EncodeConfig) -> Description: ...

    def encode(self, request: EncodeRequest, student: Student | None = None) -> EncodeReply: ...


class InProcessTransport:
    """Participants in this process: participant ``i`` is node ``i``; a request is answered
    when it is sent.

    Like a SuperNode, which keeps the round's student from the shared-subset request in its
    context state, each node here keeps the student it was sent and hands it to its
    participant with every later page. A participant that raises fails the way a Flower node
    does: its reply is the reason.
    """

    may_grow = False

    def __init__(self, participants: list[LocalParticipant] | Callable[[int], list[LocalParticipant]]) -> None:
        # A callable gives each round's participants (they may bring other prototypes).
        self._for_round = participants if callable(participants) else None
        self.participants = [] if callable(participants) else list(participants)
        self._students: dict[int, Student] = {}
        self._ready: dict[int, Reply] = {}
        self._sent = 0
        self._described: set[int] = set()  # rounds whose describe was answered

    def describe(self, config: EncodeConfig, server_round: int) -> tuple[int, dict[str, Described]]:
        if server_round in self._described:
            return len(self.participants), {}
        self._described.add(server_round)
        if self._for_round is not None:
            self.participants = list(self._for_round(server_round))
        return len(self.participants), {f"node-{i}": (i, p.describe(config))
                                        for i, p in enumerate(self.participants)}

    def send(self, node_id: int, request: EncodeRequest, reply_limit: int, server_round: int) -> int:
        if request.student is not None:
            self._students[node_id] = request.student
        self._sent += 1
        self._ready[self._sent] = _answer(self.participants[node_id], request,
                                          None if request.student is not None else self._students.get(node_id))
        return self._sent

    def poll(self, handles: Collection[Hashable]) -> dict[Hashable, Reply]:
        return {h: self._ready.pop(h) for h in list(handles) if h in self._ready}

    def no_reply(self, node_id: int, waited_s: float) -> str:
        return f"no reply within {waited_s:.0f} s"


def _answer(participant: LocalParticipant, request: EncodeRequest, student: Student | None) -> Reply:
    try:
        return participant.encode(request, student)
    except Exception as error:  # a participant's failure is the round's to handle, as in Flower
        return f"failed: {error}"


def exchange(transport: Transport, requests: Mapping[str, tuple[int, EncodeRequest, int]], *,
             server_round: int, timeout_s: float, clock: Callable[[], float]) -> dict[str, Reply]:
    """Send one request per participant and wait for every reply (a barrier); a participant
    still silent after ``timeout_s`` gets the transport's reason instead of a reply.

    ``requests``: participant name -> ``(node id, request, reply size limit)``. Returns the
    replies in the order of ``requests``.
    """
    names = {transport.send(node, request, limit, server_round): name
             for name, (node, request, limit) in requests.items()}
    started, replies, silence = clock(), {}, SilenceReport(timeout_s)
    while len(replies) < len(names):
        pending = [h for h, name in names.items() if name not in replies]
        for handle, reply in transport.poll(pending).items():
            replies[names[handle]] = reply
        waited = clock() - started
        for handle in pending:
            if names[handle] not in replies:
                silence.check(names[handle], waited)
        if waited > timeout_s:
            for handle in pending:
                replies.setdefault(names[handle], transport.no_reply(requests[names[handle]][0], waited))
    return {name: replies[name] for name in requests}
