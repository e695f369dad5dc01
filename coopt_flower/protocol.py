"""The message schema between the data platform and a participant, in one place.

Both sides build and read their messages through this module, so a key is spelled once.
Messages are described as plain Python (dicts of primitives, numpy arrays); the Flower shells
turn them into ``RecordDict`` s and back (:mod:`server_app.records`, the one place that knows
Flower's record types). Nothing here imports Flower.

Message types
-------------
``query.describe`` (:data:`DESCRIBE`)
    Request: record ``config`` (:class:`EncodeConfig`, only ``image-size`` is read).
    Reply: record ``describe`` (:class:`Description`): prototype spec, output dim, native and
    used image size, device, precision, partition id, participant slot, federation size,
    node-local data, library versions. A node hosting several participants
    (:mod:`coopt_flower.hosting`) adds one record ``describe-1``, ``describe-2``, ... per further
    participant (:func:`describe_content`, :func:`read_descriptions`); a platform that knows
    only ``describe`` sees the node's first participant.
``query.encode`` (:data:`ENCODE`)
    Request (:class:`EncodeRequest`): record ``config`` (:class:`EncodeConfig`) and record
    ``inputs`` holding either ``pixels`` (uint8 ``(m, H, W, 3)``: the shared subset, sent as
    pixels so that nodes need only their own data) or ``ids`` (one page of the participant's
    shard, read from its own copy of the data; node-local indices when ``scope = "local"``).
    A shared-subset request may carry the platform's refined student: records ``student``
    (weights) and ``student-config`` (``config-json``).
    Under ``refinement = distill`` it also carries ``inputs`` ``refine-ids`` (a sample of the
    participant's shard) and the ``refine-*`` keys of ``config``: the participant first refines
    its prototype towards the student (:mod:`coopt_flower.distill`) on those images and S, then
    encodes S with it and names the refined head in ``info`` ``refined-digest`` (metrics
    ``refine-seconds``); its pages then say ``encoder = "refined"`` and ``refined = <digest>``.
    Reply (:class:`EncodeReply`): record ``outputs`` with ``targets`` (float32 ``(m, n)``),
    ``ids`` (int64, echoed; ``-1`` s for pixels), optionally ``student-targets`` (the
    student's embeddings of the shared subset) and ``pixels`` (uploaded node-local images);
    record ``metrics`` (``encode-seconds``, ``num-images``); record ``info`` (``prototype``,
    ``encoder``, and for pixels ``pixels-sha256`` of the pixels as received). A page with
    images that cannot be decoded returns targets and ids of the others only, and lists the
    skipped ones in ``info`` ``bad-samples`` (JSON ``[{"id", "name", "reason"}]``); the key
    is absent when every image decoded.

:func:`check_reply_targets` and :func:`check_pixels` are the platform's checks of a reply: anything
that fails them raises :class:`ReplyRefused` with the reason, and nothing of it is merged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np

DESCRIBE = "query.describe"
ENCODE = "query.encode"  # encode the shared subset or a page of ids into targets

# Record names and what kind of Flower record each one is.
CONFIG, INPUTS, STUDENT, STUDENT_CONFIG = "config", "inputs", "student", "student-config"
DESCRIPTION, OUTPUTS, METRICS, INFO = "describe", "outputs", "metrics", "info"
CONFIG_RECORDS = (CONFIG, STUDENT_CONFIG, DESCRIPTION, INFO)
ARRAY_RECORDS = (INPUTS, STUDENT, OUTPUTS)
METRIC_RECORDS = (METRICS,)

BAD_SAMPLES = "bad-samples"  # info key of a page reply: images that could not be decoded

ENCODERS = ("own", "student", "refined")
SCOPES = ("platform", "local")


def round_group(server_round: int) -> str:
    """The group id of every message of round ``server_round`` (how a node knows the round)."""
    return f"round-{int(server_round)}"


def group_round(group_id: str) -> int:
    """The round of a message's group id (:func:`round_group`); 1 for any other group id."""
    number = str(group_id or "").removeprefix("round-")
    return int(number) if str(group_id or "").startswith("round-") and number.isdigit() else 1


class ReplyRefused(RuntimeError):
    """A participant failed or sent a reply the platform will not merge; says why."""


def _dashed(name: str) -> str:
    return name.replace("_", "-")


class _Record:
    """A dataclass that travels as one config record with dashed keys."""

    def to_config(self) -> dict[str, Any]:
        return {_dashed(f.name): getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        """Read the known keys; missing ones keep their defaults, unknown ones are ignored."""
        values = {}
        for f in fields(cls):
            key = _dashed(f.name)
            if key in config:  # every field has a default of its own type
                values[f.name] = type(f.default)(config[key])
        return cls(**values)


@dataclass
class EncodeConfig(_Record):
    """How a participant encodes: record ``config`` of both request types."""

    target_dim: int = 0
    projection_seed: int = 0
    batch_size: int = 128
    image_size: int = 0
    data: str = ""
    encoder: str = "own"          # "own" prototype or the round's "student"
    scope: str = "platform"       # "local": ids index the node's own local data
    upload_images: bool = False   # with scope "local": return the pixels too
    slot: int = -1                # the participant that answers (-1: the node's only one)
    # refinement = distill (coopt_flower.distill): on the shared subset, refine the own
    # prototype towards the student for refine-epochs first (0 = do not refine) ...
    refine_epochs: int = 0
    refine_hidden: int = 0
    refine_lr: float = 0.0
    refine_layers: str = ""
    refine_seed: int = 0
    # ... and on pages with encoder "refined", encode with the head of this digest.
    refined: str = ""

    def to_config(self) -> dict[str, Any]:
        config = super().to_config()
        if self.scope == "platform":  # the keys only local pages need stay off the wire
            del config["scope"], config["upload-images"]
        if self.slot < 0:  # a node that hosts one participant needs no name
            del config["slot"]
        if not self.refine_epochs:  # keys of distill only travel when it is asked for
            for key in ("refine-epochs", "refine-hidden", "refine-lr", "refine-layers", "refine-seed"):
                del config[key]
        if not self.refined:
            del config["refined"]
        return config

    def refine_budget(self):
        """The :class:`~coopt_flower.distill.RefineBudget` this request asks for."""
        from coopt_flower.distill import RefineBudget

        return RefineBudget(epochs=self.refine_epochs, hidden=self.refine_hidden, lr=self.refine_lr,
                            layers=self.refine_layers)


@dataclass
class Description(_Record):
    """What a participant runs: the reply to ``query.describe``."""

    prototype: str = "?"
    output_dim: int = 0
    native_size: int = 0
    image_size: int = 0
    device: str = "?"
    precision: str = "fp32"
    partition_id: int = -1
    slot: int = -1                # participant slot on its node (-1: the node's own prototype)
    num_partitions: int = 0       # simulated federation size (0: unknown, as in deployment)
    local_data: str = ""
    local_samples: int = 0
    local_image_bytes: int = 0    # bytes of one uploaded image, to size upload pages
    share_local_images: bool = True  # the node lets its local images be uploaded (node config)
    torch: str = ""
    python: str = ""


def describe_record_name(index: int) -> str:
    """Record of a node's ``index``-th participant in a describe reply."""
    return DESCRIPTION if index == 0 else f"{DESCRIPTION}-{index}"


def describe_content(descriptions: list[Description]) -> dict[str, dict]:
    """A describe reply for every participant a node hosts (the first keeps record ``describe``)."""
    return {describe_record_name(i): d.to_config() for i, d in enumerate(descriptions)}


def read_descriptions(content: Mapping[str, Mapping]) -> list[Description]:
    """Every participant of a describe reply, in the node's order; raises ``KeyError`` without any."""
    found = [Description.from_config(content[DESCRIPTION])]
    while (name := describe_record_name(len(found))) in content:
        found.append(Description.from_config(content[name]))
    return found


@dataclass
class EncodeRequest:
    """A ``query.encode`` request: the shared subset as pixels, or a page of ids."""

    config: EncodeConfig
    pixels: np.ndarray | None = None
    ids: np.ndarray | None = None
    student: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None  # (weights, config)
    refine_ids: np.ndarray | None = None  # distill: the shard sample to refine on, with S's pixels

    def content(self) -> dict[str, dict]:
        inputs = {"pixels": np.ascontiguousarray(self.pixels)} if self.pixels is not None \
            else {"ids": np.asarray(self.ids).astype(np.int64)}
        if self.refine_ids is not None:
            inputs["refine-ids"] = np.asarray(self.refine_ids).astype(np.int64)
        records: dict[str, dict] = {CONFIG: self.config.to_config(), INPUTS: inputs}
        if self.student is not None:
            weights, config = self.student
            records[STUDENT] = {k: np.ascontiguousarray(v) for k, v in weights.items()}
            records[STUDENT_CONFIG] = {"config-json": json.dumps(config)}
        return records

    @classmethod
    def from_content(cls, content: Mapping[str, Mapping]) -> EncodeRequest:
        inputs = content[INPUTS]
        student = None
        if STUDENT in content:
            student = (dict(content[STUDENT]), json.loads(str(content[STUDENT_CONFIG]["config-json"])))
        return cls(EncodeConfig.from_config(content[CONFIG]),
                   pixels=inputs["pixels"] if "pixels" in inputs else None,
                   ids=inputs["ids"].astype(np.int64) if "ids" in inputs else None,
                   student=student,
                   refine_ids=inputs["refine-ids"].astype(np.int64) if "refine-ids" in inputs else None)


@dataclass
class EncodeReply:
    """A ``query.encode`` reply."""

    targets: np.ndarray
    ids: np.ndarray
    encode_seconds: float = 0.0
    num_images: int = 0
    prototype: str = ""
    encoder: str = ""
    pixels_sha256: str = ""
    student_digest: str = ""  # fingerprint of the student weights the node received
    refined_digest: str = ""  # distill: the refined head it encoded with (its prototype version)
    refine_seconds: float = 0.0
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # student-targets, pixels
    bad_samples: list[dict[str, Any]] = field(default_factory=list)  # {"id", "name", "reason"}

    def content(self) -> dict[str, dict]:
        info = {"prototype": self.prototype, "encoder": self.encoder}
        if self.pixels_sha256:
            info["pixels-sha256"] = self.pixels_sha256
        if self.student_digest:
            info["student-digest"] = self.student_digest
        if self.bad_samples:
            info[BAD_SAMPLES] = json.dumps(self.bad_samples)
        metrics = {"encode-seconds": float(self.encode_seconds), "num-images": int(self.num_images)}
        if self.refined_digest:
            info["refined-digest"] = self.refined_digest
            metrics["refine-seconds"] = float(self.refine_seconds)
        return {OUTPUTS: {**self.extra, "targets": self.targets, "ids": self.ids},
                METRICS: metrics, INFO: info}

    @classmethod
    def from_content(cls, content: Mapping[str, Mapping]) -> EncodeReply:
        """Read a reply; a missing part raises :class:`ReplyRefused`."""
        try:
            outputs, metrics = content[OUTPUTS], content[METRICS]
            info = content[INFO] if INFO in content else {}
            return cls(targets=outputs["targets"], ids=outputs["ids"],
                       encode_seconds=float(metrics["encode-seconds"]),
                       num_images=int(metrics["num-images"]),
                       prototype=str(info.get("prototype", "")), encoder=str(info.get("encoder", "")),
                       pixels_sha256=str(info.get("pixels-sha256", "")),
                       student_digest=str(info.get("student-digest", "")),
                       refined_digest=str(info.get("refined-digest", "")),
                       refine_seconds=float(metrics.get("refine-seconds", 0.0)),
                       extra={k: v for k, v in outputs.items() if k not in ("targets", "ids")},
                       bad_samples=json.loads(str(info[BAD_SAMPLES])) if BAD_SAMPLES in info else [])
        except (KeyError, TypeError, ValueError) as error:
            raise ReplyRefused(f"reply lacks targets, ids or metrics ({error!r})") from None


def pixels_digest(pixels: np.ndarray) -> str:
    """sha256 of a pixel array as sent, so both sides can prove they saw the same images."""
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


# --------------------------------------------------------------------------- checks


def check_reply_targets(targets: Any, returned_ids: Any, ids: np.ndarray, target_dim: int,
                        what: str = "targets") -> np.ndarray:
    """A reply's targets as float32, after the checks that keep garbage out of the dataset.

    Raises
    ------
    ReplyRefused
        With the reason: wrong shape or dtype, NaN/Inf, or ids other than those asked for.
    """
    if targets is None:
        raise ReplyRefused(f"reply lacks {what}")
    targets, returned = np.asarray(targets), np.asarray(returned_ids)
    expected = (len(ids), target_dim)
    if targets.shape != expected:
        raise ReplyRefused(f"targets of shape {targets.shape}, expected {expected}")
    if targets.dtype.kind != "f":
        raise ReplyRefused(f"targets of dtype {targets.dtype}, expected floating point")
    if not np.isfinite(targets).all():
        raise ReplyRefused(f"{int((~np.isfinite(targets)).sum())} NaN or Inf values in targets")
    if returned.shape != ids.shape or not np.array_equal(returned, ids):
        extra = np.setdiff1d(returned, ids)
        raise ReplyRefused(
            "returned ids differ from the ids asked for "
            f"({len(extra)} outside the page, {len(returned) - len(np.unique(returned))} "
            "duplicated, or out of order)")
    return targets.astype(np.float32, copy=False)


def check_bad_samples(bad_samples: Any, page: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The ids of a page that a reply encoded, and the ones it could not decode.

    Returns ``(good ids, bad ids, bad entries)``; the entries' names and reasons are made
    one-line strings.

    Raises
    ------
    ReplyRefused
        When the reply's bad samples are malformed, outside the page or duplicated.
    """
    from coopt_flower.errors import one_line

    page = np.asarray(page, dtype=np.int64)
    if not bad_samples:
        return page, np.empty(0, np.int64), []
    try:
        entries = [{"id": int(e["id"]), "name": one_line(e.get("name", ""), 200, table=True),
                    "reason": one_line(e.get("reason", ""), table=True)} for e in bad_samples]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ReplyRefused("malformed bad-samples in the reply (expected [{id, name, reason}])") from None
    bad = np.array([e["id"] for e in entries], dtype=np.int64)
    if len(np.unique(bad)) != len(bad) or not np.isin(bad, page).all():
        raise ReplyRefused("bad-samples lists ids outside the page or twice")
    return page[~np.isin(page, bad)], bad, entries


def reply_nbytes(records: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes of a reply's arrays as received, read from their headers: no array is decoded."""
    total = 0
    for name in ARRAY_RECORDS:
        for array in (records[name].values() if name in records else ()):
            data = getattr(array, "data", None)
            total += len(data) if isinstance(data, (bytes, bytearray, memoryview)) \
                else int(np.asarray(array).nbytes)
    return total


def reply_limit(rows: int, target_dim: int, extra_bytes_per_row: int = 0, *, student: bool = False) -> int:
    """The most bytes a reply for ``rows`` samples may carry: targets (up to float64, twice
    with the student's), ids, uploaded pixels, and 64 KiB for array headers."""
    per_row = target_dim * 8 * (2 if student else 1) + 8 + extra_bytes_per_row
    return rows * per_row + (64 << 10)


def check_reply_size(records: Mapping[str, Mapping[str, Any]], limit_bytes: int) -> None:
    """Refuse a reply whose arrays exceed what its page can hold, before decoding it."""
    size = reply_nbytes(records)
    if size > limit_bytes:
        raise ReplyRefused(f"reply of {size / 2**20:.1f} MiB is larger than its page allows "
                           f"({limit_bytes / 2**20:.1f} MiB); refused without reading it")


def check_pixels(pixels: Any, count: int, earlier_shape: tuple[int, ...] | None) -> np.ndarray:
    """Uploaded node-local images of a page: uint8 ``(count, H, W, 3)``, of the same size as
    the participant's earlier pages."""
    if pixels is None:
        raise ReplyRefused("upload-images was asked for, but the reply has no pixels")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[0] != count or pixels.shape[-1] != 3:
        raise ReplyRefused(f"uploaded pixels of {pixels.dtype} {pixels.shape}, expected uint8 "
                           f"({count}, H, W, 3)")
    if earlier_shape is not None and tuple(earlier_shape) != pixels.shape[1:]:
        raise ReplyRefused(f"uploaded images of shape {pixels.shape[1:]}, earlier pages had "
                           f"{tuple(earlier_shape)}")
    return pixels
