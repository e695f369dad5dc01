"""Multi-round bookkeeping: the server checkpoint, resuming, and the summary across rounds.

``<output-dir>/checkpoint.json`` records every finished step (a round's dataset published, its
student trained), written atomically after each. A platform that is killed and started again
with the same run config and output directory skips what the checkpoint says is done and
redoes only the unfinished round; a half-written round leaves only a hidden temporary
directory, which is removed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from coopt_flower.atomic import write_bytes_atomic, write_text_atomic
from coopt_flower.dataset_format import MANIFEST_FILE, verify_dataset

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
SUMMARY_MD = "summary.md"


def round_dir(output_dir: str | Path, server_round: int) -> Path:
    return Path(output_dir) / f"round-{server_round:03d}"


def student_dir(output_dir: str | Path, server_round: int) -> Path:
    return Path(output_dir) / "students" / f"round-{server_round:03d}"


def load_checkpoint(output_dir: str | Path) -> dict[str, Any]:
    """The server checkpoint (``{"rounds": {}}`` for a new run)."""
    path = Path(output_dir) / CHECKPOINT_FILE
    if not path.exists():
        return {"rounds": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def save_checkpoint(output_dir: str | Path, checkpoint: dict[str, Any]) -> None:
    write_text_atomic(Path(output_dir) / CHECKPOINT_FILE, json.dumps(checkpoint, indent=2, sort_keys=True))


def remove_stale_temporaries(output_dir: str | Path, server_round: int) -> list[Path]:
    """Delete hidden temporary directories an interrupted write of this round left behind."""
    name = round_dir(output_dir, server_round).name
    stale = [p for p in Path(output_dir).glob(f".{name}.tmp-*")] + \
            [p for p in Path(output_dir).glob(f".{name}.old-*")]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def recover_published_round(output_dir: str | Path, server_round: int) -> dict[str, Any] | None:
    """A round published before the checkpoint recorded it (killed in between): its summary.

    Publishing is atomic, so a round directory with a manifest is complete; its checksums are
    verified before it is trusted.
    """
    path = round_dir(output_dir, server_round)
    if not (path / MANIFEST_FILE).exists():
        return None
    verify_dataset(path)
    return json.loads((path / "report.json").read_text(encoding="utf-8"))


def round_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint and the summary keep of one round."""
    return {
        "dataset": summary["dataset_path"],
        "reference": summary["reference"],
        "reference_prototype": summary["reference_prototype"],
        "student_in": summary.get("student"),
        "participants": [
            {k: p[k] for k in ("name", "prototype", "encoder", "uniform_value", "holdout_residual",
                               "num_samples") if k in p}
            for p in summary["participants"]
        ],
        "failures": len(summary.get("failures", [])),
        "missing_samples": summary.get("missing_samples", 0),
        "student": None,
    }


def render_summary(checkpoint: dict[str, Any]) -> str:
    """Markdown summary across rounds: uniform values, reference, student accuracy."""
    rounds = sorted(checkpoint["rounds"].items(), key=lambda kv: int(kv[0]))
    lines = [
        "# CoOpt rounds",
        "",
        f"Refinement policy: `{checkpoint.get('refinement', '?')}`",
        "",
        "| round | reference | student in (uniform value) | participants (uniform value, encoder) | "
        "student probe acc | student train s |",
        "|---:|---|---|---|---:|---:|",
    ]
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
    return "\n".join(lines) + "\n"


def write_summary(output_dir: str | Path, checkpoint: dict[str, Any]) -> None:
    """``summary.md`` and, next to it, the plot across rounds it links."""
    from coopt_flower.plots import ROUNDS_PNG, rounds_plot

    text = render_summary(checkpoint)
    try:
        write_bytes_atomic(Path(output_dir) / ROUNDS_PNG, rounds_plot(checkpoint))
        text += f"\n![Student probe accuracy and reference uniform value per round]({ROUNDS_PNG})\n"
    except Exception as error:  # pictures are a convenience; the summary must not depend on them
        log.warning("plot across rounds not drawn (%s)", error)
    write_text_atomic(Path(output_dir) / SUMMARY_MD, text)
