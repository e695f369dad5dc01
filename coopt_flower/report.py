"""One round's report: the Markdown (``report.md``) and its plots, drawn from its manifest.

Both are pure functions of the round's :class:`~coopt_flower.manifest.Manifest`, so a
published round's report can be rendered again without rerunning it.
"""

from __future__ import annotations

import logging
from coopt_flower.bad_samples import render_bad_samples
from coopt_flower.manifest import Manifest, ParticipantRecord
from coopt_flower.merges import Merge
from coopt_flower.scores import HIGHER_IS_BETTER

log = logging.getLogger(__name__)


def round_plots(manifest: Manifest) -> dict[str, bytes]:
    """The round's plots (:func:`coopt_flower.plots.round_plots`): file name -> PNG bytes, to
    be published with the dataset.

    A plot that cannot be drawn costs only the pictures, never the round: it is logged and no
    plot is returned (:func:`render_report` links the plots the manifest names).
    """
    from coopt_flower import plots

    try:
        return plots.round_plots(manifest)
    except Exception as error:  # pictures are a convenience; the dataset must not depend on them
        log.warning("round %s: plots not drawn (%s); the report has no pictures", manifest.round, error)
        return {}


def render_report(manifest: Manifest) -> str:
    """A short Markdown report of one round (``report.json`` holds the same, as JSON)."""
    lines = _header(manifest)
    lines += _participant_table(manifest)
    lines += _score_table(manifest)
    lines += _hosting(manifest.participants)
    lines += _plot_links(manifest.plots)
    lines += _failure_table(manifest.failures)
    lines += render_bad_samples(manifest.bad_samples or [])
    missing = manifest.missing_samples
    lines += ["", f"Samples missing from the dataset: {missing}"
              + (" (ids in report.json `missing_sample_ids`)" if missing else "")]
    lines += [
        "",
        "Residuals are the fraction of the reference's variance on S that the participant's "
        "aligned targets leave unexplained (1 - R^2; 0 is perfect).",
        "",
        "| step | time |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {seconds:.1f} s |" for step, seconds in manifest.timings.items()]
    return "\n".join(lines) + "\n"


def _header(m: Manifest) -> list[str]:
    """The report's title and its list of what the round was."""
    lines = [
        f"# CoOpt round {m.round}: optimized dataset",
        "",
        f"- source: `{m.source}`, {m.num_samples} samples, target dim {m.target_dim} ({m.target_dtype})",
        f"- shared subset: {m.shared_size} images "
        f"({100.0 * m.shared_size / max(m.num_samples, 1):.2f}% of the data)",
        f"- reference prototype ({_score_phrase(m.reference_score)}): "
        f"**{m.reference}** (`{m.reference_prototype}`)",
        f"- merge: `{m.merge}`",
        f"- partition of the samples among participants: `{m.settings.get('partitioner', 'iid')}`",
        f"- dataset: `{m.dataset_path}`",
    ]
    if m.merge == Merge.HEADS:
        lines.append(f"- merge `heads`: targets stay in each participant's own space (no alignment, "
                     f"residuals 0); a student exposes {m.exposed_head}'s head")
    elif m.merge == Merge.MULTI_TEACHER:
        lines.append(f"- merge `multi-teacher`: targets stay in each participant's own space; the "
                     f"student learns every participant's head on every sample (the others' targets "
                     f"predicted by maps between every pair, fitted on S); a student exposes "
                     f"{m.exposed_head}'s head")
    if m.page_assignment == "steal":
        stolen = ", ".join(f"{p.name} {p.pages_stolen}" for p in m.participants)
        lines.append(f"- pages: work stealing (`page-assignment=steal`), so who encoded a sample "
                     f"depends on timing; pages taken from others' queues: {stolen}")
    refined = [p for p in m.participants if p.refined_digest]
    if m.student is not None and refined:
        heads = ", ".join(f"{p.name} `{p.refined_digest}` ({p.refine_seconds:.1f} s)" for p in refined)
        lines.append(f"- policy `distill`: every participant refined its own prototype towards the previous "
                     f"round's student `{m.student.digest}` ({m.student.arch}) and encoded with it; refined "
                     f"heads (the participants' prototype versions): {heads}")
    elif m.student is not None:
        value = "-" if m.student.uniform_value is None else f"{m.student.uniform_value:.4f}"
        lines.append(f"- refined student `{m.student.digest}` ({m.student.arch}), uniform value "
                     f"{value}, policy `{m.refinement}`")
    return lines + [""]


def _participant_table(m: Manifest) -> list[str]:
    lines = [
        "| participant | node | prototype | encodes with | dim | samples | uniform value | residual on S | "
        "held-out residual | alpha / shrinkage | encode img/s |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in m.participants:
        ref = " (reference)" if p.name == m.reference else ""
        rank = f", rank {p.rank}" if p.rank else ""
        lines.append(
            f"| {p.name}{ref} | {p.node_id} | `{p.prototype}` | {p.encoder} | {p.output_dim} | "
            f"{p.num_samples} | {p.uniform_value:.4f} | {p.fit_residual:.3f} | "
            f"{p.holdout_residual:.3f} | {p.alpha:g}{rank} | {p.images_per_second:.1f} |")
    return lines


def _hosting(participants: list[ParticipantRecord]) -> list[str]:
    """A line saying which node hosted which participants, when a node hosted several."""
    by_node: dict[int, list[str]] = {}
    for p in participants:
        by_node.setdefault(p.node_id, []).append(p.name)
    if all(len(names) == 1 for names in by_node.values()):
        return []
    hosted = "; ".join(f"node {node}: {', '.join(names)}" for node, names in by_node.items())
    return ["", f"Participants per node (a node hosts several when the federation has fewer nodes "
                f"than prototypes): {hosted}"]


def _plot_links(names: list[str]) -> list[str]:
    from coopt_flower.plots import ROUND_PLOTS

    return ["", *(f"![{ROUND_PLOTS[name][0]}]({name})" for name in names if name in ROUND_PLOTS)]


def _score_phrase(score: str) -> str:
    return f"{'highest' if HIGHER_IS_BETTER.get(score, False) else 'lowest'} {score} score" \
        if score != "uniform" else "lowest uniform value"


def _score_table(m: Manifest) -> list[str]:
    """Every reference score of every prototype (and candidate), the deciding one marked."""
    scores = m.scores
    if not scores:
        return []
    names = sorted(next(iter(scores.values())))
    header = [f"{s}{' (picks)' if s == m.reference_score else ''} {'↑' if HIGHER_IS_BETTER.get(s) else '↓'}"
              for s in scores]
    lines = ["", "Reference scores on S (↑ higher is better, ↓ lower is better):", "",
             "| prototype | " + " | ".join(header) + " |", "|---|" + "---:|" * len(scores)]
    for name in names:
        ref = " (reference)" if name == m.reference else ""
        lines.append(f"| {name}{ref} | " + " | ".join(f"{scores[s][name]:.4f}" for s in scores) + " |")
    return lines


def _failure_table(failures: list[dict]) -> list[str]:
    if not failures:
        return []
    lines = ["", "Refused replies and lost participants (nothing of a refused reply is merged):", "",
             "| participant | step | reason | samples affected | action |", "|---|---|---|---:|---|"]
    return lines + [f"| {f['participant']} | {f['step']} | {f['reason']} | {f['samples_affected']} | "
                    f"{f['action'] or '-'} |" for f in failures]
