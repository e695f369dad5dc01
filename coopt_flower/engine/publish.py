"""The round's last step: its manifest, report and plots, then the dataset renamed into place.

:func:`round_manifest` gathers what the round did into one typed
:class:`~coopt_flower.manifest.Manifest`; :func:`publish` draws the plots, renders ``report.md``
and hands everything to the dataset writer, which checksums it and renames it into place
atomically: a reader never finds a half-written round.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from coopt_flower.bad_samples import BadSampleLedger
from coopt_flower.config import RunSettings
from coopt_flower.dataset_format import SHARED_EMBEDDINGS_FILE
from coopt_flower.engine.enrollment import Participant
from coopt_flower.engine.failures import FAILURES_LOG, FailureLog
from coopt_flower.engine.merging import RoundWriter
from coopt_flower.engine.plan import STUDENT, AlignmentPlan, RoundPlan
from coopt_flower.engine.transport import Student
from coopt_flower.manifest import LocalSource, Manifest, ParticipantRecord, StudentRecord
from coopt_flower.merges import Merge
from coopt_flower.report import render_report, round_plots

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_JSON = "report.json"


def exposed_head(plan: AlignmentPlan, names: list[str]) -> str:
    """Under ``merge=heads``: the participant whose head a student trained on the dataset
    exposes as a prototype (next rounds).

    The reference when it is a participant. When the refined student is the reference, the
    most uniform participant: participants that encode with the student score exactly the
    student's value, so that is one of them whenever anyone switched.
    """
    if plan.reference in names:
        return plan.reference
    return min(names, key=lambda name: (plan.uniform_values[name], names.index(name)))


def reference_prototype(plan: AlignmentPlan, participants: list[Participant], student: Student | None) -> str:
    """The spec of the encoder whose space the dataset is in (``student:<digest>`` for the
    refined student, also when the reference participant encoded with it)."""
    if plan.reference != STUDENT:
        ref = next(p for p in participants if p.name == plan.reference)
        if ref.encoder == "refined":
            return f"{ref.prototype}+distill:{ref.refined_digest}"
        if ref.encoder != STUDENT:
            return ref.prototype
    return f"student:{student[1].get('digest')}"


def participant_record(p: Participant, plan: RoundPlan, writer: RoundWriter, failed: set[str]) -> ParticipantRecord:
    m = plan.alignment.maps[p.name]
    return ParticipantRecord(
        name=p.name, node_id=p.node_id, slot=p.slot, partition_id=p.partition_id, prototype=p.prototype,
        output_dim=p.output_dim, image_size=p.image_size, device=p.device, num_samples=int(p.num_samples),
        pages_stolen=writer.pages_stolen(p.name), uniform_value=plan.own_values[p.name], encoder=p.encoder,
        fit_residual=m.fit_residual, holdout_residual=m.holdout_residual, alpha=m.alpha, rank=m.rank,
        images_per_second=p.encoded_images / p.encode_seconds if p.encode_seconds else 0.0,
        shared_pixels_sha256=p.shared_sha256, local_data=p.local_data, local_samples=p.local_count,
        failed=p.name in failed, label_counts=p.label_counts, refined_digest=p.refined_digest,
        refine_seconds=p.refine_seconds)


def round_manifest(*, settings: RunSettings, source_spec: str, server_round: int, round_dir: Path,
                   plan: RoundPlan, student: Student | None, shared_ids: np.ndarray, writer: RoundWriter,
                   bad: BadSampleLedger, failures: FailureLog, timings: dict[str, float]) -> Manifest:
    """What the round did, as its dataset records it."""
    s, alignment, participants = settings, plan.alignment, writer.participants
    missing = writer.missing_ids()
    names = [p.name for p in participants]
    num_samples = int(len(writer.all_ids) - len(missing))
    bad_summary = bad.summary() if bad else {}
    if bad:
        num_samples -= len(writer.writer.excluded_ids())
    merge = Merge(s.merge)
    return Manifest(
        round=server_round, source=source_spec, num_samples=num_samples, target_dim=s.target_dim,
        target_dtype=s.target_dtype, shared_size=int(len(shared_ids)), seed=s.seed,
        reference=alignment.reference, reference_prototype=reference_prototype(alignment, participants, student),
        merge=merge, exposed_head=exposed_head(alignment, names) if merge.per_owner_spaces else None,
        reference_score=alignment.reference_score, scores=alignment.scores, refinement=s.refinement,
        page_assignment=s.page_assignment,
        student=None if student is None else StudentRecord(
            digest=student[1].get("digest"), arch=student[1].get("arch"),
            uniform_value=alignment.uniform_values.get(STUDENT, plan.student_value)),
        dataset_path=str(round_dir), settings=s.as_dict(),
        failures=[f.as_dict() for f in failures.failures], missing_samples=int(len(missing)),
        missing_sample_ids=missing.tolist(), timings=dict(timings),
        participants=[participant_record(p, plan, writer, failures.failed()) for p in participants],
        num_bad_samples=bad_summary.get("num_bad_samples"), bad_samples=bad_summary.get("bad_samples"),
        shared_ids=shared_ids.tolist(),
        local_sources=[LocalSource(participant=p.name, prototype=p.prototype, spec=p.local_data,
                                   first_id=p.local_base, count=p.local_count,
                                   images=p.local_images_file if p.local_images_file in writer.writer.arrays else None)
                       for p in participants if p.local_count])


def publish(writer: RoundWriter, manifest: Manifest, plan: RoundPlan, failures: FailureLog) -> str:
    """Plots, report and checksums; then the dataset is renamed into place. Returns the report."""
    dataset = writer.writer
    plots = round_plots(manifest)
    manifest.plots = list(plots)
    report = render_report(manifest)
    extra_files = {**plots, REPORT_MD: report, REPORT_JSON: json.dumps(manifest.report_json(), indent=2)}
    if failures.details:
        extra_files[FAILURES_LOG] = "\n".join(failures.details)
    dataset.commit(
        manifest.manifest_json(), extra_files=extra_files,
        extra_arrays={SHARED_EMBEDDINGS_FILE: np.stack([plan.shared[p.name] for p in writer.participants])},
        allow_missing=writer.settings.on_failure == "drop")
    return report
