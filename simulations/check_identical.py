"""Check that a refactor left the product's output unchanged, byte for byte.

A tiny `flwr run .` (two prototypes, 200 Fashion-MNIST images) is run in local simulation and
the sha256 of its dataset's ``targets.npy``, ``sample_ids.npy`` and ``owners.npy`` is compared
with the checksums recorded in ``simulations/results/tiny_run_checksums.json``.

Usage::

    python -m simulations.check_identical            # run the tiny run, compare
    python -m simulations.check_identical --record   # run it and record its checksums
    python -m simulations.check_identical --round-dir DIR   # compare an existing round
    python -m simulations.check_identical --against BEFORE --round-dir AFTER
                                                     # two rounds of any run, e.g. the default
                                                     # job before and after a change

The recorded checksums were made on this project's CPU machines; torch's CPU kernels can round
differently on another processor family (and a simulated ClientApp may use another number of
threads than an in-process round), in which case compare like with like: run the same job on
a commit known good and on the change, on one machine, and compare them with ``--against``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from coopt_flower.atomic import write_text_atomic
from coopt_flower.dataset_format import DATA_FILES, sha256_file

RECORD = Path(__file__).resolve().parent / "results" / "tiny_run_checksums.json"

# The tiny run: 1280-d and 1024-d prototypes, small pages so the round has several waves.
TINY_RUN_CONFIG = {
    "prototypes": "efficientnet-lite0,onnx:open-nsfw",
    "num-samples": 200, "shared-size": 32, "image-size": 32, "target-dim": 64,
    "page-size": 40, "seed": 5,
}
TINY_RUN_SUPERNODES = 2


def dataset_checksums(round_dir: str | Path) -> dict[str, str]:
    """sha256 of the files that hold a dataset's content."""
    return {name: sha256_file(Path(round_dir) / name) for name in DATA_FILES}


def run_tiny(out_dir: Path, flwr_home: Path | None = None):
    """Run the tiny `flwr run .`; returns the local_run result and the round directory."""
    from simulations.local_run import run_local_simulation

    config = dict(TINY_RUN_CONFIG, **{"output-dir": str(out_dir)})
    run = run_local_simulation(config, num_supernodes=TINY_RUN_SUPERNODES, timeout_s=600,
                               echo=False, flwr_home=flwr_home)
    return run, out_dir / "round-001"


def compare(round_dir: str | Path) -> list[str]:
    """Differences between a round's checksums and the recorded ones (empty: identical).

    Besides the checksums recorded on the project's first machines, the record lists variants
    a known-good commit produced elsewhere (``variants``: torch's CPU kernels round differently
    on another processor family, and there a simulated ClientApp's thread count changes the
    rounding too); a round identical to any of them is identical. Differences are reported
    against the first record.
    """
    record = json.loads(RECORD.read_text())
    actual = dataset_checksums(round_dir)
    known = [record["sha256"], *(v["sha256"] for v in record.get("variants", []))]
    if any(all(k[name] == actual[name] for name in DATA_FILES) for k in known):
        return []
    recorded = record["sha256"]
    return [f"{name}: recorded {recorded[name][:12]}..., got {actual[name][:12]}..."
            for name in DATA_FILES if recorded[name] != actual[name]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="record the checksums instead of comparing")
    parser.add_argument("--round-dir", help="compare this round directory instead of running")
    parser.add_argument("--against", help="with --round-dir: compare it with this round directory "
                        "instead of the recorded checksums")
    args = parser.parse_args(argv)
    if args.against:
        if not args.round_dir:
            parser.error("--against needs --round-dir")
        before, after = dataset_checksums(args.against), dataset_checksums(args.round_dir)
        differences = [f"{name}: {before[name][:12]}... vs {after[name][:12]}..."
                       for name in DATA_FILES if before[name] != after[name]]
        for line in differences:
            print(line)
        print("identical" if not differences else "DIFFERENT")
        return 1 if differences else 0
    if args.round_dir:
        round_dir = Path(args.round_dir)
    else:
        work = Path(tempfile.mkdtemp(prefix="coopt-identical-"))
        from simulations.local_run import run_succeeded

        run, round_dir = run_tiny(work / "out", work / "flwr-home")
        if not run_succeeded(run):
            print(run.output[-3000:], file=sys.stderr)
            print("the tiny run failed", file=sys.stderr)
            return 1
    if args.record:
        variants = json.loads(RECORD.read_text()).get("variants", []) if RECORD.exists() else []
        write_text_atomic(RECORD, json.dumps({"config": TINY_RUN_CONFIG,
                                              "supernodes": TINY_RUN_SUPERNODES,
                                              "sha256": dataset_checksums(round_dir),
                                              "variants": variants}, indent=2) + "\n")
        print(f"recorded {RECORD}")
        return 0
    differences = compare(round_dir)
    for line in differences:
        print(line)
    print("identical" if not differences else "DIFFERENT")
    return 1 if differences else 0


if __name__ == "__main__":
    raise SystemExit(main())
