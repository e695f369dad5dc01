"""The round engine's transport over a Flower Grid: messages out, replies in.

:class:`GridTransport` is everything the ServerApp adds to the Flower-free engine
(:func:`coopt_flower.engine.round.run_round`): describe requests to nodes as they connect,
encode requests pushed one message at a time, replies pulled as they arrive every ``poll_s``
seconds (``Grid.send_and_receive`` would wait for a whole batch and poll every 3 s), each
checked for size before it is decoded, and the reason a node is silent.
"""

from __future__ import annotations

import time
from typing import Collection

from flwr.app import Message
from flwr.serverapp import Grid

from coopt_flower import protocol
from coopt_flower.engine.transport import Described, Reply
from coopt_flower.errors import no_reply_reason
from coopt_flower.protocol import EncodeConfig, EncodeRequest
from server_app.records import from_record_dict, read_encode_reply, reply_or_reason, to_record_dict


def round_message(server_round: int, node_id: int, message_type: str, content: dict) -> Message:
    """A message of the round's group to one node."""
    return Message(to_record_dict(content), dst_node_id=node_id, message_type=message_type,
                   group_id=protocol.round_group(server_round))


def read_describe(key: str, reply: Message | str) -> dict[str, Described]:
    """One entry per participant a node hosts (``node-<id>/<k>`` after its first), or why not."""
    if isinstance(reply, str):
        return {key: reply}
    try:
        infos = protocol.read_descriptions(from_record_dict(reply.content))
    except (KeyError, TypeError, ValueError) as error:
        return {key: f"malformed describe reply ({error!r})"}
    return {key if index == 0 else f"{key}/{index}": (reply.metadata.src_node_id, info)
            for index, info in enumerate(infos)}


class GridTransport:
    """A :class:`~coopt_flower.engine.transport.Transport` over a Flower Grid.

    Parameters
    ----------
    grid : Grid
    reply_timeout_s : float
        How long a describe exchange waits, and what a silent node is told it exceeded.
    poll_s : float
        Seconds between pulls while replies are outstanding.
    """

    may_grow = True  # SuperNodes may still connect

    def __init__(self, grid: Grid, reply_timeout_s: float, poll_s: float = 0.2) -> None:
        self.grid, self.reply_timeout_s, self.poll_s = grid, reply_timeout_s, poll_s
        self._described: dict[int, set[int]] = {}  # round -> nodes described in it
        self._sent: dict[str, int] = {}    # message id -> reply size limit
        self._unsent: dict[str, str] = {}  # handle -> why the message could not be pushed

    def describe(self, config: EncodeConfig, server_round: int) -> tuple[int, dict[str, Described]]:
        node_ids = sorted(self.grid.get_node_ids())
        described = self._described.setdefault(server_round, set())
        new = [nid for nid in node_ids if nid not in described]
        described.update(new)
        if not new:
            return len(node_ids), {}
        content = {protocol.CONFIG: config.to_config()}
        messages = {f"node-{nid}": round_message(server_round, nid, protocol.DESCRIBE, content) for nid in new}
        return len(node_ids), self._describe_replies(messages)

    def _describe_replies(self, messages: dict[str, Message]) -> dict[str, Described]:
        started = time.monotonic()
        replies = self.grid.send_and_receive(list(messages.values()), timeout=self.reply_timeout_s)
        by_message = {r.metadata.reply_to_message_id: r for r in replies}
        described: dict[str, Described] = {}
        for key, message in messages.items():
            reply = by_message.get(message.metadata.message_id)
            if reply is None:  # a node found dead by its heartbeat, or one that is too slow
                reason = self.no_reply(message.metadata.dst_node_id, time.monotonic() - started)
                described[key] = reason
            else:
                described.update(read_describe(key, reply_or_reason(reply)))
        return described

    def send(self, node_id: int, request: EncodeRequest, reply_limit: int, server_round: int) -> str:
        message = round_message(server_round, node_id, protocol.ENCODE, request.content())
        ids = list(self.grid.push_messages([message]))
        if not ids or ids[0] is None:
            handle = f"unsent-{len(self._unsent)}"
            self._unsent[handle] = "the request could not be pushed to the SuperLink (see its log)"
            return handle
        self._sent[ids[0]] = reply_limit
        return ids[0]

    def poll(self, handles: Collection[str]) -> dict[str, Reply]:
        out: dict[str, Reply] = {h: self._unsent.pop(h) for h in handles if h in self._unsent}
        if out:
            return out
        wanted = [h for h in handles if h in self._sent]
        time.sleep(self.poll_s)
        for reply in self.grid.pull_messages(wanted):
            handle = reply.metadata.reply_to_message_id
            if handle in self._sent:
                out[handle] = read_encode_reply(reply_or_reason(reply), self._sent.pop(handle))
        return out

    def no_reply(self, node_id: int, waited_s: float) -> str:
        connected = node_id in set(self.grid.get_node_ids())
        return no_reply_reason(connected, waited_s, self.reply_timeout_s)
