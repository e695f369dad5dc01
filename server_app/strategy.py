"""CoOpt as a Flower strategy: moves one round's messages over a Grid.

It follows Flower's strategy idiom (``flwr/serverapp/strategy/strategy.py``): ``configure_*``
hooks turn the round's requests into messages, ``aggregate_*`` hooks turn the replies into what
the round accepts, and :meth:`CoOptStrategy.start` runs the steps and returns a
:class:`~coopt_flower.round.RoundResult`. The round itself, every decision and every check of
a reply, lives in :class:`coopt_flower.round.CoOptRound`, which knows nothing of Flower; the
message schema lives in :mod:`coopt_flower.protocol`.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING
from typing import Iterable, Mapping

import numpy as np
from flwr.app import Message
from flwr.common import log
from flwr.serverapp import Grid

from coopt_flower import protocol
from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource, open_source
from coopt_flower.errors import message_error_reason, no_reply_reason
from coopt_flower.hosting import federation_complete
from coopt_flower.paging import steal_pages
from coopt_flower.protocol import Description, EncodeReply, EncodeRequest, ReplyRefused
from coopt_flower.round import CoOptRound, Participant, Reply, RoundResult, Student
from coopt_flower.scheduling import RoundFailed


class CoOptStrategy:
    """The CoOpt data platform.

    Parameters
    ----------
    settings : RunSettings
        The validated run config.
    source : ImageSource, optional
        The platform's copy of the data (opened from ``settings.data`` when omitted).
    """

    def __init__(self, settings: RunSettings, source: ImageSource | None = None) -> None:
        self.settings = settings
        self.source = source if source is not None else open_source(settings.data)

    def summary(self) -> None:
        """Log the strategy's settings, as Flower strategies do before starting."""
        s = self.settings
        log(INFO, "CoOpt strategy: data=%s (%d available), num-samples=%s, shared-size=%d, "
            "target-dim=%d, seed=%d, page=%d samples, on-failure=%s, min-participants=%d, "
            "output=%s", s.data, len(self.source), s.num_samples or "all", s.shared_size,
            s.target_dim, s.seed, s.rows_per_page(), s.on_failure, s.min_participants,
            s.output_dir)

    # ------------------------------------------------------------------ transport
    @staticmethod
    def _message(server_round: int, node_id: int, message_type: str, content: dict) -> Message:
        return Message(protocol.to_record_dict(content), dst_node_id=node_id,
                       message_type=message_type, group_id=f"round-{server_round}")

    def _exchange(self, grid: Grid, messages: Mapping[str, Message]) -> dict[str, Message | str]:
        """Send one message per participant; returns its reply, or why there is none.

        Replies are matched to their messages by message id: a node hosting several
        participants gets several messages at once.
        """
        started = time.monotonic()
        replies = grid.send_and_receive(list(messages.values()), timeout=self.settings.reply_timeout_s)
        by_message = {r.metadata.reply_to_message_id: r for r in replies}
        out: dict[str, Message | str] = {}
        connected = None
        for name, msg in messages.items():
            reply = by_message.get(msg.metadata.message_id)
            if reply is None:  # a node found dead by its heartbeat, or one that is too slow
                connected = set(grid.get_node_ids()) if connected is None else connected
                out[name] = no_reply_reason(msg.metadata.dst_node_id in connected,
                                            time.monotonic() - started, self.settings.reply_timeout_s)
            else:
                out[name] = self._reply_or_reason(reply)
        return out

    @staticmethod
    def _reply_or_reason(reply: Message) -> Message | str:
        """A reply, or the reason Flower gave for its error."""
        return message_error_reason(reply.error.code, reply.error.reason) if reply.has_error() else reply

    @staticmethod
    def _encode_replies(replies: Mapping[str, Message | str],
                        limits: Mapping[str, int] | None = None) -> dict[str, Reply]:
        """Each reply read as an :class:`EncodeReply`, or the reason it cannot be; a reply
        larger than ``limits[name]`` bytes is refused before its arrays are decoded."""
        out: dict[str, Reply] = {}
        for name, reply in replies.items():
            try:
                if limits and not isinstance(reply, str):
                    protocol.check_reply_size(reply.content, limits[name])
                out[name] = reply if isinstance(reply, str) else \
                    EncodeReply.from_content(protocol.from_record_dict(reply.content))
            except ReplyRefused as error:
                out[name] = str(error)
        return out

    def describe_nodes(self, round_: CoOptRound, grid: Grid) -> list[Participant]:
        """Describe nodes as they connect until every expected participant is known.

        Starts as soon as the described nodes host ``num-participants`` (default: one per
        prototype) participants, or a simulated federation's every node has been described
        (each reports its size, ``num-partitions``); otherwise when ``node-wait-s`` runs out,
        with those known (at least ``min-participants``).
        """
        s = self.settings
        expected = s.expected_participants
        deadline = time.monotonic() + s.node_wait_s
        described: dict[str, tuple[int, Description] | str] = {}
        asked: set[int] = set()
        while True:
            node_ids = sorted(grid.get_node_ids())
            new = [nid for nid in node_ids if nid not in asked]
            if new:
                asked.update(new)
                described.update(self.read_describe(
                    self._exchange(grid, self.configure_describe(round_, new))))
            found = [d for d in described.values() if not isinstance(d, str)]
            if len(found) >= expected:
                break
            if found and federation_complete(len(node_ids), [info.num_partitions for _, info in found]):
                if len(found) < expected:
                    log(WARNING, "the simulated federation's %d nodes host %d of %d participants; "
                        "starting with them", len(node_ids), len(found), expected)
                break
            if time.monotonic() > deadline:
                if len(found) >= s.min_participants:
                    log(WARNING, "only %d of %d participants connected within %g s; starting "
                        "with them", len(found), expected, s.node_wait_s)
                    break
                raise RoundFailed(
                    f"only {len(found)} of {expected} participants connected within "
                    f"{s.node_wait_s:g} s; start more SuperNodes or lower min-participants")
            time.sleep(1.0)
        return round_.accept_descriptions(described)

    # ------------------------------------------------------------------ describe
    def configure_describe(self, round_: CoOptRound, node_ids: Iterable[int]) -> dict[str, Message]:
        content = {protocol.CONFIG: round_.encode_config().to_config()}
        return {f"node-{nid}": self._message(round_.server_round, nid, protocol.DESCRIBE, content)
                for nid in node_ids}

    @staticmethod
    def read_describe(replies: Mapping[str, Message | str]) -> dict[str, tuple[int, Description] | str]:
        """One entry per participant a node hosts (``node-<id>/<k>`` after its first), or why not."""
        described: dict[str, tuple[int, Description] | str] = {}
        for key, reply in replies.items():
            if isinstance(reply, str):
                described[key] = reply
                continue
            try:
                infos = protocol.read_descriptions(reply.content)
            except (KeyError, TypeError, ValueError) as error:
                described[key] = f"malformed describe reply ({error!r})"
                continue
            for index, info in enumerate(infos):
                described[key if index == 0 else f"{key}/{index}"] = (reply.metadata.src_node_id, info)
        return described

    def aggregate_describe(self, round_: CoOptRound, replies: Mapping[str, Message | str]) -> list[Participant]:
        return round_.accept_descriptions(self.read_describe(replies))

    # ------------------------------------------------------------------ shared subset
    def configure_shared(self, round_: CoOptRound) -> dict[str, Message]:
        return self._optimize_messages(round_, round_.shared_requests())

    def aggregate_shared(self, round_: CoOptRound, replies: Mapping[str, Message | str]) -> None:
        round_.accept_shared(self._encode_replies(replies, round_.reply_limits()))

    # ------------------------------------------------------------------ shard pages
    def configure_optimize(self, round_: CoOptRound, wave: Mapping[str, np.ndarray]) -> dict[str, Message]:
        return self._optimize_messages(round_, round_.page_requests(wave))

    def _optimize_messages(self, round_: CoOptRound, requests: Mapping[str, EncodeRequest]) -> dict[str, Message]:
        """One ``train.optimize`` message per participant's request, to the node hosting it."""
        node_of = {p.name: p.node_id for p in round_.participants}
        return {name: self._message(round_.server_round, node_of[name], protocol.OPTIMIZE, request.content())
                for name, request in requests.items()}

    def aggregate_optimize(self, round_: CoOptRound, wave: Mapping[str, np.ndarray],
                           replies: Mapping[str, Message | str]) -> int:
        return round_.accept_pages(wave, self._encode_replies(replies, round_.reply_limits(wave)))

    # ------------------------------------------------------------------ the round
    def start(self, grid: Grid, server_round: int = 1, student: Student | None = None) -> RoundResult:
        """Run one CoOpt round and publish its dataset.

        Parameters
        ----------
        grid : Grid
        server_round : int
        student : tuple, optional
            ``(weights, config)`` of the previous round's student
            (:func:`coopt_flower.refinement.student_payload`); used as the settings'
            ``refinement`` policy says, ignored by ``static``.

        Raises
        ------
        RoundFailed
            Too few participants were left; nothing was published.
        """
        self.summary()
        round_ = CoOptRound(self.settings, self.source, server_round, student)
        with round_.timed("describe"):
            self.describe_nodes(round_, grid)
        with round_.timed("shared subset encode"):
            self.aggregate_shared(round_, self._exchange(grid, self.configure_shared(round_)))
        round_.plan()
        with round_.writing():
            if self.settings.page_assignment == "steal":
                steal_pages(round_, GridPages(self, grid, round_),
                            pages_in_flight=self.settings.pages_in_flight,
                            reply_timeout_s=self.settings.reply_timeout_s)
            while wave := round_.next_wave():  # nothing left after stealing
                replies = self._exchange(grid, self.configure_optimize(round_, wave))
                self.aggregate_optimize(round_, wave, replies)
            return round_.publish()


class GridPages:
    """Work stealing's transport over a Flower Grid (:func:`coopt_flower.paging.steal_pages`).

    Pages are pushed one message at a time and replies pulled as they arrive, every
    ``poll_s`` seconds (``Grid.send_and_receive`` would wait for a whole wave and poll every
    3 s).
    """

    def __init__(self, strategy: CoOptStrategy, grid: Grid, round_: CoOptRound, poll_s: float = 0.2) -> None:
        self.strategy, self.grid, self.round = strategy, grid, round_
        self.poll_s = poll_s
        self._sent: dict[str, tuple[str, int]] = {}  # message id -> (participant, reply size limit)
        self._unsent: dict[str, str] = {}  # handle -> why the message could not be pushed
        self._node_of = {p.name: p.node_id for p in round_.participants}

    def send(self, name: str, request: EncodeRequest, reply_limit: int) -> str:
        message = self.strategy._optimize_messages(self.round, {name: request})[name]
        ids = list(self.grid.push_messages([message]))
        if not ids or ids[0] is None:
            handle = f"unsent-{len(self._unsent)}"
            self._unsent[handle] = "the page could not be pushed to the SuperLink (see its log)"
            return handle
        self._sent[ids[0]] = (name, reply_limit)
        return ids[0]

    def poll(self, handles) -> dict[str, Reply]:
        out: dict[str, Reply] = {h: self._unsent.pop(h) for h in handles if h in self._unsent}
        if out:
            return out
        wanted = [h for h in handles if h in self._sent]
        time.sleep(self.poll_s)
        for reply in self.grid.pull_messages(wanted):
            handle = reply.metadata.reply_to_message_id
            if handle not in self._sent:
                continue
            name, limit = self._sent.pop(handle)
            out[handle] = self.strategy._encode_replies({name: self.strategy._reply_or_reason(reply)},
                                                        {name: limit})[name]
        return out

    def no_reply(self, name: str, waited_s: float) -> str:
        connected = self._node_of[name] in set(self.grid.get_node_ids())
        return no_reply_reason(connected, waited_s, self.strategy.settings.reply_timeout_s)
