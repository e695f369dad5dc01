"""A CoOpt participant: runs its own prototype over images and returns projected targets.

Message protocol (every reply is stateless, so pages can be retried or reassigned):

``query.describe``
    Reply ``ConfigRecord "describe"``: prototype spec, output dim, native and used image size,
    device, partition id, library versions.
``train.optimize``
    Request ``ConfigRecord "config"`` (``target-dim``, ``projection-seed``, ``batch-size``,
    ``image-size``, ``data``, optional ``encoder``: ``own`` or ``student``) and
    ``ArrayRecord "inputs"`` holding either ``pixels`` (uint8
    ``(m, H, W, 3)``: the shared subset, sent as pixels) or ``ids`` (one page of this
    participant's shard, read from its own copy of the data). Reply ``ArrayRecord "outputs"``
    with ``targets`` (float32 ``(m, n)``) and ``ids`` (int64, echoed; ``-1``s for pixels),
    ``MetricRecord "metrics"`` with the encode time, and ``ConfigRecord "info"`` with the
    prototype spec and, for pixels, the sha256 of the pixels as received (the platform checks
    that every participant encoded the very same shared subset).

    Multi-round: a shared-subset request may carry the platform's refined student
    (``ArrayRecord "student"`` with its weights, ``ConfigRecord "student-config"`` with
    ``config-json``). The node keeps it in its context state for the round's pages, and
    also returns the student's embeddings of S as ``student-targets``. Pages with
    ``encoder = "student"`` are then encoded with the student instead of the own prototype.

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

import functools
import hashlib
import json
import platform

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from coopt_flower.config import split_specs
from coopt_flower.data import open_source
from coopt_flower.prototypes import PRECISIONS, create_prototype
from coopt_flower.refinement import student_from_payload
from coopt_flower.targets import compute_targets

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


def resolve_device(context: Context) -> str:
    """``device`` from the node config, else CUDA when this node has a GPU."""
    if "device" in context.node_config:
        return str(context.node_config["device"])
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=4)
def load_prototype(spec: str, image_size: int, device: str, precision: str = "fp32"):
    """Prototypes are built once per process: a ClientApp object lives for one message only."""
    prototype = create_prototype(spec, image_size=image_size or None, device=device)
    if precision != "fp32":
        if precision not in PRECISIONS or not hasattr(prototype, "precision"):
            raise ValueError(f"node config precision must be one of {', '.join(PRECISIONS)} "
                             f"(mixed precision needs a torch prototype), got {precision!r}")
        prototype.precision = precision
    return prototype


@app.query("describe")
def describe(msg: Message, context: Context) -> Message:
    """Tell the platform what this participant runs."""
    import torch

    image_size = int(msg.content["config"].get("image-size", 0)) if "config" in msg.content else 0
    spec = resolve_prototype_spec(context)
    device = resolve_device(context)
    precision = str(context.node_config.get("precision", "fp32"))
    prototype = load_prototype(spec, image_size, device, precision)
    local = str(context.node_config.get("local-data", ""))
    local_source = open_source(local) if local else None
    info = ConfigRecord(
        {
            "local-data": local,
            "local-samples": len(local_source) if local else 0,
            # Bytes of one uploaded image, so the platform can size upload pages.
            "local-image-bytes": int(local_source.images(np.zeros(1, np.int64)).nbytes) if local else 0,
            "prototype": spec,
            "output-dim": int(prototype.output_dim),
            "native-size": int(prototype.native_size),
            "image-size": int(prototype.image_size),
            "device": device,
            "precision": precision,
            "partition-id": int(context.node_config.get("partition-id", -1)),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
    )
    return Message(RecordDict({"describe": info}), reply_to=msg)


_STUDENTS: dict[tuple[str, str], object] = {}


def load_student(context: Context, device: str):
    """The round's student from this node's state (built once per process and digest)."""
    if "student" not in context.state.array_records:
        raise RuntimeError("asked to encode with the student, but no student was received "
                           "with this round's shared subset")
    config = json.loads(str(context.state.config_records["student-config"]["config-json"]))
    key = (str(config.get("digest")), device)
    if key not in _STUDENTS:
        _STUDENTS.clear()  # one student per round: drop the previous round's
        state = {k: v.numpy() for k, v in context.state.array_records["student"].items()}
        _STUDENTS[key] = student_from_payload(state, config, device=device)
    return _STUDENTS[key]


@app.train("optimize")
def optimize(msg: Message, context: Context) -> Message:
    """Encode the shared subset (pixels) or a page of the shard (ids) into projected targets."""
    config = msg.content["config"]
    inputs = msg.content["inputs"]
    spec = resolve_prototype_spec(context)
    device = resolve_device(context)
    if "student" in msg.content:  # keep the round's student for the pages that follow
        context.state.array_records["student"] = msg.content["student"]
        context.state.config_records["student-config"] = msg.content["student-config"]
    if str(config.get("encoder", "own")) == "student":
        prototype = load_student(context, device)
    else:
        prototype = load_prototype(spec, int(config["image-size"]), device,
                                   str(context.node_config.get("precision", "fp32")))
    kwargs = dict(
        target_dim=int(config["target-dim"]),
        projection_seed=int(config["projection-seed"]),
        batch_size=int(context.node_config.get("batch-size", config["batch-size"])),
    )
    info = ConfigRecord({"prototype": spec, "encoder": prototype.spec})
    arrays = {}
    if "pixels" in inputs:
        pixels = inputs["pixels"].numpy()
        info["pixels-sha256"] = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        targets, stats = compute_targets(prototype, pixels, None, desc="shared subset", **kwargs)
        ids = np.full(len(pixels), -1, dtype=np.int64)
        if "student" in msg.content:
            arrays["student-targets"], _ = compute_targets(
                load_student(context, device), pixels, None, desc="shared subset (student)", **kwargs)
    else:
        ids = inputs["ids"].numpy().astype(np.int64)
        if str(config.get("scope", "platform")) == "local":
            source = open_source(str(context.node_config["local-data"]))
            if bool(config.get("upload-images", False)):
                arrays["pixels"] = source.images(ids)
        else:
            source = open_source(str(context.node_config.get("data", config["data"])))
        targets, stats = compute_targets(prototype, source, ids, desc="shard page", **kwargs)
    arrays.update(targets=targets, ids=ids)
    outputs = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    metrics = MetricRecord({"encode-seconds": stats.seconds, "num-images": stats.num_images})
    return Message(RecordDict({"outputs": outputs, "metrics": metrics, "info": info}), reply_to=msg)
