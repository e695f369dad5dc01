"""CoOpt as a Flower strategy: the data platform's side of one optimization round.

It follows Flower's strategy idiom (``flwr/serverapp/strategy/strategy.py``): ``configure_*``
hooks build the messages of a step, ``aggregate_*`` hooks turn the replies into the platform's
state, and :meth:`CoOptStrategy.start` runs the steps and returns a :class:`CoOptResult`. The
math lives in :mod:`coopt_flower` and knows nothing of Flower.

One round:

1. ``describe``: every node says which prototype it runs and its output dimension.
2. ``shared``: the platform draws the shared subset S and sends it as pixels to everyone;
   replies are the projected embeddings of S (and a checksum of the pixels received).
3. ``align``: uniform value per prototype, the most uniform one becomes the reference, a ridge
   map per participant (:func:`coopt_flower.platform.plan_alignment`).
4. ``optimize``: the samples are split among the participants that got this far and requested
   page by page (ids only: nodes read their own copy of the data); every page is checked,
   aligned and written straight into a memory-mapped file, so the platform's memory does not
   grow with the dataset.
5. ``merge``: checksums, manifest and report, then an atomic rename publishes the dataset.

Faults: a participant that fails, does not reply in time, or sends a reply that does not pass
the checks (shape, dtype, NaN/Inf, ids other than asked, wrong shared pixels) is refused with
the reason in the report and takes no further part in the round; nothing of that reply is
merged. Its unfinished pages go to the others (``on-failure = "reassign"``) or are listed as
missing (``"drop"``). Fewer than ``min-participants`` left fails the round, and no dataset is
published: the previous version stays as it was.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from coopt_flower import rounds
from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource, open_source, partition_iid, select_samples, select_shared_subset
from coopt_flower.dataset_format import DatasetWriter
from coopt_flower.platform import AlignmentPlan, plan_alignment, render_report
from coopt_flower.refinement import choose_encoders
from coopt_flower.uniformity import uniform_value
from coopt_flower.scheduling import Failure, PageScheduler, RoundFailed

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
SHARED_EMBEDDINGS = "shared_embeddings.npy"


class ReplyRefused(RuntimeError):
    """A participant failed or sent a reply the platform will not merge; says why."""


@dataclass
class Participant:
    """What the platform knows about one node in this round."""

    name: str
    node_id: int
    prototype: str = "?"
    output_dim: int = 0
    image_size: int = 0
    device: str = "?"
    partition_id: int = -1
    num_samples: int = 0
    encode_seconds: float = 0.0
    encoded_images: int = 0
    shared_sha256: str = ""
    encoder: str = "own"
    local_data: str = ""     # node-local images only this participant holds ("" = none)
    local_count: int = 0
    local_base: int = -1     # global sample id of its first local image
    local_image_bytes: int = 0

    def is_local(self, ids: np.ndarray) -> bool:
        """Whether a page of global ids is this participant's node-local data."""
        return self.local_count > 0 and len(ids) > 0 and int(ids[0]) >= self.local_base


@dataclass
class CoOptResult:
    """What :meth:`CoOptStrategy.start` returns."""

    dataset_path: Path
    report_path: Path
    summary: dict[str, Any]
    plan: AlignmentPlan
    failures: list[Failure] = field(default_factory=list)


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
        self.failures: list[Failure] = []

    # ------------------------------------------------------------------ helpers
    def summary(self) -> None:
        """Log the strategy's settings, as Flower strategies do before starting."""
        s = self.settings
        log(INFO, "CoOpt strategy: data=%s (%d available), num-samples=%s, shared-size=%d, "
            "target-dim=%d, seed=%d, page=%d samples, on-failure=%s, min-participants=%d, "
            "output=%s", s.data, len(self.source), s.num_samples or "all", s.shared_size,
            s.target_dim, s.seed, s.rows_per_page(), s.on_failure, s.min_participants,
            s.output_dir)

    def _config_record(self, encoder: str = "own") -> ConfigRecord:
        s = self.settings
        return ConfigRecord({
            "target-dim": s.target_dim, "projection-seed": s.seed, "batch-size": s.batch_size,
            "image-size": s.image_size, "data": s.data, "encoder": encoder,
        })

    def _message(self, server_round: int, node_id: int, message_type: str, records: dict) -> Message:
        return Message(RecordDict(records), dst_node_id=node_id, message_type=message_type,
                       group_id=f"round-{server_round}")

    def _exchange(self, grid: Grid, messages: dict[str, Message]) -> dict[str, Message | str]:
        """Send one message per participant; returns its reply, or why there is none."""
        replies = grid.send_and_receive(list(messages.values()), timeout=self.settings.reply_timeout_s)
        by_node = {r.metadata.src_node_id: r for r in replies}
        out: dict[str, Message | str] = {}
        for name, msg in messages.items():
            reply = by_node.get(msg.metadata.dst_node_id)
            if reply is None:
                out[name] = f"no reply within {self.settings.reply_timeout_s:g} s"
            elif reply.has_error():
                out[name] = f"failed: {reply.error.reason}"
            else:
                out[name] = reply
        return out

    def _refuse(self, name: str, step: str, reason: str) -> None:
        log(WARNING, "  %s refused at %s: %s", name, step, reason)
        self.failures.append(Failure(name, step, reason))

    def _timed(self, step: str, started: float) -> None:
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    def _check_survivors(self, participants: list[Participant], step: str) -> None:
        if len(participants) < self.settings.min_participants:
            raise RoundFailed(f"after {step} only {len(participants)} participant(s) are left, fewer "
                              f"than min-participants={self.settings.min_participants}")

    def wait_for_nodes(self, grid: Grid) -> list[int]:
        """Node ids, once the expected number of participants has connected.

        Starts with fewer (but at least ``min-participants``) when ``node-wait-s`` runs out.
        """
        s = self.settings
        expected = s.expected_participants
        deadline = time.monotonic() + s.node_wait_s
        while True:
            node_ids = sorted(grid.get_node_ids())
            if len(node_ids) >= expected:
                return node_ids
            if time.monotonic() > deadline:
                if len(node_ids) >= s.min_participants:
                    log(WARNING, "only %d of %d participants connected within %g s; starting "
                        "with them", len(node_ids), expected, s.node_wait_s)
                    return node_ids
                raise RoundFailed(
                    f"only {len(node_ids)} of {expected} participants connected within "
                    f"{s.node_wait_s:g} s; start more SuperNodes or lower min-participants")
            time.sleep(1.0)

    # ------------------------------------------------------------------ describe
    def configure_describe(self, server_round: int, node_ids: Iterable[int]) -> dict[str, Message]:
        return {f"node-{nid}": self._message(server_round, nid, "query.describe",
                                             {"config": self._config_record()})
                for nid in node_ids}

    def aggregate_describe(self, server_round: int, replies: dict[str, Message | str]) -> list[Participant]:
        participants = []
        for key, reply in replies.items():
            if isinstance(reply, str):
                self._refuse(key, "describe", reply)
                continue
            try:
                info = reply.content["describe"]
                participants.append(Participant(
                    name="", node_id=reply.metadata.src_node_id, prototype=str(info["prototype"]),
                    output_dim=int(info["output-dim"]), image_size=int(info["image-size"]),
                    device=str(info["device"]), partition_id=int(info["partition-id"]),
                    local_data=str(info.get("local-data", "")),
                    local_count=int(info.get("local-samples", 0)),
                    local_image_bytes=int(info.get("local-image-bytes", 0)),
                ))
            except (KeyError, TypeError, ValueError) as error:
                self._refuse(key, "describe", f"malformed describe reply ({error!r})")
        # Partition ids give a stable order in simulation (and in deployment when nodes set
        # one); node ids otherwise.
        participants.sort(key=lambda p: (p.partition_id < 0, p.partition_id, p.node_id))
        for index, p in enumerate(participants):
            p.name = f"p{index}"
        return participants

    # ------------------------------------------------------------------ shared subset
    def configure_shared(self, server_round: int, participants: list[Participant],
                         shared_pixels: np.ndarray, student: tuple[dict, dict] | None = None
                         ) -> dict[str, Message]:
        records: dict[str, Any] = {
            "config": self._config_record(),
            "inputs": ArrayRecord({"pixels": Array(np.ascontiguousarray(shared_pixels))}),
        }
        if student is not None:  # multi-round: the refined student rides with S
            weights, config = student
            records["student"] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()})
            records["student-config"] = ConfigRecord({"config-json": json.dumps(config)})
        return {p.name: self._message(server_round, p.node_id, "train.optimize", records)
                for p in participants}

    def aggregate_shared(self, server_round: int, participants: list[Participant],
                         replies: dict[str, Message | str], shared_pixels: np.ndarray,
                         with_student: bool = False,
                         ) -> tuple[list[Participant], dict[str, np.ndarray], np.ndarray | None]:
        """Checked shared-subset embeddings of the participants whose replies pass.

        Returns the survivors, their own embeddings, and the student's embeddings of S (as
        computed by the first survivor; every other one must agree) when a student was sent.
        """
        sent = hashlib.sha256(np.ascontiguousarray(shared_pixels).tobytes()).hexdigest()
        survivors, embeddings, student_emb = [], {}, None
        no_ids = np.full(len(shared_pixels), -1)
        for p in participants:
            try:
                reply = replies[p.name]
                if isinstance(reply, str):
                    raise ReplyRefused(reply)
                received = str(reply.content["info"]["pixels-sha256"]) if "info" in reply.content else ""
                if received != sent:
                    raise ReplyRefused("encoded other shared images than were sent (pixel checksum mismatch)")
                own = self.checked_targets(p, reply, no_ids)
                if with_student:
                    theirs = self.checked_targets(p, reply, no_ids, key="student-targets", count=False)
                    if student_emb is not None and not np.allclose(theirs, student_emb, rtol=1e-3, atol=1e-3):
                        raise ReplyRefused("its student embeddings of S disagree with the other participants'")
                    student_emb = theirs if student_emb is None else student_emb
                embeddings[p.name] = own
                p.shared_sha256 = received
                survivors.append(p)
            except ReplyRefused as error:
                self._refuse(p.name, "shared subset", str(error))
        return survivors, embeddings, student_emb

    # ------------------------------------------------------------------ shard pages
    def configure_optimize(self, server_round: int, wave: dict[str, np.ndarray],
                           participants: list[Participant]) -> dict[str, Message]:
        by_name = {p.name: p for p in participants}
        messages = {}
        for name, ids in wave.items():
            p = by_name[name]
            config = self._config_record(p.encoder)
            if p.is_local(ids):  # node-local data: the node's own indices
                ids = ids - p.local_base
                config["scope"] = "local"
                config["upload-images"] = self.settings.upload_local_images
            messages[name] = self._message(server_round, p.node_id, "train.optimize", {
                "config": config, "inputs": ArrayRecord({"ids": Array(ids.astype(np.int64))})})
        return messages

    def aggregate_optimize(self, server_round: int, wave: dict[str, np.ndarray],
                           participants: list[Participant], replies: dict[str, Message | str],
                           plan: AlignmentPlan, writer: DatasetWriter,
                           scheduler: PageScheduler) -> int:
        """Merge the pages that pass the checks; fail the rest. Returns samples merged."""
        by_name = {p.name: p for p in participants}
        owner_index = {p.name: i for i, p in enumerate(participants)}
        merged = 0
        for name, ids in wave.items():
            p = by_name[name]
            local = p.is_local(ids)
            try:
                reply = replies[name]
                if isinstance(reply, str):
                    raise ReplyRefused(reply)
                targets = self.checked_targets(p, reply, ids - p.local_base if local else ids)
                pixels = None
                if local and self.settings.upload_local_images:
                    pixels = self.checked_pixels(reply, len(ids), writer.arrays.get(self.local_images_file(p)))
            except ReplyRefused as error:
                self._refuse(name, "optimize", str(error))
                action, affected = scheduler.fail(name, ids)  # raises RoundFailed below the minimum
                self.failures[-1].samples_affected, self.failures[-1].action = affected, action
                log(WARNING, "  %s: %d unfinished samples %s", name, affected, action)
                continue
            writer.write(ids, plan.maps[name].apply(targets), owner=owner_index[name])
            if pixels is not None:
                self._store_local_images(writer, p, ids - p.local_base, pixels)
            p.num_samples += len(ids)
            merged += len(ids)
        return merged

    @staticmethod
    def local_images_file(p: Participant) -> str:
        return f"local_images_{p.name}.npy"

    def _store_local_images(self, writer: DatasetWriter, p: Participant, rows: np.ndarray,
                            pixels: np.ndarray) -> None:
        name = self.local_images_file(p)
        if name not in writer.arrays:
            writer.create_array(name, (p.local_count, *pixels.shape[1:]), np.uint8)
        writer.arrays[name][rows] = pixels

    @staticmethod
    def checked_pixels(reply: Message, count: int, earlier: np.ndarray | None) -> np.ndarray:
        """Uploaded node-local images of a page: uint8 ``(count, H, W, 3)``, and of the same
        size as the participant's earlier pages."""
        try:
            pixels = reply.content["outputs"]["pixels"].numpy()
        except KeyError:
            raise ReplyRefused("upload-images was asked for, but the reply has no pixels") from None
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[0] != count or pixels.shape[-1] != 3:
            raise ReplyRefused(f"uploaded pixels of {pixels.dtype} {pixels.shape}, expected uint8 "
                               f"({count}, H, W, 3)")
        if earlier is not None and earlier.shape[1:] != pixels.shape[1:]:
            raise ReplyRefused(f"uploaded images of shape {pixels.shape[1:]}, earlier pages had "
                               f"{earlier.shape[1:]}")
        return pixels

    def checked_targets(self, p: Participant, reply: Message, ids: np.ndarray,
                        key: str = "targets", count: bool = True) -> np.ndarray:
        """The reply's targets, after the checks that keep garbage out of the dataset.

        Raises
        ------
        ReplyRefused
            With the reason, for anything the platform will not merge.
        """
        try:
            outputs = reply.content["outputs"]
            targets = outputs[key].numpy()
            returned = outputs["ids"].numpy()
            metrics = reply.content["metrics"]
            seconds, n_images = float(metrics["encode-seconds"]), int(metrics["num-images"])
        except (KeyError, TypeError, ValueError) as error:
            raise ReplyRefused(f"reply lacks {key}, ids or metrics ({error!r})") from None
        expected = (len(ids), self.settings.target_dim)
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
        if count:
            p.encode_seconds += seconds
            p.encoded_images += n_images
        return targets.astype(np.float32, copy=False)

    # ------------------------------------------------------------------ the round
    def start(self, grid: Grid, server_round: int = 1,
              student: tuple[dict, dict] | None = None) -> CoOptResult:
        """Run one CoOpt round and publish its dataset; returns a :class:`CoOptResult`.

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
        s = self.settings
        self.timings, self.failures = {}, []
        self.summary()
        round_dir = rounds.round_dir(s.output_dir, server_round)
        if round_dir.exists() and not s.overwrite:
            raise FileExistsError(f"{round_dir} already exists: choose a new output-dir or set "
                                  "overwrite=true")
        t_round = time.perf_counter()

        t = time.perf_counter()
        node_ids = self.wait_for_nodes(grid)
        participants = self.aggregate_describe(
            server_round, self._exchange(grid, self.configure_describe(server_round, node_ids)))
        self._check_survivors(participants, "describe")
        self._timed("describe", t)
        for p in participants:
            log(INFO, "  %s: node %d runs %s (%d-d, %d px, %s)", p.name, p.node_id, p.prototype,
                p.output_dim, p.image_size, p.device)

        sample_ids = select_samples(len(self.source), s.num_samples, s.seed)
        shared_ids = select_shared_subset(sample_ids, s.shared_size, s.seed)
        t = time.perf_counter()
        log(INFO, "[shared] sending %d shared images to %d participants", len(shared_ids), len(participants))
        shared_pixels = self.source.images(shared_ids)
        if s.refinement == "static":
            student = None
        replies = self._exchange(grid, self.configure_shared(server_round, participants,
                                                             shared_pixels, student))
        participants, own, student_emb = self.aggregate_shared(
            server_round, participants, replies, shared_pixels, with_student=student is not None)
        self._check_survivors(participants, "the shared subset")
        self._timed("shared subset encode", t)

        t = time.perf_counter()
        own_values = {name: uniform_value(emb) for name, emb in own.items()}
        student_value = uniform_value(student_emb) if student_emb is not None else None
        switch = choose_encoders(s.refinement, own_values, student_value)
        for p in participants:
            p.encoder = "student" if switch[p.name] else "own"
        # Participants that switched are represented by the student's embeddings of S.
        shared = {name: student_emb if switch[name] else emb for name, emb in own.items()}
        candidates = {"student": student_emb} if student_emb is not None else None
        plan = plan_alignment(shared, seed=s.seed, candidates=candidates)
        self._timed("uniform value + alignment", t)
        if student_value is not None:
            log(INFO, "  student (%s): uniform value %.4f%s", student[1].get("digest"), student_value,
                "  <- reference" if plan.reference == "student" else "")
        for p in participants:
            m = plan.maps[p.name]
            log(INFO, "  %s: own uniform value %.4f, encodes with %s, residual %.3f (held-out %.3f)%s",
                p.name, own_values[p.name], p.encoder, m.fit_residual, m.holdout_residual,
                "  <- reference" if p.name == plan.reference else "")

        # Shards are drawn among the participants that got this far, so a failure before this
        # point loses nothing. Participants with node-local data encode that data (ids after
        # the source's); the others share the platform's samples.
        sample_ids, local_ids = self._assign_local_ids(participants, sample_ids)
        holders = [p for p in participants if not p.local_count]
        shards = dict.fromkeys((p.name for p in participants), np.empty(0, np.int64))
        if holders:
            shards.update(zip((p.name for p in holders), partition_iid(sample_ids, len(holders), s.seed)))
        upload = s.upload_local_images
        scheduler = PageScheduler(
            shards, s.rows_per_page(), s.on_failure, s.min_participants, pinned=local_ids,
            reassign_to={p.name for p in holders},
            pinned_page_sizes={p.name: s.rows_per_page(p.local_image_bytes if upload else 0)
                               for p in participants if p.local_count})
        all_ids = np.concatenate([sample_ids, *local_ids.values()]) if local_ids else sample_ids
        t = time.perf_counter()
        done, wave_index = 0, 0
        with DatasetWriter(round_dir, all_ids, s.target_dim, s.target_dtype,
                           overwrite=s.overwrite) as writer:
            while wave := scheduler.next_wave():
                wave_index += 1
                replies = self._exchange(grid, self.configure_optimize(server_round, wave, participants))
                done += self.aggregate_optimize(server_round, wave, participants, replies, plan,
                                                writer, scheduler)
                log(INFO, "[optimize] wave %d: %d/%d samples merged, %d pending", wave_index,
                    done, len(all_ids), scheduler.pending_samples())
            self._timed("shard encode + align + write", t)

            missing = scheduler.missing_ids()
            self.timings["total"] = time.perf_counter() - t_round
            summary = self._summary(server_round, round_dir, participants, plan, all_ids,
                                    shared_ids, missing, own_values, student)
            manifest = {k: v for k, v in summary.items() if k != "dataset_path"}
            manifest["shared_ids"] = shared_ids.tolist()
            manifest["local_sources"] = [
                {"participant": p.name, "prototype": p.prototype, "spec": p.local_data,
                 "first_id": p.local_base, "count": p.local_count,
                 "images": self.local_images_file(p) if self.local_images_file(p) in writer.arrays else None}
                for p in participants if p.local_count]
            report = render_report(summary)
            writer.commit(
                manifest,
                extra_files={REPORT_MD: report, REPORT_JSON: json.dumps(summary, indent=2)},
                extra_arrays={SHARED_EMBEDDINGS: np.stack([shared[p.name] for p in participants])},
                allow_missing=s.on_failure == "drop",
            )
        log(INFO, "CoOpt round %d done: %s", server_round, round_dir)
        for line in report.splitlines():
            log(INFO, "  %s", line)
        return CoOptResult(round_dir, round_dir / REPORT_MD, summary, plan, list(self.failures))

    def _assign_local_ids(self, participants: list[Participant], sample_ids: np.ndarray
                          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Global ids for node-local data, after the source's, in participant order.

        Returns the platform's sample ids (none when no participant can read the platform's
        data) and each local participant's global ids.
        """
        base, local_ids = len(self.source), {}
        for p in participants:
            if p.local_count:
                p.local_base = base
                local_ids[p.name] = np.arange(base, base + p.local_count, dtype=np.int64)
                base += p.local_count
        if local_ids and all(p.local_count for p in participants):
            log(WARNING, "every participant holds only node-local data: the platform's samples "
                "(other than the shared subset) are not part of this dataset")
            sample_ids = np.empty(0, np.int64)
        return sample_ids, local_ids

    def _summary(self, server_round, round_dir, participants, plan, sample_ids, shared_ids,
                 missing, own_values, student) -> dict:
        s = self.settings
        if plan.reference == "student":
            reference_prototype = f"student:{student[1].get('digest')}"
        else:
            ref = next(p for p in participants if p.name == plan.reference)
            reference_prototype = f"student:{student[1].get('digest')}" if ref.encoder == "student" else ref.prototype
        return {
            "round": server_round,
            "source": self.source.spec,
            "num_samples": int(len(sample_ids) - len(missing)),
            "target_dim": s.target_dim,
            "target_dtype": s.target_dtype,
            "shared_size": int(len(shared_ids)),
            "seed": s.seed,
            "reference": plan.reference,
            "reference_prototype": reference_prototype,
            "refinement": s.refinement,
            "student": None if student is None else {
                "digest": student[1].get("digest"), "arch": student[1].get("arch"),
                "uniform_value": plan.uniform_values.get("student"),
            },
            "dataset_path": str(round_dir),
            "settings": s.as_dict(),
            "failures": [f.as_dict() for f in self.failures],
            "missing_samples": int(len(missing)),
            "missing_sample_ids": missing.tolist(),
            "timings": dict(self.timings),
            "participants": [
                {
                    "name": p.name, "node_id": p.node_id, "prototype": p.prototype,
                    "output_dim": p.output_dim, "image_size": p.image_size, "device": p.device,
                    "num_samples": int(p.num_samples),
                    "uniform_value": own_values[p.name],
                    "encoder": p.encoder,
                    "fit_residual": plan.maps[p.name].fit_residual,
                    "holdout_residual": plan.maps[p.name].holdout_residual,
                    "alpha": plan.maps[p.name].alpha,
                    "images_per_second": p.encoded_images / p.encode_seconds if p.encode_seconds else 0.0,
                    "shared_pixels_sha256": p.shared_sha256,
                    "local_data": p.local_data, "local_samples": p.local_count,
                    "failed": p.name in {f.participant for f in self.failures},
                }
                for p in participants
            ],
        }
