"""Weak prototypes: does a pool of random-init networks still speed up early training?

The paper's claim: "even when all prototypes are weak, CoOpt speeds up early training". This
runs the benchmark's CoOpt (aligned) row with a pool of ``random:`` prototypes (the default
pool's architectures with random weights) under the benchmark's config (same images, seed,
student, augmentations, epochs, probe), and sets its probe curve beside the BYOL, random-init
and pretrained-pool CoOpt runs the benchmark stored for the same seed (``--resume`` runs).

    python -m simulations.weak_prototypes --seed 0
    python -m simulations.weak_prototypes --config simulations/configs/benchmark-tiny.yaml  # quick

How weak the pool is: each random prototype's own features are linear-probed on a split of
the training images (80% / 20%; the test images are not encoded, to save the encode time).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from coopt_flower.data import open_source, select_samples
from coopt_flower.probing import linear_probe
from simulations.benchmark.config import ALIGNED, BYOL, DEFAULT_CONFIG, RESULTS_DIR, load_config
from simulations.benchmark.datasets import build_datasets
from simulations.benchmark.features import cached_features, log, slug
from simulations.benchmark.rows import ProbeSet, train_row
from simulations.study_args import reproducing_command

WEAK_POOL = ("random:efficientnet-lite0", "random:efficientnet-lite1", "random:efficientnet-lite2")
EARLY_EPOCHS = 3


def own_feature_probe(feats: np.ndarray, labels: np.ndarray, seed: int, threads: int | None) -> float:
    """Linear probe of a prototype's features, 80/20 split of the training images."""
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(0.8 * len(labels))
    a, b = order[:cut], order[cut:]
    return linear_probe(feats[a], labels[a], feats[b], labels[b], min_steps=1000, seed=seed,
                        num_threads=threads).accuracy


def stored_run(runs_dir: Path, seed: int, arch: str, row: str, epochs: int) -> dict | None:
    path = runs_dir / f"{slug(f'seed{seed}-{arch}-{row}-{epochs}ep')}.json"
    return json.loads(path.read_text())["result"] if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", default=",".join(WEAK_POOL), help="comma list of prototype specs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default="/tmp/coopt-benchmark-cache",
                   help="the benchmark's cache: encoded features and its stored runs (work/runs)")
    p.add_argument("--out", default=str(RESULTS_DIR / "weak-prototypes"))
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    cfg = replace(cfg, prototypes=tuple(s.strip() for s in args.pool.split(",") if s.strip()),
                  seeds=(args.seed,), threads=args.threads, extra_merges=False)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cache = Path(args.cache_dir)
    work = cache / ("work-tiny" if cfg.tiny else "work")
    t0 = time.perf_counter()

    train, test = open_source(cfg.data), open_source(cfg.test_data)
    ids = select_samples(len(train), cfg.num_train, args.seed)
    test_ids = select_samples(len(test), cfg.num_test, cfg.test_seed)
    x_train, y_train = train.images(ids), train.labels(ids)
    feats, metas, weakness = {}, {}, {}
    for spec in cfg.prototypes:
        feats[spec], metas[spec] = cached_features(cache, spec, cfg.proto_image_size, train, ids,
                                                   batch_size=cfg.encode_batch_size, split="train",
                                                   device=cfg.device)
        weakness[spec] = own_feature_probe(feats[spec], y_train, args.seed, args.threads)
        log(f"{spec}: own features probe {weakness[spec]:.4f} (80/20 split of the train images)")
    pixels = own_feature_probe(x_train[..., 0].reshape(len(ids), -1).astype(np.float32) / 255.0,
                               y_train, args.seed, args.threads)
    log(f"raw pixels on the same split: {pixels:.4f}")

    built = build_datasets(cfg, args.seed, train, ids, feats, metas, work / "weak", singles=[])
    probes = ProbeSet(x_train, y_train, test.images(test_ids), test.labels(test_ids), cfg.image_size,
                      cfg.probe_epochs, cfg.full_probe_steps, args.seed, device=cfg.device,
                      threads=1 if args.threads == 1 else None)
    weak = train_row(ALIGNED, cfg.arch, cfg, args.seed, probes, x_train, y_train,
                     built["datasets"][ALIGNED], cfg.epochs)

    # The benchmark's stored runs of the same seed, config and student (pretrained pool).
    runs_dir = work / "runs"
    others = {"BYOL": stored_run(runs_dir, args.seed, cfg.arch, BYOL, cfg.epochs),
              "CoOpt (aligned), pretrained pool": stored_run(runs_dir, args.seed, cfg.arch, ALIGNED, cfg.epochs)}
    torch.manual_seed(args.seed)
    from coopt_flower.students import create_student
    init = probes.probe_backbone(create_student(cfg.arch, image_size=cfg.image_size))

    rows = {"CoOpt (aligned), random pool": weak, **{k: v for k, v in others.items() if v}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = reproducing_command("simulations.weak_prototypes", argv)
    record = {"command": command, "config": asdict(cfg), "pool": list(cfg.prototypes),
              "own_feature_probe": weakness, "raw_pixels_same_split": pixels,
              "random_init_probe": init["acc"], "rows": rows,
              "missing_stored_runs": [k for k, v in others.items() if not v],
              "alignment": built["alignment"], "wall_seconds": time.perf_counter() - t0}
    (out / "weak_prototypes.json").write_text(json.dumps(record, indent=2, default=float))
    (out / "weak_prototypes.md").write_text(render(record, cfg))
    log(f"wrote {out / 'weak_prototypes.md'}")
    return 0


def render(record: dict, cfg) -> str:
    n = max(len(r["probe_acc"]) for r in record["rows"].values())
    lines = ["# Weak prototypes: a pool of random-init networks", "",
             f"Command: `{record['command']}` (after the benchmark's `--resume` run of the same seed, "
             "whose stored BYOL and pretrained-pool runs are read from its cache).", "",
             f"{cfg.num_train} Fashion-MNIST training images (seed {cfg.seeds[0]}), student {cfg.arch} at "
             f"{cfg.image_size} px, {cfg.epochs} epochs, batch {cfg.batch_size}; linear probe on the "
             f"{cfg.num_train} training features, tested on {cfg.num_test} test images. One seed.", "",
             "How weak the pool is (own features, linear probe on an 80/20 split of the training "
             "images):", "", "| features | probe |", "|---|---:|"]
    lines += [f"| `{k}` | {100 * v:.1f} |" for k, v in record["own_feature_probe"].items()]
    lines += [f"| raw pixels | {100 * record['raw_pixels_same_split']:.1f} |", "",
              f"Probe accuracy (%) after each epoch (random-init student: {100 * record['random_init_probe']:.1f}):", "",
              "| row | " + " | ".join(f"ep {e + 1}" for e in range(n)) + " | train s (all epochs) |",
              "|---|" + "---:|" * (n + 1)]
    for name, r in record["rows"].items():
        cells = [f"{100 * a:.1f}" for a in r["probe_acc"]] + [""] * (n - len(r["probe_acc"]))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(r['epoch_times']):.0f} |")
    weak, byol = record["rows"]["CoOpt (aligned), random pool"], record["rows"].get("BYOL")
    if byol:
        diffs = [100 * (weak["probe_acc"][e] - byol["probe_acc"][e]) for e in range(min(EARLY_EPOCHS, n))]
        lines += ["", "Early training, random pool minus BYOL (points): " + ", ".join(
            f"epoch {e + 1} {d:+.1f}" for e, d in enumerate(diffs)) + "."]
    else:
        lines += ["", "BYOL's stored run of this seed was not found: run the benchmark first."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
