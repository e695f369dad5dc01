"""A CoOpt participant as a Flower ClientApp: a thin shell around
:class:`coopt_flower.participant.PrototypeParticipant`.

The messages (``query.describe`` and ``train.optimize``) and their records are defined in
:mod:`coopt_flower.protocol`. Every reply is stateless apart from the round's student, which
a shared-subset request may carry: the node keeps it in its context state for the round's
pages (``encoder = "student"``).

Which prototype a node runs: ``prototype`` in its node config (``flower-supernode
--node-config "prototype='efficientnet-lite0'"``), else entry ``partition-id`` of the run
config's comma list ``prototypes`` (simulation).

Node config keys: ``prototype``, ``device`` (default: cuda when available), ``batch-size``
(overrides the platform's), ``precision`` (``fp32`` or, on a GPU, ``bf16`` / ``fp16``
autocast), ``data`` (where this node keeps its copy of the platform's data, when the path
differs from the run config's), and ``local-data``: images only this node holds (e.g.
``folder:/data/mine``). A node with local data encodes those (requests with ``scope =
"local"``, ids are its own indices 0..M-1) and, when asked (``upload-images``), returns the
pixels too so the platform can build a self-contained dataset.
"""

from __future__ import annotations

import json

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from coopt_flower import protocol
from coopt_flower.config import split_specs
from coopt_flower.participant import NodeSettings, PrototypeParticipant
from coopt_flower.protocol import EncodeConfig, EncodeRequest

app = ClientApp()


def resolve_prototype_spec(context: Context) -> str:
    """The prototype this node runs: its node config first, else its slot in the run config."""
    if "prototype" in context.node_config:
        return str(context.node_config["prototype"])
    specs = split_specs(context.run_config.get("prototypes", ""))
    if not specs:
        raise ValueError("no prototype: set node config 'prototype' or run config 'prototypes'")
    partition = int(context.node_config.get("partition-id", 0))
    return specs[partition % len(specs)]


def node_settings(context: Context) -> NodeSettings:
    """This node's own settings from its node config (and its slot in the run config)."""
    node = context.node_config
    return NodeSettings(
        prototype=resolve_prototype_spec(context), device=str(node.get("device", "")),
        precision=str(node.get("precision", "fp32")), batch_size=int(node.get("batch-size", 0)),
        data=str(node.get("data", "")), local_data=str(node.get("local-data", "")),
        partition_id=int(node.get("partition-id", -1)))


def _reply(content: dict, msg: Message) -> Message:
    return Message(protocol.to_record_dict(content), reply_to=msg)


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Tell the platform what this participant runs."""
    content = protocol.from_record_dict(msg.content)
    config = EncodeConfig.from_config(content.get(protocol.CONFIG, {}))
    info = PrototypeParticipant(node_settings(context)).describe(config)
    return _reply({protocol.DESCRIPTION: info.to_config()}, msg)


@app.train("optimize")
def optimize(msg: Message, context: Context) -> Message:
    """Encode the shared subset (pixels) or a page of the shard (ids) into projected targets."""
    request = EncodeRequest.from_content(protocol.from_record_dict(msg.content))
    state = context.state
    if request.student is not None:  # keep the round's student for the pages that follow
        state.array_records[protocol.STUDENT] = msg.content[protocol.STUDENT]
        state.config_records[protocol.STUDENT_CONFIG] = msg.content[protocol.STUDENT_CONFIG]
    student = None
    if request.config.encoder == "student" and protocol.STUDENT in state.array_records:
        student = ({k: v.numpy() for k, v in state.array_records[protocol.STUDENT].items()},
                   json.loads(str(state.config_records[protocol.STUDENT_CONFIG]["config-json"])))
    reply = PrototypeParticipant(node_settings(context)).encode(request, student)
    return _reply(reply.content(), msg)
