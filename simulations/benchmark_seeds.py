"""Per-seed full-probe accuracy of every row of a benchmark results file, and each row's
difference to a reference row on the seeds both ran (the report itself gives means).

    python -m simulations.benchmark_seeds simulations/results/benchmark/benchmark.json \
        --reference 'CoOpt (aligned)' --out simulations/results/benchmark/per_seed.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def per_seed(results: dict, student: str) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Row -> seed -> full probe accuracy in % (the ``single:*`` rows as one ``best single``
    row), and seed -> the prototype of that seed's single row."""
    rows: dict[str, dict[str, float]] = {}
    singles: dict[str, str] = {}
    for seed, entry in results["seeds"].items():
        for name, run in entry["runs"].get(student, {}).items():
            if "full_probe_acc" not in run:
                continue
            if name.startswith("single:"):
                singles[seed], name = name[len("single:"):], "best single"
            rows.setdefault(name, {})[seed] = 100 * run["full_probe_acc"]
    return rows, singles


def render(results: dict, student: str, reference: str) -> str:
    rows, singles = per_seed(results, student)
    seeds = sorted(results["seeds"], key=int)
    lines = [f"Per-seed full probe (%), {student}; difference to `{reference}` on the seeds both ran.", "",
             "| row | " + " | ".join(f"seed {s}" for s in seeds) + f" | - {reference}, per seed | mean |",
             "|---|" + "---:|" * len(seeds) + "---|---:|"]
    ref = rows.get(reference, {})
    for name, values in rows.items():
        cells = [(f"{values[s]:.2f}" + (f" ({singles[s]})" if name == "best single" else "")) if s in values else ""
                 for s in seeds]
        diffs = [values[s] - ref[s] for s in seeds if s in values and s in ref] if name != reference else []
        diff = " / ".join(f"{d:+.2f}" for d in diffs)
        mean = f"{statistics.mean(diffs):+.2f}" if diffs else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff} | {mean} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--student", default="small-cnn")
    parser.add_argument("--reference", default="CoOpt (aligned)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    text = render(json.loads(Path(args.results).read_text()), args.student, args.reference)
    if args.out:
        Path(args.out).write_text(f"`python -m simulations.benchmark_seeds {args.results} --out {args.out}`\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
