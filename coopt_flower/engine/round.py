"""One CoOpt round on the data platform: the step sequence, free of Flower.

:func:`run_round` runs the five steps over any :class:`~coopt_flower.engine.transport.Transport`
(Flower's Grid in the ServerApp, participants in this process elsewhere), so every round,
whoever moves its messages, is the very same code:

1. **describe** (:mod:`~coopt_flower.engine.enrollment`): who takes part.
2. **shared subset** (:mod:`~coopt_flower.engine.samples`, drawn before step 1): S (seeded)
   is sent as pixels; every reply is checked.
3. **plan** (:mod:`~coopt_flower.engine.plan`): scores on S, the reference, every map.
4. **optimize** (:mod:`~coopt_flower.engine.merging`, :mod:`~coopt_flower.engine.pages`):
   pages of ids out, targets back, checked, aligned and written into a memory-mapped dataset.
5. **publish** (:mod:`~coopt_flower.engine.publish`): manifest, report, plots; the dataset is
   renamed into place atomically.

Faults: a participant that fails, does not reply, or sends a reply that does not pass the
checks is refused with the reason in the report and takes no further part in the round;
nothing of that reply is merged. Fewer than ``min-participants`` left raises
:class:`~coopt_flower.engine.failures.RoundFailed` and nothing is published: the previous
version stays as it was.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from coopt_flower.config import RunSettings
from coopt_flower.data import ImageSource
from coopt_flower.engine import progress
from coopt_flower.engine.enrollment import Participant, accept_shared, enroll, shared_requests
from coopt_flower.engine.failures import Failure, FailureLog
from coopt_flower.engine.merging import RoundWriter
from coopt_flower.engine.pages import encode_pages
from coopt_flower.engine.plan import STUDENT, RoundPlan, plan_round
from coopt_flower.engine.publish import REPORT_MD, publish, round_manifest
from coopt_flower.engine.samples import RoundSamples
from coopt_flower.engine.transport import Student, Transport, exchange
from coopt_flower.manifest import Manifest
from coopt_flower.scores import uniform_value

log = logging.getLogger(__name__)


@dataclass
class RoundResult:
    """What a finished round leaves: the published dataset, its manifest and its plan."""

    dataset_path: Path
    report_path: Path
    manifest: Manifest
    plan: RoundPlan
    failures: list[Failure] = field(default_factory=list)


class StepTimer:
    """Seconds per step, in the order the steps ran (the report's timing table)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started

    def total(self) -> None:
        self.seconds["total"] = time.perf_counter() - self.started


def run_round(settings: RunSettings, source: ImageSource, transport: Transport, *, server_round: int = 1,
              student: Student | None = None, clock: Callable[[], float] = time.monotonic,
              before_write: Callable[[], None] | None = None) -> RoundResult:
    """Run one CoOpt round and publish its dataset.

    Parameters
    ----------
    settings : RunSettings
        The validated run config (``merge = none`` is the no-alignment ablation).
    source : ImageSource
        The platform's copy of the data (the shared subset's pixels come from it).
    transport : Transport
        Who carries the requests (:class:`~coopt_flower.engine.transport.InProcessTransport`,
        or the ServerApp's Grid).
    server_round : int
        Round number (names the dataset directory ``round-00r``).
    student : tuple, optional
        ``(weights, config)`` of the previous round's student
        (:func:`coopt_flower.round_student.student_payload`); ignored under
        ``refinement = static``.
    clock : callable
        Monotonic seconds for the reply timeouts.
    before_write : callable, optional
        Called once the round is about to write its dataset (after describe, the shared subset
        and the plan: a round refused before has written nothing), e.g. to claim the output
        directory (:func:`coopt_flower.preflight.claim_output_dir`).

    Raises
    ------
    RoundFailed
        Too few participants were left; nothing was published.
    FileExistsError
        The round's directory exists and ``overwrite`` is not set.
    """
    s = settings
    student = None if s.refinement == "static" else student
    round_dir = progress.round_dir(s.output_dir, server_round)
    if round_dir.exists() and not s.overwrite:
        raise FileExistsError(f"{round_dir} already exists: choose a new output-dir or set overwrite=true")
    timer, failures = StepTimer(), FailureLog()
    samples = RoundSamples.draw(s, source)

    with timer("describe"):
        participants = enroll(transport, s.encode_config(), expected=s.expected_participants,
                              min_participants=s.min_participants, node_wait_s=s.node_wait_s,
                              server_round=server_round, failures=failures)
    refine = s.refinement == "distill" and student is not None
    with timer("shared subset encode" if not refine else "refine + shared subset encode"):
        pixels = samples.read_shared(source)
        log.info("[shared] sending %d shared images to %d participants%s", len(pixels), len(participants),
                 " (each refines its prototype towards the student first)" if refine else "")
        config = s.refine_config(server_round) if refine else s.encode_config()
        # Distill: the shards are known before S (to send each participant its sample); they
        # are the round's shards unless someone fails on S.
        early = samples.split(participants, len(source)) if refine else None
        refine_ids = refine_samples(early.shards, samples, s.refine_samples) if early else None
        enrolled = len(participants)
        replies = exchange(transport, shared_requests(participants, config, pixels, student, s.target_dim,
                                                      refine_ids),
                           server_round=server_round, timeout_s=s.reply_timeout_s, clock=clock)
        participants, embeddings = accept_shared(participants, replies, pixels, target_dim=s.target_dim,
                                                 student=student, failures=failures,
                                                 min_participants=s.min_participants, refine=refine)
    with timer("uniform value + alignment"):
        # Under distill the student reached the round through the refined prototypes: it is
        # neither a reference candidate nor anyone's encoder.
        plan = plan_round(embeddings.own, None if refine else embeddings.student, refinement=s.refinement,
                          merge=s.merge, reference_score=s.reference_score, seed=s.seed)
        if refine and embeddings.student is not None:  # reported beside the refined prototypes' values
            plan.student_value = uniform_value(embeddings.student)
    for p in participants:
        p.encoder = "refined" if p.refined_digest else plan.encoders[p.name]
    log_plan(plan, participants, student)

    if before_write is not None:
        before_write()
    optimize_started = time.perf_counter()
    same = early is not None and len(participants) == enrolled  # nobody failed on S
    shards = early if same else samples.split(participants, len(source))
    with RoundWriter.open(s, participants, plan.alignment, shards, samples.bad, failures, round_dir) as writer:
        encode_pages(writer, transport, steal=s.page_assignment == "steal", server_round=server_round,
                     pages_in_flight=s.pages_in_flight, reply_timeout_s=s.reply_timeout_s, clock=clock)
        timer.seconds["shard encode + align + write"] = time.perf_counter() - optimize_started
        timer.total()
        manifest = round_manifest(settings=s, source_spec=source.spec, server_round=server_round,
                                  round_dir=round_dir, plan=plan, student=student, shared_ids=samples.shared_ids,
                                  writer=writer, bad=samples.bad, failures=failures, timings=timer.seconds)
        publish(writer, manifest, plan, failures)
    log.info("CoOpt round %d done: %s", server_round, round_dir)
    log_summary(manifest, failures, round_dir / REPORT_MD)
    return RoundResult(round_dir, round_dir / REPORT_MD, manifest, plan, list(failures.failures))


def refine_samples(shards: dict[str, np.ndarray], samples: RoundSamples, count: int) -> dict[str, np.ndarray]:
    """Every participant's sample of its shard to refine on (distill): up to ``count`` of the
    platform's samples it is to encode this round (seeded, sorted, S left out: it comes as
    pixels); none for a participant with node-local data only (it refines on S)."""
    rng = np.random.default_rng([samples.seed, 7411])
    picked = {}
    for name in shards:
        shard = np.setdiff1d(shards[name], samples.shared_ids)
        take = min(count, len(shard))
        picked[name] = np.sort(rng.choice(shard, size=take, replace=False)) if take else np.empty(0, np.int64)
    return picked


def log_summary(manifest: Manifest, failures: FailureLog, report_path: Path) -> None:
    """The round in three lines (the whole report is in ``report_path``, not echoed)."""
    m = manifest
    log.info("  %d samples from %d participants, reference %s (%s), %d failed", m.num_samples,
             len([p for p in m.participants if not p.failed]), m.reference, m.reference_prototype,
             len(failures.failures))
    if "total" in m.timings:
        log.info("  %.1f s in all", m.timings["total"])
    log.info("  report: %s", report_path)


def log_plan(plan: RoundPlan, participants: list[Participant], student: Student | None) -> None:
    """One line per participant: its score, encoder and alignment; the reference marked."""
    alignment = plan.alignment
    if plan.student_value is not None:
        log.info("  student (%s): uniform value %.4f%s", student[1].get("digest"), plan.student_value,
                 "  <- reference" if alignment.reference == STUDENT else "")
    for p in participants:
        m = alignment.maps[p.name]
        log.info("  %s: own uniform value %.4f, encodes with %s, residual %.3f (held-out %.3f)%s",
                 p.name, plan.own_values[p.name], p.encoder, m.fit_residual, m.holdout_residual,
                 "  <- reference" if p.name == alignment.reference else "")
