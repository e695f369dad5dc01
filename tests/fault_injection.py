"""A ClientApp that misbehaves on purpose, for fault-injection tests of the platform.

It wraps the real participant (``client_app.client_app.app``) and, for the partitions named in
the run config's ``fault`` key, breaks one ``query.encode`` reply:

``fault = "1:raise:2,2:nan:1"``  partition 1 raises on its 2nd shard page, partition 2 sends
NaN targets on its 1st. Page 0 is the shared subset. Kinds: ``raise``, ``nan``, ``dim`` (wrong
target dimension), ``ids`` (ids outside its page), ``shared`` (other shared pixels' checksum).

Tests copy this file into a temporary app directory whose pyproject names it as the
ClientApp; the production app never loads it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from client_app.client_app import app as participant

app = ClientApp()


def _faults(context: Context) -> dict[int, tuple[str, int]]:
    out = {}
    for item in str(context.run_config.get("fault", "")).split(","):
        if item.strip():
            partition, kind, page = item.strip().split(":")
            out[int(partition)] = (kind, int(page))
    return out


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    return participant(msg, context)


@app.query("encode")
def encode(msg: Message, context: Context) -> Message:
    # Node state survives between messages: count this node's optimize messages.
    state = context.state.config_records.get("fault-injection", ConfigRecord({"page": -1}))
    page = int(state["page"]) + 1
    state["page"] = page
    context.state.config_records["fault-injection"] = state

    kind, at = _faults(context).get(int(context.node_config.get("partition-id", -1)), ("", -1))
    if page != at:
        return participant(msg, context)
    if kind == "raise":
        raise RuntimeError(f"injected failure on page {page}")
    reply = participant(msg, context)
    outputs = reply.content["outputs"]
    targets, ids = outputs["targets"].numpy().copy(), outputs["ids"].numpy().copy()
    if kind == "nan":
        targets[0, 0] = np.nan
    elif kind == "dim":
        targets = targets[:, :-1].copy()
    elif kind == "ids":
        ids[-1] = ids.max() + 100_000
    elif kind == "shared":
        reply.content["info"]["pixels-sha256"] = "0" * 64
    content = RecordDict({"outputs": ArrayRecord({"targets": Array(targets), "ids": Array(ids)}),
                          "metrics": reply.content["metrics"], "info": reply.content["info"]})
    return Message(content, reply_to=msg)
