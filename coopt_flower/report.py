"""The Markdown report of one round (its summary is also stored as ``report.json``)."""

from __future__ import annotations

from typing import Any

from coopt_flower.bad_samples import render_bad_samples


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.1f} s"


def render_report(summary: dict[str, Any]) -> str:
    """A short Markdown report of one round (the summary is also stored as JSON)."""
    lines = [
        f"# CoOpt round {summary['round']}: optimized dataset",
        "",
        f"- source: `{summary['source']}`, {summary['num_samples']} samples, "
        f"target dim {summary['target_dim']} ({summary['target_dtype']})",
        f"- shared subset: {summary['shared_size']} images "
        f"({100.0 * summary['shared_size'] / max(summary['num_samples'], 1):.2f}% of the data)",
        f"- reference prototype (lowest uniform value): **{summary['reference']}** "
        f"(`{summary['reference_prototype']}`)",
        f"- dataset: `{summary['dataset_path']}`",
        "",
    ]
    student = summary.get("student")
    if student:
        lines[-1:-1] = [f"- refined student `{student['digest']}` ({student['arch']}), uniform value "
                        f"{student['uniform_value']:.4f}, policy `{summary.get('refinement')}`"]
    lines += [
        "| participant | prototype | encodes with | dim | samples | uniform value | residual on S | "
        "held-out residual | ridge alpha | encode img/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in summary["participants"]:
        ref = " (reference)" if p["name"] == summary["reference"] else ""
        lines.append(
            f"| {p['name']}{ref} | `{p['prototype']}` | {p.get('encoder', 'own')} | {p['output_dim']} | "
            f"{p['num_samples']} | {p['uniform_value']:.4f} | {p['fit_residual']:.3f} | "
            f"{p['holdout_residual']:.3f} | {p['alpha']:g} | {p['images_per_second']:.1f} |"
        )
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
