"""``coopt``: one command for everything coopt-flower does outside ``flwr run .``.

One function per subcommand, each delegating to the module that does the work:

``coopt run``      local simulation of the Flower app (:mod:`deploy.local_run`)
``coopt check``    check a run config as the ServerApp will, before ``flwr run`` (:mod:`coopt_flower.preflight`)
``coopt train``    train a student on a round or an export (:mod:`coopt_flower.student_training`)
``coopt probe``    linear-probe a trained student (:func:`coopt_flower.probing.probe_checkpoint`)
``coopt export``   self-contained HF / WebDataset export (:mod:`coopt_flower.export`)
``coopt report``   verify a dataset and print its report (or an export's card)
``coopt deploy``   certificates, keys, SuperLink/SuperNodes, runs (:mod:`deploy.cluster`)

``run``, ``train`` and ``deploy`` hand the rest of the command line to their module's own
parser, so ``coopt train --help`` shows exactly the options ``python -m
coopt_flower.student_training`` takes. Heavy imports (torch, datasets, Flower helpers) happen inside
the subcommand, so ``coopt --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from coopt_flower import __version__
from coopt_flower.help_format import DefaultsHelpFormatter

PROG = "coopt"


# ---------------------------------------------------------------------------- delegated
def cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt run``: :func:`deploy.local_run.main`."""
    from deploy.local_run import main

    return main(rest, prog=f"{PROG} run")


def cmd_check(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt check``: :func:`coopt_flower.preflight.main`."""
    from coopt_flower.preflight import main

    return main(rest)


def cmd_train(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt train``: :func:`coopt_flower.student_training.main`."""
    from coopt_flower.student_training import main

    return main(rest, prog=f"{PROG} train")


def cmd_deploy(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt deploy``: :func:`deploy.cluster.main`."""
    from deploy.cluster import main

    return main(rest, prog=f"{PROG} deploy")


# ---------------------------------------------------------------------------- own options
def cmd_probe(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt probe``: linear probe of a student checkpoint; prints JSON."""
    from coopt_flower.probing import probe_checkpoint

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = probe_checkpoint(str(args.checkpoint), args.train_data, args.test_data,
                              train_samples=args.train_samples, test_samples=args.test_samples,
                              seeds=args.seeds, epochs=args.epochs, device=args.device)
    print(json.dumps(result, indent=2))
    return 0


def cmd_export(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt export``: :func:`coopt_flower.export.export_dataset` (+ ``push_to_hub``)."""
    from coopt_flower.export import ExportOptions, export_dataset, push_to_hub

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ExportOptions(format=args.format, image_format=args.image_format,
                            jpeg_quality=args.jpeg_quality, samples_per_shard=args.samples_per_shard,
                            overwrite=args.overwrite, source=args.source)
    out = export_dataset(args.round_dir, args.out, options)
    print(f"exported to {out} (dataset card: {out / 'README.md'})")
    if args.push_to_hub:
        print(f"uploaded: {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return 0


def cmd_report(args: argparse.Namespace, rest: list[str]) -> int:
    """``coopt report``: verify checksums, then print report.md (a round) or README.md (an export)."""
    from coopt_flower.dataset_format import verify_dataset
    from coopt_flower.exported import dataset_kind, verify_export

    path = Path(args.dataset)
    if dataset_kind(path) == "round":
        verify_dataset(path)
        text = path / "report.md"
    else:
        verify_export(path)
        text = path / "README.md"
    print(text.read_text(encoding="utf-8"))
    print(f"verified: every checksum of {path} matches")
    return 0


# ---------------------------------------------------------------------------- parser
DELEGATED = {
    "run": (cmd_run, "local simulation of the Flower app (`flwr run` with a private SuperLink)"),
    "check": (cmd_check, "check a run config (keys, values, prototypes, data, output dir) before `flwr run`"),
    "train": (cmd_train, "train a student on an optimized dataset (round directory or export)"),
    "deploy": (cmd_deploy, "Flower deployment: certs | keygen | up | register | supernode | run | status | down"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``coopt`` parser; every subparser sets ``func``."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog=PROG, description="CoOpt collaborative data optimization with Flower: run, train, "
        "probe, export, report, deploy. The Flower app itself: `flwr run .` in the repository.")
    parser.add_argument("--version", action="version", version=f"coopt-flower {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, (func, text) in DELEGATED.items():
        # No options of its own: everything after the name goes to the module's parser
        # (its --help included).
        p = sub.add_parser(name, help=text, add_help=False)
        p.set_defaults(func=func, delegated=True)

    p = sub.add_parser("probe", formatter_class=DefaultsHelpFormatter,
                       help="linear-probe a trained student on labeled data",
                       description="Linear probe of a student checkpoint (last.pt): frozen features, "
                       "one linear layer; prints accuracy mean/std over seeds as JSON.")
    p.add_argument("checkpoint", type=Path, help="student checkpoint (last.pt from `coopt train`)")
    p.add_argument("--train-data", default="fashion-mnist", help="labeled source spec to fit the probe on")
    p.add_argument("--test-data", default="fashion-mnist:test", help="labeled source spec to test on")
    p.add_argument("--train-samples", type=int, default=2000, help="0 = all")
    p.add_argument("--test-samples", type=int, default=1000, help="0 = all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="probe epochs (default: enough steps)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("export", formatter_class=DefaultsHelpFormatter,
                       help="export a round as a self-contained HF / WebDataset dataset",
                       description="Write a round's images, aligned targets, sample ids and owners, "
                       "with a dataset card (README.md), as a dataset that loads without coopt-flower.")
    p.add_argument("round_dir", type=Path, help="round directory (e.g. OUTPUT/round-001)")
    p.add_argument("--format", choices=["hf", "webdataset"], required=True,
                   help="hf: datasets.load_dataset(DIR) (Parquet) and load_from_disk(DIR/arrow); webdataset: tar shards")
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--image-format", choices=["png", "jpeg", "raw"], default="png",
                   help="png (lossless, default), jpeg (smaller, lossy) or raw uint8 arrays")
    p.add_argument("--jpeg-quality", type=int, default=95, help="jpeg: quality, 1-100")
    p.add_argument("--samples-per-shard", type=int, default=10_000, help="webdataset: samples per tar")
    p.add_argument("--source", default=None,
                   help="image source spec, if not the one recorded in the round's manifest")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--push-to-hub", metavar="REPO", default=None,
                   help="then upload to the Hugging Face Hub as dataset REPO (needs network and login)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private repository")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", formatter_class=DefaultsHelpFormatter,
                       help="verify a dataset's checksums and print its report",
                       description="Verify every checksum of a round directory (or an export), then "
                       "print its report.md (or the export's dataset card).")
    p.add_argument("dataset", type=Path, help="round directory or export")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``coopt`` console script; errors print one line and exit 1."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "delegated", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from coopt_flower.dataset_format import DatasetIntegrityError

    try:
        return args.func(args, rest)
    except (DatasetIntegrityError, ValueError, OSError) as err:  # ExportError, ConfigError: ValueErrors
        print(f"{PROG} {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
