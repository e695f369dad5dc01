"""One round's report: its summary (``report.json``, the manifest's body), the Markdown
(``report.md``) and its plots."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coopt_flower.atomic import write_bytes_atomic
from coopt_flower.bad_samples import render_bad_samples

if TYPE_CHECKING:
    from coopt_flower.alignment import AlignmentPlan

log = logging.getLogger(__name__)


def round_summary(round_, *, num_samples: int, missing) -> dict[str, Any]:
    """The summary of a finished :class:`~coopt_flower.round.CoOptRound`: what ``report.md``
    renders, ``report.json`` stores and the manifest records (besides ids and checksums)."""
    s, plan, student = round_.settings, round_.alignment, round_.student
    if plan.reference == "student":
        reference_prototype = f"student:{student[1].get('digest')}"
    else:
        ref = next(p for p in round_.participants if p.name == plan.reference)
        reference_prototype = f"student:{student[1].get('digest')}" if ref.encoder == "student" \
            else ref.prototype
    failed = {f.participant for f in round_.failures}
    return {
        "round": round_.server_round,
        "source": round_.source.spec,
        "num_samples": num_samples,
        "target_dim": s.target_dim,
        "target_dtype": s.target_dtype,
        "shared_size": int(len(round_.shared_ids)),
        "seed": s.seed,
        "reference": plan.reference,
        "reference_prototype": reference_prototype,
        "merge": round_.merge,
        **({"exposed_head": exposed_head(plan, [p.name for p in round_.participants])}
           if round_.merge == "heads" else {}),
        "reference_score": plan.reference_score,
        "scores": plan.scores,
        "refinement": s.refinement,
        "page_assignment": s.page_assignment,
        "student": None if student is None else {
            "digest": student[1].get("digest"), "arch": student[1].get("arch"),
            "uniform_value": plan.uniform_values.get("student"),
        },
        "dataset_path": str(round_.round_dir),
        "settings": s.as_dict(),
        "failures": [f.as_dict() for f in round_.failures],
        "missing_samples": int(len(missing)),
        "missing_sample_ids": missing.tolist(),
        "timings": dict(round_.timings),
        "participants": [
            {
                "name": p.name, "node_id": p.node_id, "slot": p.slot,
                "partition_id": p.partition_id, "prototype": p.prototype,
                "output_dim": p.output_dim, "image_size": p.image_size, "device": p.device,
                "num_samples": int(p.num_samples),
                "pages_stolen": round_.pages_stolen(p.name),
                "uniform_value": round_.own_values[p.name],
                "encoder": p.encoder,
                "fit_residual": plan.maps[p.name].fit_residual,
                "holdout_residual": plan.maps[p.name].holdout_residual,
                "alpha": plan.maps[p.name].alpha,
                "rank": plan.maps[p.name].rank,
                "images_per_second": p.encoded_images / p.encode_seconds if p.encode_seconds else 0.0,
                "shared_pixels_sha256": p.shared_sha256,
                "local_data": p.local_data, "local_samples": p.local_count,
                "failed": p.name in failed,
            }
            for p in round_.participants
        ],
    }


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


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s"


def _hosting(participants: list[dict[str, Any]]) -> list[str]:
    """A line saying which node hosted which participants, when a node hosted several."""
    by_node: dict[Any, list[str]] = {}
    for p in participants:
        by_node.setdefault(p.get("node_id", "?"), []).append(p["name"])
    if all(len(names) == 1 for names in by_node.values()):
        return []
    hosted = "; ".join(f"node {node}: {', '.join(names)}" for node, names in by_node.items())
    return ["", f"Participants per node (a node hosts several when the federation has fewer nodes "
                f"than prototypes): {hosted}"]


def write_round_plots(directory: str | Path, summary: dict[str, Any]) -> list[str]:
    """Write the round's plots (:func:`coopt_flower.plots.round_plots`) into ``directory``.

    Called on the round's temporary directory, so the plots are published with the dataset.
    A plot that cannot be drawn costs only the pictures, never the round: it is logged and
    the names of the plots written are returned (for :func:`render_report` to link).
    """
    from coopt_flower.plots import round_plots

    try:
        plots = round_plots(summary)
    except Exception as error:  # pictures are a convenience; the dataset must not depend on them
        log.warning("round %s: plots not drawn (%s); the report has no pictures", summary.get("round"), error)
        return []
    for name, png in plots.items():
        write_bytes_atomic(Path(directory) / name, png)
    return list(plots)


def _plot_links(names: list[str]) -> list[str]:
    from coopt_flower.plots import ROUND_PLOTS

    return ["", *(f"![{ROUND_PLOTS[name][0]}]({name})" for name in names if name in ROUND_PLOTS)]


def _rank(participant: dict[str, Any]) -> str:
    return f", rank {participant['rank']}" if participant.get("rank") else ""


def _score_phrase(score: str) -> str:
    from coopt_flower.scores import HIGHER_IS_BETTER

    return f"{'highest' if HIGHER_IS_BETTER.get(score, False) else 'lowest'} {score} score" \
        if score != "uniform" else "lowest uniform value"


def _score_table(summary: dict[str, Any]) -> list[str]:
    """Every reference score of every prototype (and candidate), the deciding one marked."""
    scores = summary.get("scores") or {}
    if not scores:
        return []
    from coopt_flower.scores import HIGHER_IS_BETTER

    names = sorted(next(iter(scores.values())))
    chosen = summary.get("reference_score", "uniform")
    header = [f"{s}{' (picks)' if s == chosen else ''} {'↑' if HIGHER_IS_BETTER.get(s) else '↓'}"
              for s in scores]
    lines = ["", "Reference scores on S (↑ higher is better, ↓ lower is better):", "",
             "| prototype | " + " | ".join(header) + " |", "|---|" + "---:|" * len(scores)]
    for name in names:
        ref = " (reference)" if name == summary["reference"] else ""
        lines.append(f"| {name}{ref} | " + " | ".join(f"{scores[s][name]:.4f}" for s in scores) + " |")
    return lines


def render_report(summary: dict[str, Any]) -> str:
    """A short Markdown report of one round (the summary is also stored as JSON)."""
    lines = [
        f"# CoOpt round {summary['round']}: optimized dataset",
        "",
        f"- source: `{summary['source']}`, {summary['num_samples']} samples, "
        f"target dim {summary['target_dim']} ({summary['target_dtype']})",
        f"- shared subset: {summary['shared_size']} images "
        f"({100.0 * summary['shared_size'] / max(summary['num_samples'], 1):.2f}% of the data)",
        f"- reference prototype ({_score_phrase(summary.get('reference_score', 'uniform'))}): "
        f"**{summary['reference']}** (`{summary['reference_prototype']}`)",
        f"- merge: `{summary.get('merge', 'align-ridge')}`",
        f"- dataset: `{summary['dataset_path']}`",
        "",
    ]
    if summary.get("merge") == "heads":
        lines[-1:-1] = [f"- merge `heads`: targets stay in each participant's own space (no "
                        f"alignment, residuals 0); a student exposes {summary['exposed_head']}'s head"]
    if summary.get("page_assignment") == "steal":
        stolen = ", ".join(f"{p['name']} {p.get('pages_stolen', 0)}" for p in summary["participants"])
        lines[-1:-1] = [f"- pages: work stealing (`page-assignment=steal`), so who encoded a sample "
                        f"depends on timing; pages taken from others' queues: {stolen}"]
    student = summary.get("student")
    if student:
        lines[-1:-1] = [f"- refined student `{student['digest']}` ({student['arch']}), uniform value "
                        f"{student['uniform_value']:.4f}, policy `{summary.get('refinement')}`"]
    lines += [
        "| participant | node | prototype | encodes with | dim | samples | uniform value | residual on S | "
        "held-out residual | alpha / shrinkage | encode img/s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in summary["participants"]:
        ref = " (reference)" if p["name"] == summary["reference"] else ""
        lines.append(
            f"| {p['name']}{ref} | {p.get('node_id', '?')} | `{p['prototype']}` | {p.get('encoder', 'own')} | {p['output_dim']} | "
            f"{p['num_samples']} | {p['uniform_value']:.4f} | {p['fit_residual']:.3f} | "
            f"{p['holdout_residual']:.3f} | {p['alpha']:g}{_rank(p)} | {p['images_per_second']:.1f} |"
        )
    lines += _score_table(summary)
    lines += _hosting(summary["participants"])
    lines += _plot_links(summary.get("plots", []))
    failures = summary.get("failures", [])
    if failures:
        lines += ["", "Refused replies and lost participants (nothing of a refused reply is merged):", "",
                  "| participant | step | reason | samples affected | action |",
                  "|---|---|---|---:|---|"]
        lines += [f"| {f['participant']} | {f['step']} | {f['reason']} | {f['samples_affected']} | "
                  f"{f['action'] or '-'} |" for f in failures]
    lines += render_bad_samples(summary)
    missing = summary.get("missing_samples", 0)
    lines += ["", f"Samples missing from the dataset: {missing}"
              + (f" (ids in report.json `missing_sample_ids`)" if missing else "")]
    lines += [
        "",
        "Residuals are the fraction of the reference's variance on S that the participant's "
        "aligned targets leave unexplained (1 - R^2; 0 is perfect).",
        "",
        "| step | time |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {_fmt_seconds(sec)} |" for step, sec in summary["timings"].items()]
    return "\n".join(lines) + "\n"
