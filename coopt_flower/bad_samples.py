"""Samples whose image cannot be decoded: the data's fault, listed, never a node's failure.

A round keeps one :class:`BadSampleLedger`. It knows the samples a pre-flight scan found
(``verify-images``) and records what the platform finds while reading the shared subset
(:mod:`coopt_flower.engine.samples` draws S again without them) and what participants report
while encoding their pages. Under ``on-bad-sample = "skip"`` (default)
bad samples are left out of the dataset and listed in the manifest and report
(``bad_samples``: id, file name, the decoder's one-line reason, who found it); under
``"fail"`` the first one stops the run with one line naming the file.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np

from coopt_flower.data import BadSample, ImageSource, SampleDecodeError

log = logging.getLogger(__name__)

ON_BAD_SAMPLE_POLICIES = ("skip", "fail")
REPORT_ROWS = 20  # bad samples listed in report.md; all of them are in report.json / manifest


class BadSampleError(SampleDecodeError):
    """``on-bad-sample = "fail"`` and an image cannot be decoded; names the file."""

    def __init__(self, bad: BadSample, spec: str = "") -> None:
        super().__init__(bad, spec)
        self.args = (f"{self.args[0]}: fix or remove the file, or set on-bad-sample=skip to "
                     "leave such images out",)


class BadSampleLedger:
    """The bad samples of one round, by global sample id.

    Parameters
    ----------
    policy : str
        ``"skip"`` or ``"fail"``.
    source : ImageSource
        The platform's data; a :class:`coopt_flower.data.ScreenedSource` brings the samples a
        pre-flight scan found.
    """

    def __init__(self, policy: str, source: ImageSource) -> None:
        if policy not in ON_BAD_SAMPLE_POLICIES:
            raise ValueError(f"on-bad-sample must be one of {ON_BAD_SAMPLE_POLICIES}, got {policy!r}")
        self.policy, self.source = policy, source
        self.entries: dict[int, dict[str, Any]] = {}
        known = list(getattr(source, "bad_samples", []))
        if known and policy == "fail":
            raise BadSampleError(known[0], source.spec)
        for bad in known:
            self.entries[bad.sample_id] = dict(bad.as_dict(), found_by="verify-images")

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.entries), dtype=np.int64)

    def without_known(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` less the bad samples known so far (``ids`` itself when there are none)."""
        if not self.entries:
            return ids
        return ids[~np.isin(ids, self.ids())]

    def record(self, entries: Iterable[dict[str, Any]], *, base: int = 0, reported_by: str,
               local: bool = False) -> None:
        """Add bad samples a participant (or the platform) reported; ``base`` maps a node's
        local index to the global id. Raises :class:`BadSampleError` under ``"fail"``."""
        for entry in entries:
            bad = BadSample(int(entry["id"]) + base, str(entry.get("name", "")), str(entry.get("reason", "")))
            if self.policy == "fail":
                spec = f"{reported_by}'s local data" if local else self.source.spec
                raise BadSampleError(bad, spec)
            log.warning("  sample %d (%s) cannot be decoded, left out: %s", bad.sample_id, bad.name, bad.reason)
            self.entries[bad.sample_id] = dict(bad.as_dict(), found_by=reported_by,
                                               **({"local": True} if local else {}))

    # ------------------------------------------------------------------ report
    def summary(self) -> dict[str, Any]:
        """The report's and manifest's ``bad_samples`` (sorted by id) and their count."""
        return {"num_bad_samples": len(self.entries),
                "bad_samples": [self.entries[i] for i in sorted(self.entries)]}


def render_bad_samples(bad: list[dict[str, Any]]) -> list[str]:
    """Markdown lines listing a round's bad samples (none when there are none)."""
    if not bad:
        return []
    lines = ["", f"Images that cannot be decoded, left out of the dataset: {len(bad)}"
             + (f" (first {REPORT_ROWS} below; all in report.json `bad_samples`)" if len(bad) > REPORT_ROWS else ""),
             "", "| sample id | file | reason | found by |", "|---:|---|---|---|"]
    lines += [f"| {b['id']} | `{b['name']}` | {b['reason']} | {b.get('found_by', '')} |" for b in bad[:REPORT_ROWS]]
    return lines
