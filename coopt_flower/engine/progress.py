"""A run's progress across rounds: what is finished, so a stopped platform resumes.

``<output-dir>/progress.json`` records every finished step (a round's dataset published, its
student trained), written atomically after each. A platform that is killed and started again
with the same run config and output directory skips what the progress file says is done and
redoes only the unfinished round; a half-written round leaves only a hidden temporary
directory, which is removed. (Runs written before this file was named so keep theirs as
``checkpoint.json``, which is read when there is no ``progress.json``. A *student*
checkpoint is something else: the weights in ``students/round-00r/last.pt``.)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from coopt_flower.atomic import write_bytes_atomic, write_text_atomic
from coopt_flower.dataset_format import MANIFEST_FILE, verify_dataset
from coopt_flower.manifest import Manifest

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
LEGACY_PROGRESS_FILE = "checkpoint.json"  # the name before progress.json
SUMMARY_MD = "summary.md"


def round_dir(output_dir: str | Path, server_round: int) -> Path:
    return Path(output_dir) / f"round-{server_round:03d}"


def student_dir(output_dir: str | Path, server_round: int) -> Path:
    return Path(output_dir) / "students" / f"round-{server_round:03d}"


def load_progress(output_dir: str | Path) -> dict[str, Any]:
    """The run's progress (``{"rounds": {}}`` for a new run)."""
    for name in (PROGRESS_FILE, LEGACY_PROGRESS_FILE):
        path = Path(output_dir) / name
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    return {"rounds": {}}


def save_progress(output_dir: str | Path, progress: dict[str, Any]) -> None:
    write_text_atomic(Path(output_dir) / PROGRESS_FILE, json.dumps(progress, indent=2, sort_keys=True))


def remove_stale_temporaries(output_dir: str | Path, server_round: int) -> list[Path]:
    """Delete hidden temporary directories an interrupted write of this round left behind."""
    name = round_dir(output_dir, server_round).name
    stale = [p for p in Path(output_dir).glob(f".{name}.tmp-*")] + \
            [p for p in Path(output_dir).glob(f".{name}.old-*")]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def recover_published_round(output_dir: str | Path, server_round: int) -> Manifest | None:
    """A round published before the progress file recorded it (killed in between).

    Publishing is atomic, so a round directory with a manifest is complete; its checksums are
    verified before it is trusted.
    """
    path = round_dir(output_dir, server_round)
    if not (path / MANIFEST_FILE).exists():
        return None
    manifest = verify_dataset(path)
    manifest.dataset_path = str(path)
    return manifest


def round_entry(manifest: Manifest) -> dict[str, Any]:
    """What the progress file and the summary keep of one round."""
    student = manifest.student
    return {
        "dataset": manifest.dataset_path,
        "reference": manifest.reference,
        "reference_prototype": manifest.reference_prototype,
        "student_in": None if student is None else {"digest": student.digest, "arch": student.arch,
                                                   "uniform_value": student.uniform_value},
        "participants": [
            {"name": p.name, "prototype": p.prototype, "encoder": p.encoder, "uniform_value": p.uniform_value,
             "holdout_residual": p.holdout_residual, "num_samples": p.num_samples,
             **({"refined_digest": p.refined_digest, "refine_seconds": p.refine_seconds}
                if p.refined_digest else {})}
            for p in manifest.participants
        ],
        "failures": len(manifest.failures),
        "missing_samples": manifest.missing_samples,
        "student": None,
    }


def render_summary(progress: dict[str, Any]) -> str:
    """Markdown summary across rounds: uniform values, reference, student accuracy."""
    rounds = sorted(progress["rounds"].items(), key=lambda kv: int(kv[0]))
    lines = [
        "# CoOpt rounds",
        "",
        f"Refinement policy: `{progress.get('refinement', '?')}`",
        "",
        "| round | reference | student in (uniform value) | participants (uniform value, encoder) | "
        "student probe acc | student train s |",
        "|---:|---|---|---|---:|---:|",
    ]
    changes = prototype_changes(progress)
    for key, entry in rounds:
        student_in = entry.get("student_in")
        s_in = f"`{student_in['digest']}` ({student_in['uniform_value']:.4f})" if student_in else "-"
        parts = ", ".join(f"{p['name']} {p['uniform_value']:.3f} {p.get('encoder', 'own')}"
                          for p in entry["participants"])
        trained = entry.get("student") or {}
        acc = trained.get("probe_accuracy")
        acc_text = "-" if acc is None else f"{acc:.4f}"
        seconds = "-" if not trained else f"{trained['train_seconds']:.1f}"
        lines.append(f"| {key} | `{entry['reference_prototype']}` | {s_in} | {parts} | "
                     f"{acc_text} | {seconds} |")
    if changes:
        lines += ["", "Prototypes that changed between rounds (the round re-scored, re-selected the reference "
                  "and re-aligned; the student probe columns above show what it did to the data):", ""]
        lines += [f"- round {r}: {change}" for r, change in changes]
    return "\n".join(lines) + "\n"


def prototype_changes(progress: dict[str, Any]) -> list[tuple[int, str]]:
    """``(round, what changed)`` for every participant whose prototype differs from its previous
    round's, one who joined and one who left (by participant name)."""
    rounds = sorted(((int(k), v) for k, v in progress["rounds"].items()), key=lambda kv: kv[0])
    out = []
    for (_, before), (r, after) in zip(rounds, rounds[1:]):
        old = {p["name"]: p["prototype"] for p in before["participants"]}
        new = {p["name"]: p["prototype"] for p in after["participants"]}
        for name in sorted(old.keys() | new.keys()):
            if name not in new:
                out.append((r, f"{name} left (`{old[name]}`)"))
            elif name not in old:
                out.append((r, f"{name} joined with `{new[name]}`"))
            elif old[name] != new[name]:
                out.append((r, f"{name} changed `{old[name]}` -> `{new[name]}`"))
    return out


def worth_plotting(progress: dict[str, Any]) -> bool:
    """Whether the plot across rounds shows anything: two rounds or more, or a probed student."""
    rounds = progress.get("rounds", {})
    probed = any((entry.get("student") or {}).get("probe_accuracy") is not None for entry in rounds.values())
    return len(rounds) >= 2 or probed


def write_summary(output_dir: str | Path, progress: dict[str, Any]) -> None:
    """``summary.md`` and, next to it, the plot across rounds it links."""
    from coopt_flower.plots import ROUNDS_PNG, rounds_plot

    text = render_summary(progress)
    if not worth_plotting(progress):  # one round and no student: the plot would be one dot
        write_text_atomic(Path(output_dir) / SUMMARY_MD, text)
        return
    try:
        picture = rounds_plot(progress)
    except Exception as error:  # pictures are a convenience; the summary must not depend on them
        log.warning("plot across rounds not drawn (%s)", error)
    else:  # drawn: writing it is like writing any other file (a full disk is an error)
        write_bytes_atomic(Path(output_dir) / ROUNDS_PNG, picture)
        text += f"\n![Student probe accuracy and reference uniform value per round]({ROUNDS_PNG})\n"
    write_text_atomic(Path(output_dir) / SUMMARY_MD, text)
