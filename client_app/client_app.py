"""A CoOpt participant as a Flower ClientApp: a thin shell around
:class:`coopt_flower.participant.PrototypeParticipant`.

The messages (``query.describe`` and ``query.encode``) are defined in
:mod:`coopt_flower.protocol`; :mod:`server_app.records` turns them into Flower records and back. Every reply is stateless apart from the round's student, which
a shared-subset request may carry: the node keeps it in its context state for the round's
pages (``encoder = "student"``), and under ``refinement = distill`` the head its participant
refined on that request (``encoder = "refined"``; the weights never leave the node).

Which prototypes a node runs: ``prototype`` in its node config (``flower-supernode
--node-config "prototype='efficientnet-lite0'"``: one participant), else its partition's
entries of the run config's comma list ``prototypes`` (simulation: partition i of N hosts
participants i, i+N, i+2N, ..., so every prototype takes part whatever the federation size;
see :mod:`coopt_flower.hosting`). Requests name the participant that is to answer (``slot``).

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
from coopt_flower.hosting import OWN_PROTOTYPE, hosted_slots, parse_round_prototypes, spec_for_slot, \
    specs_for_round
from coopt_flower.participant import NodeSettings, PrototypeParticipant
from coopt_flower.protocol import EncodeConfig, EncodeRequest
from server_app.records import array_record, config_record, from_record_dict, to_record_dict

app = ClientApp()


def message_round(msg: Message) -> int:
    """The round a platform's message belongs to (its group id; 1 when absent)."""
    return protocol.group_round(getattr(msg.metadata, "group_id", ""))


def hosted_participants(context: Context, server_round: int = 1) -> list[NodeSettings]:
    """Every participant this node hosts, first one first (see :mod:`coopt_flower.hosting`).

    A node config ``prototype`` makes the node one participant running it (deployment's
    default). Otherwise the node hosts its partition's slots of the run config's
    ``prototypes`` as they stand in ``server_round`` (``round-prototypes`` may change them):
    in a simulation of N nodes, partition i runs prototypes i, i+N, ...
    """
    node = context.node_config
    common = dict(device=str(node.get("device", "")), precision=str(node.get("precision", "fp32")),
                  batch_size=int(node.get("batch-size", 0)), data=str(node.get("data", "")),
                  local_data=str(node.get("local-data", "")),
                  partition_id=int(node.get("partition-id", -1)),
                  num_partitions=int(node.get("num-partitions", 0)),
                  share_local_images=node_flag(node, "share-local-images", default=True))
    if "prototype" in node:
        return [NodeSettings(prototype=str(node["prototype"]), slot=OWN_PROTOTYPE, **common)]
    specs = split_specs(context.run_config.get("prototypes", ""))
    changes = context.run_config.get("round-prototypes", "")
    if changes:
        rounds = int(context.run_config.get("num-server-rounds", 1))
        specs = specs_for_round(specs, parse_round_prototypes(str(changes), len(specs), rounds), server_round)
    slots = hosted_slots(max(common["partition_id"], 0), common["num_partitions"], len(specs),
                         int(context.run_config.get("num-participants", 0)))
    return [NodeSettings(prototype=spec_for_slot(specs, slot), slot=slot, **common) for slot in slots]


def node_flag(node_config, key: str, *, default: bool) -> bool:
    """A true/false node config value (TOML bool, or the words a shell passes)."""
    value = node_config.get(key, default)
    if isinstance(value, bool):
        return value
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if str(value).strip().lower() not in words:
        raise ValueError(f"node config {key} must be true or false, got {value!r}")
    return words[str(value).strip().lower()]


def participant_for(request: EncodeRequest, context: Context, server_round: int = 1) -> PrototypeParticipant:
    """The hosted participant a request names (``slot``), or the node's first one."""
    hosted = hosted_participants(context, server_round)
    slot = request.config.slot
    if slot < 0:  # a platform that does not name participants talks to the node's first one
        return PrototypeParticipant(hosted[0])
    for node in hosted:
        if node.slot == slot:
            return PrototypeParticipant(node)
    raise ValueError(f"asked for participant slot {slot}, but this node hosts slots "
                     f"{[node.slot for node in hosted]}")


def _reply(content: dict, msg: Message) -> Message:
    return Message(to_record_dict(content), reply_to=msg)


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Tell the platform what every participant this node hosts runs."""
    content = from_record_dict(msg.content)
    config = EncodeConfig.from_config(content.get(protocol.CONFIG, {}))
    infos = [PrototypeParticipant(node).describe(config)
             for node in hosted_participants(context, message_round(msg))]
    return _reply(protocol.describe_content(infos), msg)


@app.query("encode")
def encode(msg: Message, context: Context) -> Message:
    """Encode the shared subset (pixels) or a page of the shard (ids) into projected targets."""
    request = EncodeRequest.from_content(from_record_dict(msg.content))
    state = context.state
    if request.student is not None:  # keep the round's student for the pages that follow
        state.array_records[protocol.STUDENT] = msg.content[protocol.STUDENT]
        state.config_records[protocol.STUDENT_CONFIG] = msg.content[protocol.STUDENT_CONFIG]
    student = None
    if request.config.encoder == "student" and protocol.STUDENT in state.array_records:
        student = _kept(state, protocol.STUDENT, protocol.STUDENT_CONFIG)
    # Under distill the refined head stays on this node: kept per participant for its pages,
    # which another process of the node may answer.
    # (A RecordDict holds one namespace for all its record types: two names.)
    refined_record, refined_config = f"refined-{request.config.slot}", f"refined-config-{request.config.slot}"
    refined = None
    if request.config.encoder == "refined" and refined_record in state.array_records:
        refined = _kept(state, refined_record, refined_config)
    participant = participant_for(request, context, message_round(msg))
    reply = participant.encode(request, student, refined)
    if reply.refined_digest and participant.refined_payload is not None:
        weights, config = participant.refined_payload
        state.array_records[refined_record] = array_record(weights)
        state.config_records[refined_config] = config_record({"config-json": json.dumps(config)})
    return _reply(reply.content(), msg)


def _kept(state, arrays: str, config: str):
    """``(weights as a callable, config)`` of what the node kept in its context state."""
    weights = state.array_records[arrays]
    return (lambda: {k: v.numpy() for k, v in weights.items()},
            json.loads(str(state.config_records[config]["config-json"])))
