"""The protocol's messages as Flower records: the one place that knows Flower's record types.

:mod:`coopt_flower.protocol` describes every message as plain content (record name -> dict of
primitives or numpy arrays) and knows nothing of Flower. Both Flower shells, the ServerApp
(:mod:`server_app.grid_transport`) and the ClientApp (:mod:`client_app.client_app`), turn
that content into a ``RecordDict`` and back here, so the mapping from record names to record
kinds is written once.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from coopt_flower import protocol
from coopt_flower.errors import message_error_reason
from coopt_flower.protocol import EncodeReply, ReplyRefused


def to_record_dict(content: Mapping[str, Mapping[str, Any]]) -> RecordDict:
    """Plain content (record name -> dict) as a Flower ``RecordDict``."""
    records = {}
    for name, values in content.items():
        if name in protocol.ARRAY_RECORDS:
            records[name] = ArrayRecord({k: Array(np.asarray(v)) for k, v in values.items()})
        elif name in protocol.METRIC_RECORDS:
            records[name] = MetricRecord(dict(values))
        elif name in protocol.CONFIG_RECORDS or name.startswith(protocol.DESCRIPTION + "-"):
            records[name] = ConfigRecord(dict(values))
        else:
            raise KeyError(f"unknown record {name!r}")
    return RecordDict(records)


def array_record(values: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Numpy arrays as one ``ArrayRecord`` (what a node keeps in its context state)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in values.items()})


def config_record(values: Mapping[str, Any]) -> ConfigRecord:
    return ConfigRecord(dict(values))


def from_record_dict(records: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A Flower ``RecordDict`` as plain content: arrays as numpy, configs and metrics as dicts."""
    return {name: {k: v.numpy() if hasattr(v, "numpy") else v for k, v in record.items()}
            for name, record in records.items()}


def reply_or_reason(reply: Message) -> Message | str:
    """A reply, or the reason Flower gave for its error."""
    return message_error_reason(reply.error.code, reply.error.reason) if reply.has_error() else reply


def read_encode_reply(reply: Message | str, limit_bytes: int) -> EncodeReply | str:
    """An encode reply as an :class:`EncodeReply`, or the reason it cannot be one; a reply
    larger than ``limit_bytes`` is refused before its arrays are decoded."""
    if isinstance(reply, str):
        return reply
    try:
        protocol.check_reply_size(reply.content, limit_bytes)
        return EncodeReply.from_content(from_record_dict(reply.content))
    except ReplyRefused as error:
        return str(error)
