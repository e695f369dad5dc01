"""The heads merge against aligned, unaligned and single prototypes, at a budget a CPU affords.

The benchmark (:mod:`simulations.benchmark`) trains every row for two students plus BYOL and
the supervised ceiling; this study trains only the rows the ``merge = "heads"`` question needs,
for the first student, with the benchmark's own pieces (datasets built by the round engine,
the shared ``TrainConfig``, the same probes), so its numbers are the benchmark's rows::

    python -m simulations.heads_study --config simulations/configs/benchmark-small.yaml \\
        --num-train 2000 --num-test 1000 --epochs 5 --seeds 0 --proto-image-size 32 \\
        --out simulations/results/heads

Writes ``heads_study.json`` (every row's probe curve) and ``heads_study.md`` (the table and
the command) into ``--out``.
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
from coopt_flower.probing import mean_std
from simulations.benchmark.config import ALIGNED, HEADS, SINGLE, UNALIGNED, load_config
from simulations.benchmark.datasets import build_datasets
from simulations.benchmark.features import cached_features, log
from simulations.benchmark.rows import ProbeSet, train_row
from simulations.study_args import add_key_overrides, reproducing_command


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a benchmark YAML (simulations/configs/)")
    add_key_overrides(p, dict.fromkeys(("num_train", "num_test", "epochs", "proto_image_size", "probe_epochs",
                                        "full_probe_steps"), int), what="the benchmark config's key")
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument("--rows", help="comma-separated rows to train (default: every single prototype, "
                                  "CoOpt (no alignment), CoOpt (aligned), CoOpt (heads))")
    p.add_argument("--cache-dir", default="/tmp/coopt-heads-study-cache")
    p.add_argument("--out", required=True, help="directory for heads_study.json / .md")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    overrides = {k: getattr(args, k) for k in ("num_train", "num_test", "epochs", "proto_image_size",
                                               "probe_epochs", "full_probe_steps") if getattr(args, k)}
    if args.seeds:
        overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    cfg = replace(cfg, **overrides)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    cache, out = Path(args.cache_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train, test = open_source(cfg.data), open_source(cfg.test_data)
    test_ids = select_samples(len(test), cfg.num_test, cfg.test_seed)
    x_test, y_test = test.images(test_ids), test.labels(test_ids)
    rows = [SINGLE + s for s in cfg.prototypes] + [UNALIGNED, ALIGNED, HEADS]
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(wanted) - set(rows))
        if unknown:
            raise SystemExit(f"--rows: unknown row(s) {unknown}; choose from {rows}")
        rows = wanted
    runs: dict[str, dict[str, dict]] = {}
    for seed in cfg.seeds:
        ids = select_samples(len(train), cfg.num_train, seed)
        feats, metas = {}, {}
        for spec in cfg.prototypes:
            feats[spec], metas[spec] = cached_features(cache, spec, cfg.proto_image_size, train, ids,
                                                       batch_size=cfg.encode_batch_size, split="train",
                                                       device=cfg.device)
        built = build_datasets(cfg, seed, train, ids, feats, metas, cache / "work")
        x_train, y_train = train.images(ids), train.labels(ids)
        probes = ProbeSet(x_train, y_train, x_test, y_test, cfg.image_size, cfg.probe_epochs,
                          cfg.full_probe_steps, seed, device=cfg.device,
                          threads=1 if cfg.threads == 1 else None)
        runs[str(seed)] = {"alignment": built["alignment"]}
        for row in rows:
            runs[str(seed)][row] = train_row(row, cfg.arch, cfg, seed, probes, x_train, y_train,
                                             built["datasets"][row])
    table = []
    for row in rows:
        acc = mean_std([runs[str(s)][row]["probe_acc"][-1] for s in cfg.seeds])
        full = mean_std([runs[str(s)][row]["full_probe_acc"] for s in cfg.seeds])
        table.append({"row": row, "acc_mean": acc[0], "acc_std": acc[1],
                      "full_acc_mean": full[0], "full_acc_std": full[1]})
    command = reproducing_command("simulations.heads_study", argv)
    results = {"command": command, "config": asdict(cfg), "rows": table, "runs": runs,
               "wall_seconds": time.perf_counter() - started}
    (out / "heads_study.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "heads_study.md").write_text(render(results))
    log(f"done in {results['wall_seconds'] / 60:.1f} min: {out / 'heads_study.md'}")
    return 0


def render(results: dict) -> str:
    cfg = results["config"]
    lines = [f"# merge = heads vs aligned, unaligned and single prototypes ({cfg['arch']})", "",
             f"Command: `{results['command']}`", "",
             f"{cfg['num_train']} training images per seed, seeds {list(cfg['seeds'])}, "
             f"{cfg['epochs']} epochs, prototypes at {cfg['proto_image_size']} px, |S| = "
             f"{cfg['shared_size']}, {cfg['num_test']} test images; {results['wall_seconds'] / 60:.1f} min "
             "wall clock.", "",
             "| row | probe acc (%) | full probe acc (%) |", "|---|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['row']} | {100 * r['acc_mean']:.1f} ± {100 * r['acc_std']:.1f} | "
                     f"{100 * r['full_acc_mean']:.1f} ± {100 * r['full_acc_std']:.1f} |")
    first = next(iter(results["runs"].values()))["alignment"]
    lines += ["", f"Reference: {first['reference']} ({first['reference_prototype']}); held-out "
              "residuals of the ridge maps (seed " + next(iter(results["runs"])) + "): " + ", ".join(
                  f"{p['name']} {p['holdout_residual']:.2f}" for p in first["participants"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
