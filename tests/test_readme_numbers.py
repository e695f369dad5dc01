"""Every measured number the README gives is in a committed results file (none typed by hand).

A decimal number in README.md (``87.4``, ``3.73``, ``-2.5359``) must appear, as written, in a
file under ``simulations/results`` (the Markdown, JSON and text the runs wrote). This is a
textual trace: it cannot tell which file a number should come from, but a number no run wrote
down fails it. Integers are not checked (sample counts, ports, dimensions are configuration).
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "simulations" / "results"
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
# Decimals in the README that are not measurements: the paper's arXiv id.
NOT_MEASURED = {"2505.14117"}


def results_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(RESULTS.rglob("*"))
                     if p.is_file() and p.suffix in (".md", ".json", ".txt"))


def untraced_numbers(readme: str, corpus: str) -> dict[str, list[str]]:
    """README section title -> its decimal numbers that no results file holds."""
    out: dict[str, list[str]] = {}
    for section in re.split(r"(?m)^## ", readme):
        title = section.split("\n", 1)[0].strip()
        missing = sorted({n for n in DECIMAL.findall(section) if n not in NOT_MEASURED and n not in corpus})
        if missing:
            out[title] = missing
    return out


def test_the_check_finds_a_number_no_run_wrote():
    assert untraced_numbers("## A\nCoOpt 87.4 vs 12.34\n## B\nv 1.42", "acc 87.4\n") == \
        {"A": ["12.34"], "B": ["1.42"]}


def test_every_decimal_in_the_readme_is_in_a_committed_results_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert untraced_numbers(readme, results_text()) == {}
