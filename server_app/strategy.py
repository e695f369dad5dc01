"""CoOpt as a Flower strategy: the data platform's side of one optimization round.

It follows Flower's strategy idiom (``flwr/serverapp/strategy/strategy.py``): ``configure_*``
hooks build the messages of a step, ``aggregate_*`` hooks turn the replies into the platform's
state, and :meth:`CoOptStrategy.start` runs the steps and returns a :class:`CoOptResult`. The
math lives in :mod:`coopt_flower` and knows nothing of Flower.

One round:

1. ``describe``: every node says which prototype it runs and its output dimension.
2. ``shared``: the platform draws the shared subset S and sends it as pixels to everyone;
   replies are the projected embeddings of S.
3. ``align``: uniform value per prototype, the most uniform one becomes the reference, a ridge
   map per participant (:func:`coopt_flower.platform.plan_alignment`).
4. ``optimize``: shards are requested page by page (ids only, the nodes read their own copy of
   the data); every page is aligned on arrival and written straight into a memory-mapped file,
   so the platform's memory does not grow with the dataset.
5. ``merge``: checksums, manifest and report, then an atomic rename publishes the dataset.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource, open_source, pages, partition_iid, select_samples, select_shared_subset
from coopt_flower.dataset_format import DatasetWriter
from coopt_flower.platform import AlignmentPlan, plan_alignment, render_report

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
SHARED_EMBEDDINGS = "shared_embeddings.npy"


class ParticipantError(RuntimeError):
    """A participant failed or sent a reply the platform cannot use."""


@dataclass
class Participant:
    """What the platform knows about one node in this round."""

    name: str
    node_id: int
    prototype: str
    output_dim: int
    image_size: int
    device: str
    partition_id: int
    shard: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    encode_seconds: float = 0.0
    encoded_images: int = 0
    shared_sha256: str = ""


@dataclass
class CoOptResult:
    """What :meth:`CoOptStrategy.start` returns."""

    dataset_path: Path
    report_path: Path
    summary: dict[str, Any]
    plan: AlignmentPlan


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
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def summary(self) -> None:
        """Log the strategy's settings, as Flower strategies do before starting."""
        s = self.settings
        log(INFO, "CoOpt strategy: data=%s (%d available), num-samples=%s, shared-size=%d, "
            "target-dim=%d, seed=%d, page=%d samples, output=%s", s.data, len(self.source),
            s.num_samples or "all", s.shared_size, s.target_dim, s.seed, s.rows_per_page(),
            s.output_dir)

    def _config_record(self) -> ConfigRecord:
        s = self.settings
        return ConfigRecord({
            "target-dim": s.target_dim, "projection-seed": s.seed, "batch-size": s.batch_size,
            "image-size": s.image_size, "data": s.data,
        })

    def _exchange(self, grid: Grid, messages: list[Message], step: str) -> list[Message]:
        """Send messages, wait for all replies, and raise on a missing or failed one."""
        replies = list(grid.send_and_receive(messages, timeout=self.settings.reply_timeout_s))
        by_node = {r.metadata.src_node_id: r for r in replies}
        for msg in messages:
            reply = by_node.get(msg.metadata.dst_node_id)
            if reply is None:
                raise ParticipantError(f"{step}: node {msg.metadata.dst_node_id} did not reply "
                                       f"within {self.settings.reply_timeout_s:.0f} s")
            if reply.has_error():
                raise ParticipantError(f"{step}: node {msg.metadata.dst_node_id} failed: "
                                       f"{reply.error.reason}")
        return [by_node[m.metadata.dst_node_id] for m in messages]

    def _timed(self, step: str, started: float) -> None:
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    def wait_for_nodes(self, grid: Grid) -> list[int]:
        """Node ids, once the expected number of participants has connected."""
        expected = self.settings.expected_participants
        deadline = time.monotonic() + self.settings.node_wait_s
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= expected:
                return node_ids
            if time.monotonic() > deadline:
                raise ParticipantError(
                    f"only {len(node_ids)} of {expected} participants connected within "
                    f"{self.settings.node_wait_s:.0f} s; start more SuperNodes or lower "
                    "min-participants")
            time.sleep(1.0)

    # ------------------------------------------------------------------ describe
    def configure_describe(self, server_round: int, grid: Grid, node_ids: Iterable[int]) -> list[Message]:
        content = RecordDict({"config": self._config_record()})
        return [Message(content, dst_node_id=nid, message_type="query.describe",
                        group_id=f"round-{server_round}") for nid in node_ids]

    def aggregate_describe(self, server_round: int, replies: list[Message]) -> list[Participant]:
        participants = []
        for reply in replies:
            info = reply.content["describe"]
            participants.append(Participant(
                name="", node_id=reply.metadata.src_node_id, prototype=str(info["prototype"]),
                output_dim=int(info["output-dim"]), image_size=int(info["image-size"]),
                device=str(info["device"]), partition_id=int(info["partition-id"]),
            ))
        # Partition ids give a stable order in simulation; node ids otherwise.
        participants.sort(key=lambda p: (p.partition_id < 0, p.partition_id, p.node_id))
        for index, p in enumerate(participants):
            p.name = f"p{index}"
        return participants

    # ------------------------------------------------------------------ shared subset
    def configure_shared(self, server_round: int, participants: list[Participant],
                         shared_pixels: np.ndarray) -> list[Message]:
        content = RecordDict({
            "config": self._config_record(),
            "inputs": ArrayRecord({"pixels": Array(np.ascontiguousarray(shared_pixels))}),
        })
        return [Message(content, dst_node_id=p.node_id, message_type="train.optimize",
                        group_id=f"round-{server_round}") for p in participants]

    def aggregate_shared(self, server_round: int, participants: list[Participant],
                         replies: list[Message], shared_pixels: np.ndarray) -> dict[str, np.ndarray]:
        sent = hashlib.sha256(np.ascontiguousarray(shared_pixels).tobytes()).hexdigest()
        embeddings = {}
        for p, reply in zip(participants, replies):
            p.shared_sha256 = str(reply.content["info"]["pixels-sha256"])
            if p.shared_sha256 != sent:
                raise ParticipantError(f"{p.name} encoded other shared images than were sent "
                                       "(pixel checksum mismatch)")
            embeddings[p.name] = self._checked_targets(p, reply, expected_rows=len(shared_pixels))
        return embeddings

    # ------------------------------------------------------------------ shard pages
    def configure_optimize(self, server_round: int, requests: dict[str, np.ndarray],
                           participants: list[Participant]) -> list[Message]:
        by_name = {p.name: p for p in participants}
        messages = []
        for name, ids in requests.items():
            content = RecordDict({
                "config": self._config_record(),
                "inputs": ArrayRecord({"ids": Array(ids.astype(np.int64))}),
            })
            messages.append(Message(content, dst_node_id=by_name[name].node_id,
                                    message_type="train.optimize", group_id=f"round-{server_round}"))
        return messages

    def aggregate_optimize(self, server_round: int, requests: dict[str, np.ndarray],
                           participants: list[Participant], replies: list[Message],
                           plan: AlignmentPlan, writer: DatasetWriter) -> None:
        by_name = {p.name: p for p in participants}
        owner_index = {p.name: i for i, p in enumerate(participants)}
        for (name, ids), reply in zip(requests.items(), replies):
            p = by_name[name]
            targets = self._checked_targets(p, reply, expected_rows=len(ids))
            returned = reply.content["outputs"]["ids"].numpy()
            if not np.array_equal(returned, ids):
                raise ParticipantError(f"{p.name} returned targets for other sample ids than asked")
            writer.write(ids, plan.maps[name].apply(targets), owner=owner_index[name])

    def _checked_targets(self, p: Participant, reply: Message, expected_rows: int) -> np.ndarray:
        """The reply's targets, after the checks that keep garbage out of the dataset."""
        targets = reply.content["outputs"]["targets"].numpy()
        expected = (expected_rows, self.settings.target_dim)
        if targets.shape != expected:
            raise ParticipantError(f"{p.name} ({p.prototype}) sent targets of shape "
                                   f"{targets.shape}, expected {expected}")
        if not np.isfinite(targets).all():
            raise ParticipantError(f"{p.name} ({p.prototype}) sent NaN or Inf targets")
        metrics = reply.content["metrics"]
        p.encode_seconds += float(metrics["encode-seconds"])
        p.encoded_images += int(metrics["num-images"])
        return targets.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ the round
    def start(self, grid: Grid, server_round: int = 1) -> CoOptResult:
        """Run one CoOpt round and publish its dataset; returns a :class:`CoOptResult`."""
        s = self.settings
        self.timings = {}
        self.summary()
        round_dir = Path(s.output_dir) / f"round-{server_round:03d}"
        if round_dir.exists() and not s.overwrite:
            raise FileExistsError(f"{round_dir} already exists: choose a new output-dir or set "
                                  "overwrite=true")
        t_round = time.perf_counter()

        t = time.perf_counter()
        node_ids = self.wait_for_nodes(grid)
        replies = self._exchange(grid, self.configure_describe(server_round, grid, node_ids), "describe")
        participants = self.aggregate_describe(server_round, replies)
        self._timed("describe", t)
        for p in participants:
            log(INFO, "  %s: node %d runs %s (%d-d, %d px, %s)", p.name, p.node_id, p.prototype,
                p.output_dim, p.image_size, p.device)

        sample_ids = select_samples(len(self.source), s.num_samples, s.seed)
        shards = partition_iid(sample_ids, len(participants), s.seed)
        for p, shard in zip(participants, shards):
            p.shard = shard
        shared_ids = select_shared_subset(sample_ids, s.shared_size, s.seed)

        t = time.perf_counter()
        log(INFO, "[shared] sending %d shared images to %d participants", len(shared_ids), len(participants))
        shared_pixels = self.source.images(shared_ids)
        replies = self._exchange(
            grid, self.configure_shared(server_round, participants, shared_pixels), "shared")
        shared = self.aggregate_shared(server_round, participants, replies, shared_pixels)
        self._timed("shared subset encode", t)

        t = time.perf_counter()
        plan = plan_alignment(shared, seed=s.seed)
        self._timed("uniform value + alignment", t)
        for p in participants:
            m = plan.maps[p.name]
            log(INFO, "  %s: uniform value %.4f, residual %.3f (held-out %.3f)%s", p.name,
                plan.uniform_values[p.name], m.fit_residual, m.holdout_residual,
                "  <- reference" if p.name == plan.reference else "")

        t = time.perf_counter()
        page_size = s.rows_per_page()
        shard_pages = {p.name: pages(p.shard, page_size) for p in participants}
        num_pages = max(len(v) for v in shard_pages.values())
        done = 0
        with DatasetWriter(round_dir, sample_ids, s.target_dim, s.target_dtype,
                           overwrite=s.overwrite) as writer:
            for page in range(num_pages):
                requests = {name: plist[page] for name, plist in shard_pages.items() if page < len(plist)}
                replies = self._exchange(
                    grid, self.configure_optimize(server_round, requests, participants),
                    f"optimize page {page + 1}")
                self.aggregate_optimize(server_round, requests, participants, replies, plan, writer)
                done += sum(len(v) for v in requests.values())
                log(INFO, "[optimize] page %d/%d: %d/%d samples merged", page + 1, num_pages,
                    done, len(sample_ids))
            self._timed("shard encode + align + write", t)

            t = time.perf_counter()
            summary = self._summary(server_round, round_dir, participants, plan, sample_ids, shared_ids)
            self.timings["total"] = time.perf_counter() - t_round
            summary["timings"] = dict(self.timings)
            manifest = {k: v for k, v in summary.items() if k != "dataset_path"}
            manifest["shared_ids"] = shared_ids.tolist()
            report = render_report(summary)
            writer.commit(
                manifest,
                extra_files={REPORT_MD: report, REPORT_JSON: json.dumps(summary, indent=2)},
                extra_arrays={SHARED_EMBEDDINGS: np.stack([shared[p.name] for p in participants])},
            )
        log(INFO, "CoOpt round %d done: %s", server_round, round_dir)
        for line in report.splitlines():
            log(INFO, "  %s", line)
        return CoOptResult(round_dir, round_dir / REPORT_MD, summary, plan)

    def _summary(self, server_round, round_dir, participants, plan, sample_ids, shared_ids) -> dict:
        s = self.settings
        reference = next(p for p in participants if p.name == plan.reference)
        return {
            "round": server_round,
            "source": self.source.spec,
            "num_samples": int(len(sample_ids)),
            "target_dim": s.target_dim,
            "target_dtype": s.target_dtype,
            "shared_size": int(len(shared_ids)),
            "seed": s.seed,
            "reference": plan.reference,
            "reference_prototype": reference.prototype,
            "dataset_path": str(round_dir),
            "settings": s.as_dict(),
            "participants": [
                {
                    "name": p.name, "node_id": p.node_id, "prototype": p.prototype,
                    "output_dim": p.output_dim, "image_size": p.image_size, "device": p.device,
                    "num_samples": int(len(p.shard)),
                    "uniform_value": plan.uniform_values[p.name],
                    "fit_residual": plan.maps[p.name].fit_residual,
                    "holdout_residual": plan.maps[p.name].holdout_residual,
                    "alpha": plan.maps[p.name].alpha,
                    "images_per_second": p.encoded_images / p.encode_seconds if p.encode_seconds else 0.0,
                    "shared_pixels_sha256": p.shared_sha256,
                }
                for p in participants
            ],
        }
