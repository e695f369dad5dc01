"""One CoOpt round on the data platform, free of Flower.

:class:`CoOptRound` holds a round's state and does its work in steps. Whoever moves the
messages calls them in order: the Flower strategy (:class:`server_app.strategy.CoOptStrategy`)
over a Grid, or :func:`run_in_process` for participants living in this process (notebooks,
the benchmark). Both therefore run the very same method.

1. **describe**: :meth:`CoOptRound.accept_descriptions` orders the participants (slot, then
   partition id, then node id) and names them ``p0, p1, ...``. A node may host several
   participants (:mod:`coopt_flower.hosting`); every request names the one that is to answer.
2. **shared subset**: :meth:`CoOptRound.shared_request` draws S (seeded) and asks everyone to
   encode its pixels; :meth:`CoOptRound.accept_shared` checks every reply.
3. **plan**: :meth:`CoOptRound.plan` scores every prototype by uniform value, lets the refined
   student replace worse prototypes (``refinement = "switch"``), picks the most uniform as the
   reference and fits a ridge map per participant
   (:func:`coopt_flower.alignment.plan_alignment`).
4. **optimize**: inside :meth:`CoOptRound.writing`, the samples are split among the
   participants that got this far and requested page by page (ids only: nodes read their own
   copy of the data; node-local data stays with its owner). Every page is checked, aligned and
   written straight into a memory-mapped file, so memory does not grow with the dataset.
5. **publish**: :meth:`CoOptRound.publish` writes checksums, manifest and report and renames
   the dataset into place atomically.

Faults: a participant that fails, does not reply, or sends a reply that does not pass the
checks (:mod:`coopt_flower.protocol`) is refused with the reason in the report and takes no
further part in the round; nothing of that reply is merged. Its unfinished pages go to the
others (``on-failure = "reassign"``) or are listed as missing (``"drop"``). Fewer than
``min-participants`` left raises :class:`~coopt_flower.scheduling.RoundFailed` and nothing is
published: the previous version stays as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import numpy as np

from coopt_flower import rounds
from coopt_flower.alignment import AlignmentPlan, plan_alignment
from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource, partition_iid, select_samples
from coopt_flower.dataset_format import DatasetWriter
from coopt_flower.errors import one_line
from coopt_flower.protocol import (Description, EncodeConfig, EncodeReply, EncodeRequest, ReplyRefused,
                                   check_bad_samples, check_pixels, check_targets, pixels_digest,
                                   reply_limit)
from coopt_flower.bad_samples import BadSampleLedger
from coopt_flower.paging import InProcessPages, steal_pages
from coopt_flower.refinement import choose_encoders, embedding_tolerance, relative_difference
from coopt_flower.report import render_report, round_summary, write_round_plots
from coopt_flower.scheduling import Failure, PageScheduler, RoundFailed
from coopt_flower.uniformity import uniform_value

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
FAILURES_LOG = "failures.log"  # full reasons (tracebacks) of refused replies, beside the report
SHARED_EMBEDDINGS = "shared_embeddings.npy"

Student = tuple[dict[str, np.ndarray], dict[str, Any]]  # (weights, config) of a refined student


@dataclass
class Participant:
    """What the platform knows about one participant in this round."""

    name: str
    node_id: int
    prototype: str = "?"
    output_dim: int = 0
    image_size: int = 0
    device: str = "?"
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast on a GPU
    partition_id: int = -1
    slot: int = -1           # which participant of its node (-1: the node's own prototype)
    num_samples: int = 0
    encode_seconds: float = 0.0
    encoded_images: int = 0
    shared_sha256: str = ""
    encoder: str = "own"
    local_data: str = ""     # node-local images only this participant holds ("" = none)
    local_count: int = 0
    local_base: int = -1     # global sample id of its first local image
    local_image_bytes: int = 0

    @classmethod
    def from_description(cls, node_id: int, info: Description) -> Participant:
        return cls(name="", node_id=node_id, prototype=info.prototype, output_dim=info.output_dim,
                   image_size=info.image_size, device=info.device, precision=info.precision,
                   partition_id=info.partition_id, slot=info.slot,
                   local_data=info.local_data, local_count=info.local_samples,
                   local_image_bytes=info.local_image_bytes)

    def is_local(self, ids: np.ndarray) -> bool:
        """Whether a page of global ids is this participant's node-local data."""
        return self.local_count > 0 and len(ids) > 0 and int(ids[0]) >= self.local_base

    @property
    def local_images_file(self) -> str:
        return f"local_images_{self.name}.npy"


@dataclass
class RoundResult:
    """What a finished round leaves: the published dataset and its report."""

    dataset_path: Path
    report_path: Path
    summary: dict[str, Any]
    plan: AlignmentPlan
    failures: list[Failure] = field(default_factory=list)


Reply = EncodeReply | str  # a reply, or why there is none


class CoOptRound:
    """The platform's state and decisions for one round.

    Parameters
    ----------
    settings : RunSettings
        The validated run config.
    source : ImageSource
        The platform's copy of the data (the shared subset's pixels come from it).
    server_round : int
        Round number (names the dataset directory ``round-00r``).
    student : tuple, optional
        ``(weights, config)`` of the previous round's student
        (:func:`coopt_flower.refinement.student_payload`); ignored under ``refinement=static``.
    align : bool
        ``False`` merges every participant's targets as they are (identity maps): the
        "no alignment" ablation. The product always aligns.
    """

    def __init__(self, settings: RunSettings, source: ImageSource, server_round: int = 1,
                 student: Student | None = None, *, align: bool = True) -> None:
        self.settings = settings
        self.source = source
        self.server_round = server_round
        self.student = None if settings.refinement == "static" else student
        self.align = align
        self.round_dir = rounds.round_dir(settings.output_dir, server_round)
        if self.round_dir.exists() and not settings.overwrite:
            raise FileExistsError(f"{self.round_dir} already exists: choose a new output-dir or set "
                                  "overwrite=true")
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.failures: list[Failure] = []
        self.failure_details: list[str] = []  # full multi-line reasons (tracebacks)
        self.participants: list[Participant] = []
        self.sample_ids = select_samples(len(source), settings.num_samples, settings.seed)
        # Images that cannot be decoded are listed, left out, and never blamed on a node.
        self.bad = BadSampleLedger(settings.on_bad_sample, source)
        self.shared_ids = self.bad.draw_shared(self.sample_ids, settings.shared_size, settings.seed)
        self.shared_pixels: np.ndarray | None = None
        self.own_embeddings: dict[str, np.ndarray] = {}
        self.student_embeddings: np.ndarray | None = None
        self._student_tolerance = 0.0
        self.own_values: dict[str, float] = {}
        self.shared: dict[str, np.ndarray] = {}
        self.alignment: AlignmentPlan | None = None
        self._writer: DatasetWriter | None = None
        self._scheduler: PageScheduler | None = None
        self._all_ids = self.sample_ids
        self._merged = self._waves = 0
        self._optimize_started = 0.0

    # ------------------------------------------------------------------ bookkeeping
    @property
    def merge(self) -> str:
        """How the targets were merged, as the manifest records it: the ``merge`` setting, or
        ``none`` for the no-alignment ablation (``align=False``) of ``align-ridge``."""
        return self.settings.merge if self.align or self.settings.merge == "heads" else "none"

    def encode_config(self, encoder: str = "own", slot: int = -1) -> EncodeConfig:
        s = self.settings
        return EncodeConfig(target_dim=s.target_dim, projection_seed=s.seed, batch_size=s.batch_size,
                            image_size=s.image_size, data=s.data, encoder=encoder, slot=slot)

    def refuse(self, name: str, step: str, reason: str) -> Failure:
        """Record a refused reply: one line in the report, the full text in ``failures.log``."""
        short = one_line(reason, table=True)
        log.warning("  %s refused at %s: %s", name, step, short)
        if short != str(reason).strip():
            self.failure_details.append(f"== {name} at {step}\n{reason}\n")
        self.failures.append(Failure(name, step, short))
        return self.failures[-1]

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - started

    def _check_survivors(self, step: str) -> None:
        if len(self.participants) < self.settings.min_participants:
            raise RoundFailed(f"after {step} only {len(self.participants)} participant(s) are left, "
                              f"fewer than min-participants={self.settings.min_participants}")

    def _by_name(self) -> dict[str, Participant]:
        return {p.name: p for p in self.participants}

    def _checked(self, p: Participant, reply: EncodeReply, ids: np.ndarray, *,
                 student: bool = False) -> np.ndarray:
        """Checked targets of a reply (``student``: its student-targets); counts encode work."""
        targets = reply.extra.get("student-targets") if student else reply.targets
        checked = check_targets(targets, reply.ids, ids, self.settings.target_dim,
                                what="student-targets" if student else "targets")
        if not student:
            p.encode_seconds += reply.encode_seconds
            p.encoded_images += reply.num_images
        return checked

    # ------------------------------------------------------------------ 1. describe
    def accept_descriptions(self, replies: Mapping[str, tuple[int, Description] | str]) -> list[Participant]:
        """Participants from the describe replies (``key -> (node id, description)`` or why not)."""
        participants = []
        for key, reply in replies.items():
            if isinstance(reply, str):
                self.refuse(key, "describe", reply)
            else:
                participants.append(Participant.from_description(*reply))
        # Slots (simulation) or partition ids give a stable order that does not depend on how
        # many nodes host the participants; node ids otherwise.
        participants.sort(key=lambda p: (p.slot < 0, p.slot, p.partition_id < 0, p.partition_id,
                                         p.node_id))
        for index, p in enumerate(participants):
            p.name = f"p{index}"
        self.participants = participants
        self._check_survivors("describe")
        for p in participants:
            log.info("  %s: node %d runs %s (%d-d, %d px, %s)", p.name, p.node_id, p.prototype,
                     p.output_dim, p.image_size, p.device)
        return participants

    # ------------------------------------------------------------------ 2. shared subset
    def shared_request(self) -> EncodeRequest:
        """The request every participant gets: S as pixels (and the student, if any)."""
        self.shared_ids, self.shared_pixels = self.bad.read_shared(self.sample_ids, self.shared_ids,
                                                                   self.settings.seed)
        log.info("[shared] sending %d shared images to %d participants", len(self.shared_ids),
                 len(self.participants))
        return EncodeRequest(self.encode_config(), pixels=self.shared_pixels, student=self.student)

    def shared_requests(self) -> dict[str, EncodeRequest]:
        """:meth:`shared_request` for every participant, each naming the one that is to answer."""
        request = self.shared_request()
        return {p.name: dataclasses.replace(request, config=dataclasses.replace(request.config, slot=p.slot))
                for p in self.participants}

    def accept_shared(self, replies: Mapping[str, Reply]) -> None:
        """Keep the participants whose shared-subset replies pass the checks.

        With a student, every participant also returns the student's embeddings of S; the
        first survivor's are taken and every other one must agree.
        """
        sent = pixels_digest(self.shared_pixels)
        no_ids = np.full(len(self.shared_ids), -1)
        survivors = []
        for p in self.participants:
            try:
                reply = replies[p.name]
                if isinstance(reply, str):
                    raise ReplyRefused(reply)
                if reply.pixels_sha256 != sent:
                    raise ReplyRefused("encoded other shared images than were sent (pixel checksum mismatch)")
                own = self._checked(p, reply, no_ids)
                if self.student is not None:
                    self._check_student(p, reply, self._checked(p, reply, no_ids, student=True))
                self.own_embeddings[p.name] = own
                p.shared_sha256 = reply.pixels_sha256
                survivors.append(p)
            except ReplyRefused as error:
                self.refuse(p.name, "shared subset", str(error))
        self.participants = survivors
        self._check_survivors("the shared subset")

    def _check_student(self, p: Participant, reply: EncodeReply, theirs: np.ndarray) -> None:
        """The student a participant ran must be the platform's (weights digest), and its
        embeddings of S must agree with the first participant's within the tolerance of the
        less precise arithmetic of the two (CPU float32, GPU TF32, bf16 / fp16 autocast)."""
        sent = str(self.student[1].get("digest", ""))
        if reply.student_digest and reply.student_digest != sent:
            raise ReplyRefused(f"it ran other student weights than were sent (digest "
                               f"{reply.student_digest} instead of {sent})")
        if self.student_embeddings is None:
            self.student_embeddings, self._student_tolerance = theirs, embedding_tolerance(p.precision, p.device)
            return
        tolerance = max(self._student_tolerance, embedding_tolerance(p.precision, p.device))
        difference = relative_difference(theirs, self.student_embeddings)
        if difference > tolerance:
            raise ReplyRefused(f"its student embeddings of S differ from the other participants' by "
                               f"{difference:.1%} (tolerance {tolerance:.1%} for {p.precision} on {p.device})")

    # ------------------------------------------------------------------ 3. plan
    def plan(self) -> AlignmentPlan:
        """Uniform values, who encodes with the student, the reference and every map."""
        s = self.settings
        with self.timed("uniform value + alignment"):
            self.own_values = {name: uniform_value(emb) for name, emb in self.own_embeddings.items()}
            student_emb = self.student_embeddings
            student_value = uniform_value(student_emb) if student_emb is not None else None
            switch = choose_encoders(s.refinement, self.own_values, student_value)
            for p in self.participants:
                p.encoder = "student" if switch[p.name] else "own"
            # Participants that switched are represented by the student's embeddings of S.
            self.shared = {name: student_emb if switch[name] else emb
                           for name, emb in self.own_embeddings.items()}
            candidates = {"student": student_emb} if student_emb is not None else None
            # merge=heads: no maps at all; every participant keeps its own space (the student
            # learns a head per participant). Scores and the reference are computed all the same.
            plan = self.alignment = plan_alignment(self.shared, seed=s.seed, candidates=candidates,
                                                   align=self.align and s.merge != "heads",
                                                   method=s.merge, reference_score=s.reference_score)
        if student_value is not None:
            log.info("  student (%s): uniform value %.4f%s", self.student[1].get("digest"), student_value,
                     "  <- reference" if plan.reference == "student" else "")
        for p in self.participants:
            m = plan.maps[p.name]
            log.info("  %s: own uniform value %.4f, encodes with %s, residual %.3f (held-out %.3f)%s",
                     p.name, self.own_values[p.name], p.encoder, m.fit_residual, m.holdout_residual,
                     "  <- reference" if p.name == plan.reference else "")
        return plan

    # ------------------------------------------------------------------ 4. optimize
    def _assign_local_ids(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Global ids for node-local data, after the source's, in participant order.

        Returns the platform's sample ids (none when no participant can read the platform's
        data) and each local participant's global ids.
        """
        base, local_ids = len(self.source), {}
        for p in self.participants:
            if p.local_count:
                p.local_base = base
                local_ids[p.name] = np.arange(base, base + p.local_count, dtype=np.int64)
                base += p.local_count
        sample_ids = self.bad.without_known(self.sample_ids)
        if local_ids and all(p.local_count for p in self.participants):
            log.warning("every participant holds only node-local data: the platform's samples "
                        "(other than the shared subset) are not part of this dataset")
            sample_ids = np.empty(0, np.int64)
        return sample_ids, local_ids

    @contextlib.contextmanager
    def writing(self) -> Iterator[CoOptRound]:
        """Split the shards and open the dataset writer; an exception discards what was written.

        Shards are drawn among the participants that got this far, so a failure before this
        point loses nothing. Participants with node-local data encode that data (ids after the
        source's); the others share the platform's samples.
        """
        s = self.settings
        sample_ids, local_ids = self._assign_local_ids()
        holders = [p for p in self.participants if not p.local_count]
        shards = dict.fromkeys((p.name for p in self.participants), np.empty(0, np.int64))
        if holders:
            shards.update(zip((p.name for p in holders), partition_iid(sample_ids, len(holders), s.seed)))
        upload = s.upload_local_images
        self._scheduler = PageScheduler(
            shards, s.rows_per_page(), s.on_failure, s.min_participants, pinned=local_ids,
            reassign_to={p.name for p in holders},
            pinned_page_sizes={p.name: s.rows_per_page(p.local_image_bytes if upload else 0)
                               for p in self.participants if p.local_count})
        self._all_ids = np.concatenate([sample_ids, *local_ids.values()]) if local_ids else sample_ids
        self._optimize_started = time.perf_counter()
        with DatasetWriter(self.round_dir, self._all_ids, s.target_dim, s.target_dtype,
                           overwrite=s.overwrite) as writer:
            self._writer = writer
            try:
                yield self
            finally:
                self._writer = None

    def next_wave(self) -> dict[str, np.ndarray]:
        """The next page (global ids) for every live participant with work left; empty when done."""
        return self._scheduler.next_wave()

    def page_requests(self, wave: Mapping[str, np.ndarray]) -> dict[str, EncodeRequest]:
        """The ``train.optimize`` request for every page of a wave."""
        by_name = self._by_name()
        requests = {}
        for name, ids in wave.items():
            p = by_name[name]
            config = self.encode_config(p.encoder, p.slot)
            if p.is_local(ids):  # node-local data: the node's own indices
                ids = ids - p.local_base
                config.scope = "local"
                config.upload_images = self.settings.upload_local_images
            requests[name] = EncodeRequest(config, ids=ids.astype(np.int64))
        return requests

    def reply_limits(self, wave: Mapping[str, np.ndarray] | None = None) -> dict[str, int]:
        """Bytes each participant's reply may hold (for the shared subset when ``wave`` is None):
        a larger reply is refused before it is decoded."""
        s, by_name = self.settings, self._by_name()
        if wave is None:
            return {p.name: reply_limit(len(self.shared_ids), s.target_dim, student=self.student is not None)
                    for p in self.participants}
        return {name: reply_limit(len(ids), s.target_dim, by_name[name].local_image_bytes
                                  if by_name[name].is_local(ids) and s.upload_local_images else 0)
                for name, ids in wave.items()}

    def accept_pages(self, wave: Mapping[str, np.ndarray], replies: Mapping[str, Reply]) -> int:
        """Merge the pages of a wave that pass the checks; fail the rest. Returns samples merged."""
        merged = sum(self._accept_page(name, ids, replies[name]) for name, ids in wave.items())
        self._waves += 1
        log.info("[optimize] wave %d: %d/%d samples merged, %d pending", self._waves, self._merged,
                 len(self._all_ids), self._scheduler.pending_samples())
        return merged

    # ------------------------------------------------------------------ work stealing
    def next_page(self, name: str) -> np.ndarray | None:
        """The next page (global ids) for ``name``, which is free now (``page-assignment =
        steal``), or ``None`` when there is nothing it may take."""
        return self._scheduler.next_for(name)

    def page_request(self, name: str, ids: np.ndarray) -> EncodeRequest:
        """The ``train.optimize`` request for one page."""
        return self.page_requests({name: ids})[name]

    def page_reply_limit(self, name: str, ids: np.ndarray) -> int:
        return self.reply_limits({name: ids})[name]

    def accept_page(self, name: str, ids: np.ndarray, reply: Reply) -> int:
        """Merge one page if it passes the checks, else fail its participant. Returns samples
        merged. Progress is logged every 10% of the samples."""
        merged = self._accept_page(name, ids, reply)
        total = max(len(self._all_ids), 1)
        if merged and (self._merged * 10) // total != ((self._merged - merged) * 10) // total:
            log.info("[optimize] %d/%d samples merged, %d pending", self._merged, total,
                     self._scheduler.pending_samples())
        return merged

    def pages_stolen(self, name: str) -> int:
        """Pages ``name`` took from others' queues (``page-assignment = steal``)."""
        return 0 if self._scheduler is None else self._scheduler.stolen.get(name, 0)

    def has_failed(self, name: str) -> bool:
        return name in self._scheduler.failed

    def release_pages(self, name: str, pages: list[np.ndarray]) -> None:
        """Hand on the pages a failed participant still had in flight (as ``on-failure`` says)."""
        action, affected = self._scheduler.fail(name, pages)
        if affected:
            log.warning("  %s: %d more in-flight samples %s", name, affected, action)
            for failure in reversed(self.failures):
                if failure.participant == name:
                    failure.samples_affected += affected
                    break

    def in_flight_target(self, depth: int) -> int:
        """Pages to keep in flight per participant: ``depth`` while there is plenty of work,
        one near the end, so no page waits behind another on a slow node when the round could
        otherwise finish."""
        scheduler = self._scheduler
        return depth if scheduler.pending_pages() >= depth * max(len(scheduler.live), 1) else 1

    @property
    def live_participants(self) -> list[str]:
        return self._scheduler.live

    def _accept_page(self, name: str, ids: np.ndarray, reply: Reply) -> int:
        p = self._by_name()[name]
        writer, scheduler = self._writer, self._scheduler
        local = p.is_local(ids)
        base = p.local_base if local else 0
        try:
            if isinstance(reply, str):
                raise ReplyRefused(reply)
            good, bad, entries = check_bad_samples(reply.bad_samples, ids - base)
            targets = self._checked(p, reply, good)
            pixels = None
            if local and self.settings.upload_local_images:
                earlier = writer.arrays.get(p.local_images_file)
                pixels = check_pixels(reply.extra.get("pixels"), len(good),
                                      None if earlier is None else earlier.shape[1:])
        except ReplyRefused as error:
            failure = self.refuse(name, "optimize", str(error))
            action, affected = scheduler.fail(name, ids)  # raises RoundFailed below the minimum
            failure.samples_affected, failure.action = affected, action
            log.warning("  %s: %d unfinished samples %s", name, affected, action)
            return 0
        if len(bad):  # raises under on-bad-sample=fail
            self.bad.record(entries, base=base, reported_by=name, local=local)
            writer.exclude(bad + base)
            ids = good + base
        writer.write(ids, self.alignment.maps[name].apply(targets), owner=self._owner_index()[name])
        if pixels is not None:
            self._store_local_images(p, ids - p.local_base, pixels)
        p.num_samples += len(ids)
        self._merged += len(ids)
        return len(ids)

    def _owner_index(self) -> dict[str, int]:
        return {p.name: i for i, p in enumerate(self.participants)}

    def _store_local_images(self, p: Participant, rows: np.ndarray, pixels: np.ndarray) -> None:
        name = p.local_images_file
        if name not in self._writer.arrays:
            self._writer.create_array(name, (p.local_count, *pixels.shape[1:]), np.uint8)
        self._writer.arrays[name][rows] = pixels

    # ------------------------------------------------------------------ 5. publish
    def publish(self) -> RoundResult:
        """Checksums, manifest and report; then the dataset is renamed into place."""
        s, writer, plan = self.settings, self._writer, self.alignment
        self.timings["shard encode + align + write"] = time.perf_counter() - self._optimize_started
        missing = self._scheduler.missing_ids()
        self.timings["total"] = time.perf_counter() - self.started
        summary = self.summary(missing)
        if self.bad:
            summary.update(self.bad.summary())
            summary["num_samples"] -= len(writer.excluded_ids())
        manifest = {k: v for k, v in summary.items() if k != "dataset_path"}
        manifest["shared_ids"] = self.shared_ids.tolist()
        manifest["local_sources"] = [
            {"participant": p.name, "prototype": p.prototype, "spec": p.local_data,
             "first_id": p.local_base, "count": p.local_count,
             "images": p.local_images_file if p.local_images_file in writer.arrays else None}
            for p in self.participants if p.local_count]
        summary["plots"] = write_round_plots(writer.tmp, summary)
        report = render_report(summary)
        writer.commit(
            manifest,
            extra_files={REPORT_MD: report, REPORT_JSON: json.dumps(summary, indent=2),
                         **({FAILURES_LOG: "\n".join(self.failure_details)} if self.failure_details else {})},
            extra_arrays={SHARED_EMBEDDINGS: np.stack([self.shared[p.name] for p in self.participants])},
            allow_missing=s.on_failure == "drop",
        )
        log.info("CoOpt round %d done: %s", self.server_round, self.round_dir)
        for line in report.splitlines():
            log.info("  %s", line)
        return RoundResult(self.round_dir, self.round_dir / REPORT_MD, summary, plan, list(self.failures))

    def summary(self, missing: np.ndarray) -> dict[str, Any]:
        """The round's report as a dict (also the manifest's body and ``report.json``)."""
        return round_summary(self, num_samples=int(len(self._all_ids) - len(missing)), missing=missing)


# --------------------------------------------------------------------------- in process


class LocalParticipant(Protocol):
    """A participant that lives in this process (e.g. :class:`coopt_flower.participant.PrototypeParticipant`)."""

    def describe(self, config: EncodeConfig) -> Description: ...

    def encode(self, request: EncodeRequest, student: Student | None = None) -> EncodeReply: ...


def _ask(participant: LocalParticipant, request: EncodeRequest, student: Student | None) -> Reply:
    try:
        return participant.encode(request, student)
    except Exception as error:  # a participant's failure is the round's to handle, as in Flower
        return f"failed: {error}"


def run_in_process(round_: CoOptRound, participants: list[LocalParticipant]) -> RoundResult:
    """Run a whole round with participants in this process, no Flower involved.

    Participant ``i`` stands for node id ``i``; replies are exchanged as the objects of
    :mod:`coopt_flower.protocol`, so the round sees exactly what a Flower run gives it.
    """
    with round_.timed("describe"):
        config = round_.encode_config()
        round_.accept_descriptions({f"node-{i}": (i, p.describe(config)) for i, p in enumerate(participants)})
    by_name = {p.name: participants[p.node_id] for p in round_.participants}
    with round_.timed("shared subset encode"):
        requests = round_.shared_requests()
        round_.accept_shared({name: _ask(p, requests[name], None) for name, p in by_name.items()})
    round_.plan()
    student = round_.student
    with round_.writing():
        if round_.settings.page_assignment == "steal":
            pages = InProcessPages(lambda name, request: _ask(by_name[name], request, student))
            steal_pages(round_, pages, pages_in_flight=round_.settings.pages_in_flight)
        while wave := round_.next_wave():  # nothing left after stealing
            requests = round_.page_requests(wave)
            round_.accept_pages(wave, {name: _ask(by_name[name], r, student) for name, r in requests.items()})
        return round_.publish()
