"""The optimized dataset's schema: ``manifest.json`` (and ``report.json``) as typed records.

A round writes one :class:`Manifest`. Its JSON form is what a dataset directory carries
(``manifest.json``, keys sorted, checksums added by the writer) and, seen from the run,
what ``report.json`` holds (the same record with the dataset's path and plot names, without
the shared ids, node-local sources and checksums). Every reader (the loader, ``coopt
report``, training, export, the dataset card, the multi-round loop) goes through
:meth:`Manifest.from_json`, which fills what a dataset written by an older version lacks with
the value that version meant, so no reader needs ``.get(key, default)`` of its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from coopt_flower.merges import LEGACY_MERGE, Merge

FORMAT_VERSION = 1

# Keys only the dataset's manifest.json holds, and keys only the run's report.json holds.
MANIFEST_ONLY = ("shared_ids", "local_sources", "files", "format_version")
REPORT_ONLY = ("dataset_path", "plots")


def _from_mapping(cls, values: Mapping[str, Any]):
    """``cls`` from the keys it knows; unknown keys (a newer writer's) are ignored."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class ParticipantRecord:
    """One participant of the round, as its dataset remembers it."""

    name: str
    node_id: int = -1
    slot: int = -1
    partition_id: int = -1
    prototype: str = "?"
    output_dim: int = 0
    image_size: int = 0
    device: str = "?"
    num_samples: int = 0
    pages_stolen: int = 0
    uniform_value: float = 0.0
    encoder: str = "own"
    fit_residual: float = 0.0
    holdout_residual: float = 0.0
    alpha: float = 0.0
    rank: int = 0
    images_per_second: float = 0.0
    shared_pixels_sha256: str = ""
    local_data: str = ""
    local_samples: int = 0
    failed: bool = False
    label_counts: list[int] | None = None  # its shard per class, when the source has labels
    refined_digest: str = ""   # distill: the version of its prototype this round (refined head's digest)
    refine_seconds: float = 0.0


def _participant_json(record: ParticipantRecord) -> dict[str, Any]:
    """A participant as the manifest writes it: distill's keys only where it refined, so the
    manifests of the other policies are what they were."""
    values = dataclasses.asdict(record)
    if not record.refined_digest:
        del values["refined_digest"], values["refine_seconds"]
    return values


@dataclass
class StudentRecord:
    """The refined student that came into the round (multi-round)."""

    digest: str
    arch: str | None = None
    uniform_value: float | None = None


@dataclass
class LocalSource:
    """Samples that came from one participant's node-local images (ids after the source's)."""

    participant: str
    prototype: str
    spec: str
    first_id: int
    count: int
    images: str | None = None  # the uploaded images' file in the dataset (None: not uploaded)

    def holds(self, sample_id: int) -> bool:
        return self.first_id <= sample_id < self.first_id + self.count


@dataclass
class Manifest:
    """Everything a round's dataset records about how it was made.

    The field order is the order of ``report.json``. ``exposed_head`` is set only under
    ``merge = heads``; ``num_bad_samples`` / ``bad_samples`` only where an image could not be
    decoded (their keys are absent otherwise, as in the datasets written before them).
    """

    round: int = 1
    source: str = ""
    num_samples: int = 0
    target_dim: int = 0
    target_dtype: str = "float32"
    shared_size: int = 0
    seed: int = 0
    reference: str = ""
    reference_prototype: str = "?"
    merge: Merge = LEGACY_MERGE
    exposed_head: str | None = None
    reference_score: str = "uniform"
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    refinement: str = "static"
    page_assignment: str = "waves"
    student: StudentRecord | None = None
    dataset_path: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    missing_samples: int = 0
    missing_sample_ids: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    participants: list[ParticipantRecord] = field(default_factory=list)
    num_bad_samples: int | None = None
    bad_samples: list[dict[str, Any]] | None = None
    plots: list[str] = field(default_factory=list)
    # manifest.json only
    shared_ids: list[int] = field(default_factory=list)
    local_sources: list[LocalSource] = field(default_factory=list)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Manifest:
        """A manifest (or report) as read from JSON; older datasets get their defaults."""
        values = dict(values)
        values["merge"] = Merge(values.get("merge", LEGACY_MERGE))
        values["participants"] = [_from_mapping(ParticipantRecord, p) for p in values.get("participants", [])]
        values["local_sources"] = [_from_mapping(LocalSource, e) for e in values.get("local_sources", [])]
        if values.get("student") is not None:
            values["student"] = _from_mapping(StudentRecord, values["student"])
        if "shared_size" not in values:
            values["shared_size"] = len(values.get("shared_ids", []))
        return _from_mapping(cls, values)

    # ------------------------------------------------------------------ writing
    def _json(self, leave_out: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in leave_out or (f.name in ("exposed_head", "num_bad_samples", "bad_samples")
                                       and value is None):
                continue
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [_participant_json(v) if isinstance(v, ParticipantRecord) else dataclasses.asdict(v)
                         for v in value]
            out[f.name] = value.value if isinstance(value, Merge) else value
        return out

    def report_json(self) -> dict[str, Any]:
        """``report.json``: the run's view (dataset path and plots; no ids or checksums)."""
        return self._json(MANIFEST_ONLY)

    def manifest_json(self) -> dict[str, Any]:
        """``manifest.json``'s body (the dataset writer adds format, shape and checksums)."""
        return self._json(REPORT_ONLY)

    # ------------------------------------------------------------------ questions readers ask
    @property
    def participant_names(self) -> list[str]:
        return [p.name for p in self.participants]

    def participant(self, name: str) -> ParticipantRecord:
        return next(p for p in self.participants if p.name == name)

    @property
    def is_heads(self) -> bool:
        """Whether row ``i``'s target lives in the space of participant ``owners[i]`` (``heads``
        or ``multi-teacher``: a student with one head per participant)."""
        return Merge(self.merge).per_owner_spaces
