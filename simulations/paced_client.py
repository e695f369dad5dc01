"""A ClientApp whose nodes take a set time per shard sample, for work-stealing tests.

It wraps the real participant (``client_app.client_app.app``). Every ``query.encode`` page
of ids holds its node's lock (a simulated node encodes one page at a time, as a SuperNode
does, however many Ray workers the simulation has) and takes ``seconds-per-sample`` per sample,
times four on the partitions listed in ``slow-partitions``. Each page's start and end are
appended to ``<pace-dir>/pages.jsonl`` so the test can compute the ideal split.

:func:`simulations.steal_bench.paced_app` copies this file into a temporary app directory
whose pyproject names it as the ClientApp; the production app never loads it.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client_app.client_app import app as participant

app = ClientApp()
SLOWDOWN = 4.0


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    return participant(msg, context)


@app.query("encode")
def encode(msg: Message, context: Context) -> Message:
    cfg = context.run_config
    partition = int(context.node_config.get("partition-id", -1))
    is_page = "ids" in msg.content.array_records.get("inputs", {})
    if not is_page:  # the shared subset: no pacing
        return participant(msg, context)
    slow = str(partition) in str(cfg.get("slow-partitions", "")).split(",")
    pace_dir = Path(str(cfg["pace-dir"]))
    with open(pace_dir / f"node-{partition}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one page at a time per simulated node
        started = time.time()
        reply = participant(msg, context)
        n = len(msg.content.array_records["inputs"]["ids"].numpy())
        pace = float(cfg["seconds-per-sample"]) * n * (SLOWDOWN if slow else 1.0)
        time.sleep(max(0.0, started + pace - time.time()))
        ended = time.time()
    with open(pace_dir / "pages.jsonl", "a") as log:
        log.write(json.dumps({"partition": partition, "samples": n, "start": started, "end": ended}) + "\n")
    return reply
