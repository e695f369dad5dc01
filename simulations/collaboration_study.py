"""Does collaboration pay? Each participant alone against the merged dataset, IID and non-IID.

A participant that does not join trains a student on its own shard, taught by its own
prototype; one that joins gets the merged dataset of everyone's shards. Per partitioner
(``iid``, ``dirichlet:<alpha>``, ...; :mod:`coopt_flower.partitions`) and seed this study
builds the product's datasets with its own round engine (``run_in_process``, participants
answering from the benchmark's feature cache, as in :mod:`simulations.benchmark.datasets`) and
trains one student per row, all with the benchmark's recipe and probed the same way:

- ``alone:<participant>``: only that participant's shard, its own prototype's targets (its
  rows of the unaligned merge, which are exactly those), trained for as many optimizer steps
  as the merged rows (a small shard gets more epochs: the baseline is not starved);
- ``CoOpt (aligned)``: the product's default merge (``align-ridge``), flagged ``default``;
- ``CoOpt (no alignment)``: every participant's targets merged as they are (``merge=none``);
- ``CoOpt (heads)``, ``CoOpt (multi-teacher)`` (``--merges``): the merges that keep every
  participant's own space, one student head per participant; ``multi-teacher`` trains every
  head on every sample (:mod:`coopt_flower.multi_teacher`);
- ``single:<spec>``: the centralized oracle no participant can run in a federation, the best
  prototype (picked by its own features' probe on the validation split) encoding every
  training image; it does not depend on the partition (``partitioner``: ``all data``).

``alone: mean`` and ``alone: best`` summarize the participants per seed; the best is picked
by its validation probe (the test set makes no choice). Every reported accuracy is the
student's full linear probe on the common test set; differences are paired per seed.

The committed results (``simulations/results/collaboration/``) and how to reproduce them::

    python -m simulations.collaboration_study --partitioners iid,dirichlet:0.1 --seeds 0 \\
        --epochs 3 --threads 1

Other keys come from the benchmark's config (``--config``, default
``simulations/configs/benchmark.yaml``: 10,000 training images, the default pool of four
ImageNet prototypes, small-cnn). ``--tiny`` runs the smoke configuration in about a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.engine import run_in_process
from coopt_flower.engine.samples import RoundSamples
from coopt_flower.merges import Merge
from coopt_flower.partitions import parse_partitioner
from simulations.benchmark.config import ALIGNED, DEFAULT_CONFIG, SINGLE, TINY_CONFIG, UNALIGNED, Config, load_config
from simulations.benchmark.datasets import CachedParticipant, round_settings
from simulations.benchmark.features import log, slug
from simulations.benchmark.main import encode_prototypes, open_data, pick_singles, probe_floors
from simulations.benchmark.rows import ProbeSet
from simulations.study_args import reproducing_command

OUT_DIR = Path(__file__).resolve().parent / "results" / "collaboration"
JSON_NAME, MD_NAME, PLOT_NAME = "collaboration.json", "collaboration.md", "collaboration.png"


ALONE = "alone:"
ALONE_MEAN, ALONE_BEST = "alone: mean over participants", "alone: best participant (by validation)"
ALL_DATA = "all data"  # the partitioner field of the centralized rows
POOL = "default"       # the pool of the benchmark's config (today's four ImageNet prototypes)
#: The rows of the merges besides the default and the unaligned one (``--merges``).
MERGE_ROWS = {Merge.HEADS: "CoOpt (heads)", Merge.MULTI_TEACHER: "CoOpt (multi-teacher)"}


def result_names(pool: str) -> tuple[str, str, str]:
    """The results files of a pool: ``collaboration.*`` for the default pool, ``collaboration-<pool>.*``
    for another (side by side in the same directory; every row names its pool)."""
    if pool == POOL:
        return JSON_NAME, MD_NAME, PLOT_NAME
    return tuple(name.replace("collaboration", f"collaboration-{slug(pool)}") for name in (JSON_NAME, MD_NAME, PLOT_NAME))


# ----------------------------------------------------------------------------- datasets


def build_round(cfg: Config, seed: int, specs: list[str], feats: dict[str, np.ndarray], metas, source,
                sample_ids: np.ndarray, out: Path, merge: Merge, partitioner: str):
    """One round of the product's engine over cached features; returns its result."""
    settings = round_settings(cfg, seed, specs, out, merge, partitioner)
    drawn = RoundSamples.draw(settings, source)
    if not np.array_equal(drawn.ids, sample_ids):
        raise ValueError("the round selected other samples than the study encoded")
    participants = [CachedParticipant(spec, feats[spec], sample_ids, drawn.shared_ids,
                                      metas[spec]["images_per_second"],
                                      metas[spec].get("encoded_size", cfg.proto_size(spec)), k)
                    for k, spec in enumerate(specs)]
    return run_in_process(settings, source, participants)


def alone_dataset(unaligned, owner: int) -> torch.utils.data.TensorDataset:
    """What participant ``owner`` has without the platform: its shard's images and its own
    prototype's targets (its rows of the ``merge=none`` dataset are exactly those)."""
    rows = np.flatnonzero(np.asarray(unaligned.owners) == owner)
    images = torch.from_numpy(unaligned.images(rows)).permute(0, 3, 1, 2).contiguous()
    targets = torch.from_numpy(np.asarray(unaligned.targets[rows], dtype=np.float32))
    return torch.utils.data.TensorDataset(images, targets)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def equal_step_epochs(epochs: int, num_merged: int, num_alone: int, batch_size: int) -> int:
    """Epochs over a shard of ``num_alone`` samples that take at least as many optimizer steps
    as ``epochs`` over the ``num_merged`` samples of the merged dataset."""
    steps = epochs * steps_per_epoch(num_merged, batch_size)
    return max(1, math.ceil(steps / steps_per_epoch(num_alone, batch_size)))


# ----------------------------------------------------------------------------- training


def train_final(dataset, cfg: Config, seed: int, probes: ProbeSet, epochs: int) -> dict[str, Any]:
    """Train ``cfg.arch`` on ``dataset`` for ``epochs``; the full probe of the last epoch."""
    from coopt_flower.student_training import TrainConfig, train_on_optimized

    probed: dict[str, Any] = {}

    def on_epoch_end(epoch: int, backbone):
        if epoch == epochs:
            probed.update(probes.probe_backbone(backbone, full=True))
        return {}

    config = TrainConfig(arch=cfg.arch, image_size=cfg.image_size, epochs=epochs, batch_size=cfg.batch_size,
                         lr=cfg.lr, weight_decay=cfg.weight_decay, seed=seed, device=cfg.device, progress=False)
    started = time.perf_counter()
    result = train_on_optimized(dataset, config, on_epoch_end=on_epoch_end)
    return {"acc": probed["full_acc"], "val_acc": probed.get("full_val_acc"), "epochs": epochs,
            "steps": epochs * steps_per_epoch(len(dataset), cfg.batch_size), "num_samples": len(dataset),
            "train_seconds": float(sum(result.epoch_times)), "wall_seconds": time.perf_counter() - started}


#: The config keys that change what a stored run trained (its name holds seed, epochs, row).
RUN_SETTINGS = ("arch", "image_size", "batch_size", "lr", "weight_decay", "num_train", "probe_epochs",
                "full_probe_steps")


class RunStore:
    """Finished training runs as JSON files, so an interrupted study resumes where it stopped.
    With ``train=False`` (``--report-only``) a run not finished yet is None: not run.

    A run records the :data:`RUN_SETTINGS` it trained with; one stored under other settings
    (say another learning rate in the same work dir) is refused, not silently reused. Runs
    stored before runs recorded them are taken as they are.
    """

    def __init__(self, folder: Path, train: bool = True, settings: dict[str, Any] | None = None) -> None:
        self.folder, self.train, self.settings = folder, train, dict(settings or {})
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, train) -> dict[str, Any] | None:
        path = self.folder / f"{slug(name)}.json"
        if path.exists():
            stored = json.loads(path.read_text())
            theirs = stored.get("settings")
            if theirs is not None and theirs != self.settings:
                differ = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
                raise SystemExit(f"{path} was trained with other settings ("
                                 + ", ".join(f"{k}: {theirs.get(k)} there, {self.settings.get(k)} here" for k in differ)
                                 + "): give this study another --work-dir, or remove that run to retrain it")
            return stored
        if not self.train:
            return None
        out = {**train(), "settings": self.settings}
        path.write_text(json.dumps(out, indent=2))
        log(f"  {name}: test {out['acc']:.4f}, validation {out['val_acc']:.4f} "
            f"({out['epochs']} epochs, {out['steps']} steps, {out['train_seconds']:.0f} s)")
        return out


# ----------------------------------------------------------------------------- one seed


def run_seed(cfg: Config, seed: int, partitioners: Sequence[str], data, encoded, work_dir: Path,
             store: RunStore, merges: Sequence[Merge] = (), alone: bool = True) -> dict[str, Any]:
    """Every row of one seed: the centralized oracle once, then each partitioner's rows
    (without the participants alone when ``alone`` is false)."""
    ids = data.sample_ids[seed]
    rows = np.searchsorted(data.union, ids)
    feats = {spec: encoded.train[spec][rows] for spec in cfg.prototypes}
    val_rows = np.searchsorted(data.union, data.val_ids)
    val_feats = {spec: encoded.train[spec][val_rows] for spec in cfg.prototypes}
    x_train, y_train = data.train.images(ids), data.train.labels(ids)
    probes = ProbeSet(x_train, y_train, data.x_test, data.y_test, cfg.image_size, cfg.probe_epochs,
                      cfg.full_probe_steps, seed, device=cfg.device, threads=1 if cfg.threads == 1 else None,
                      x_val=data.x_val, y_val=data.y_val)
    floors = probe_floors(probes, x_train, data.x_test, feats, encoded.test, val_feats)
    [best] = pick_singles(replace(cfg, single_rows="best"), floors)
    seed_dir = work_dir / f"seed-{seed}"
    out: dict[str, Any] = {"floors": floors, "best_single": best, "rows": {}, "partitions": {}}

    def built(name: str, specs: list[str], merge: Merge, partitioner: str):
        result = build_round(cfg, seed, specs, feats, encoded.metas, data.train, ids,
                             seed_dir / slug(name), merge, partitioner)
        return load_optimized_dataset(result.dataset_path), result.manifest

    def keep(key: tuple[str, str], run: dict[str, Any] | None, **extra) -> None:
        if run is not None:  # None: not run yet (--report-only)
            out["rows"][key] = dict(run, **extra)

    single, _ = built(f"single-{best}", [best], Merge.ALIGN_RIDGE, "iid")
    keep((ALL_DATA, SINGLE + best), store.get(
        f"seed{seed}-{cfg.epochs}ep-single-{best}", lambda: train_final(single, cfg, seed, probes, cfg.epochs)))
    for partitioner in partitioners:
        log(f"seed {seed}, partitioner {partitioner}: building the merged datasets")
        aligned, manifest = built(f"{partitioner}-aligned", list(cfg.prototypes), Merge.ALIGN_RIDGE, partitioner)
        unaligned, _ = built(f"{partitioner}-unaligned", list(cfg.prototypes), Merge.NONE, partitioner)
        out["partitions"][partitioner] = {
            "reference": manifest.reference,
            "participants": [{"name": p.name, "prototype": p.prototype, "num_samples": p.num_samples,
                              "label_counts": p.label_counts} for p in manifest.participants]}
        key = f"seed{seed}-{cfg.epochs}ep-{partitioner}"
        others = [(MERGE_ROWS[m], built(f"{partitioner}-{m.value}", list(cfg.prototypes), m, partitioner)[0])
                  for m in merges]
        for row, dataset in ((ALIGNED, aligned), (UNALIGNED, unaligned), *others):
            keep((partitioner, row), store.get(
                f"{key}-{row}", lambda d=dataset: train_final(d, cfg, seed, probes, cfg.epochs)))
        for k, p in enumerate(manifest.participants if alone else ()):
            own = alone_dataset(unaligned, k)
            epochs = equal_step_epochs(cfg.epochs, len(aligned), len(own), cfg.batch_size)
            keep((partitioner, ALONE + p.name), store.get(
                f"{key}-alone-{p.name}", lambda d=own, e=epochs: train_final(d, cfg, seed, probes, e)),
                prototype=p.prototype)
        alone_runs = [v for (part, row), v in out["rows"].items() if part == partitioner and row.startswith(ALONE)]
        if len(alone_runs) < len(manifest.participants):
            continue  # the summaries need every participant
        out["rows"][(partitioner, ALONE_MEAN)] = {"acc": float(np.mean([r["acc"] for r in alone_runs])),
                                                   "val_acc": float(np.mean([r["val_acc"] for r in alone_runs]))}
        out["rows"][(partitioner, ALONE_BEST)] = dict(max(alone_runs, key=lambda r: r["val_acc"]))
    return out


# ----------------------------------------------------------------------------- results


def collect_rows(per_seed: dict[int, dict[str, Any]], pool: str = POOL) -> list[dict[str, Any]]:
    """One row per (partitioner, row) over the seeds: mean, sample std, every seed's value."""
    keys: list[tuple[str, str]] = []
    for seed_out in per_seed.values():
        keys += [k for k in seed_out["rows"] if k not in keys]
    rows = []
    for partitioner, row in keys:
        seeds = [s for s, o in per_seed.items() if (partitioner, row) in o["rows"]]
        accs = [per_seed[s]["rows"][(partitioner, row)]["acc"] for s in seeds]
        vals = [per_seed[s]["rows"][(partitioner, row)].get("val_acc") for s in seeds]
        rows.append({"partitioner": partitioner, "pool": pool, "row": row,
                     "acc_mean": float(np.mean(accs)),
                     "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                     "seeds": seeds, "per_seed": dict(zip(map(str, seeds), accs)),
                     **({"val_mean": float(np.mean(vals)), "val_per_seed": dict(zip(map(str, seeds), vals))}
                        if None not in vals else {}),
                     "default": row == ALIGNED,
                     **({"prototype": per_seed[seeds[0]]["rows"][(partitioner, row)].get("prototype")}
                        if row.startswith(ALONE + "p") else {})})
    return rows


def paired_differences(per_seed: dict[int, dict[str, Any]], partitioner: str) -> dict[str, list[float]]:
    """Per seed: merged - best participant alone, merged - mean alone, aligned - unaligned, and
    merged - the centralized oracle (points)."""
    out: dict[str, list[float]] = {"vs best alone": [], "vs mean alone": [], "vs no alignment": [],
                                   "vs best single on all data": []}
    for o in per_seed.values():
        r = o["rows"]
        if not {(partitioner, ALIGNED), (partitioner, UNALIGNED), (partitioner, ALONE_BEST),
                (ALL_DATA, SINGLE + o["best_single"])} <= set(r):
            continue  # not every row ran
        merged = r[(partitioner, ALIGNED)]["acc"]
        out["vs best alone"].append(100 * (merged - r[(partitioner, ALONE_BEST)]["acc"]))
        out["vs mean alone"].append(100 * (merged - r[(partitioner, ALONE_MEAN)]["acc"]))
        out["vs no alignment"].append(100 * (merged - r[(partitioner, UNALIGNED)]["acc"]))
        out["vs best single on all data"].append(100 * (merged - r[(ALL_DATA, SINGLE + o["best_single"])]["acc"]))
    return out


def merge_differences(per_seed: dict[int, dict[str, Any]], partitioner: str) -> dict[str, dict[str, list[float]]]:
    """Per seed, points: every other merge's row - the default merge, and - the best
    participant alone."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in MERGE_ROWS.values():
        diffs: dict[str, list[float]] = {"vs default merge": [], "vs best alone": []}
        for o in per_seed.values():
            r = o["rows"]
            if {(partitioner, row), (partitioner, ALIGNED), (partitioner, ALONE_BEST)} <= set(r):
                diffs["vs default merge"].append(100 * (r[(partitioner, row)]["acc"] - r[(partitioner, ALIGNED)]["acc"]))
                diffs["vs best alone"].append(100 * (r[(partitioner, row)]["acc"] - r[(partitioner, ALONE_BEST)]["acc"]))
        if diffs["vs default merge"]:
            out[row] = diffs
    return out


def merge_validation(per_seed: dict[int, dict[str, Any]], partitioner: str) -> dict[str, dict[str, list[float]]]:
    """Per seed, points, on the validation split: every merge row's accuracy and its difference
    to the default merge. The product's default merge is chosen here, not on the test set."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in (ALIGNED, *MERGE_ROWS.values()):
        accs, diffs = [], []
        for o in per_seed.values():
            r = o["rows"]
            if {(partitioner, row), (partitioner, ALIGNED)} <= set(r) and r[(partitioner, row)].get("val_acc") is not None:
                accs.append(100 * r[(partitioner, row)]["val_acc"])
                diffs.append(100 * (r[(partitioner, row)]["val_acc"] - r[(partitioner, ALIGNED)]["val_acc"]))
        if accs:
            out[row] = {"validation accuracy": accs, "vs default merge": diffs}
    return out


def merge_verdict(by_partitioner: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, dict[str, Any]]:
    """Per merge besides the default, on validation: its mean difference to the default per
    partitioner, how many seeds are above it, and whether it *leads*: never below the default on
    the seeds' mean and above it on every seed under at least one partitioner (the rule a merge
    must pass before it may replace the default)."""
    out: dict[str, dict[str, Any]] = {}
    for row in MERGE_ROWS.values():
        per = {p: rows[row]["vs default merge"] for p, rows in by_partitioner.items() if rows.get(row)}
        if not per:
            continue
        means = {p: float(np.mean(d)) for p, d in per.items()}
        above = {p: sum(v > 0 for v in d) for p, d in per.items()}
        out[row] = {"mean_vs_default": means, "seeds_above": above, "seeds": {p: len(d) for p, d in per.items()},
                    "leads": min(means.values()) >= 0 and any(above[p] == len(d) for p, d in per.items())}
    return out


def not_run(per_seed, partitioners: Sequence[str]) -> list[str]:
    """Partitioners of a seed whose default merge has not been trained (``--report-only``)."""
    return [f"seed {s}: {p}" for s, o in per_seed.items() for p in partitioners if (p, ALIGNED) not in o["rows"]]


#: The issue's targets per pool: (partitioner, paired difference, at least this many points on every seed).
TARGETS = {POOL: (("dirichlet:0.1", "vs best alone", 3.0), ("dirichlet:0.1", "vs mean alone", 5.0)),
           # the pool that differs: collaborative beats centralized (the paper), alignment pays
           "heterogeneous": (("iid", "vs best single on all data", 1.0), ("iid", "vs no alignment", 2.0))}


def targets(differences: dict[str, dict[str, list[float]]], pool: str = POOL) -> list[dict[str, Any]]:
    """The issue's targets for ``pool`` that were measured, from the paired differences per
    partitioner (:func:`paired_differences`), with every seed's value."""
    out = []
    for partitioner, what, goal in TARGETS.get(pool, ()):
        diffs = differences.get(partitioner, {}).get(what)
        if not diffs:
            continue  # not run (yet)
        out.append({"target": f"{partitioner}: merged {what} >= +{goal:g} points", "per_seed": diffs,
                    "mean": float(np.mean(diffs)), "met": min(diffs) >= goal})
    return out


def render_markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [
        "# Does collaboration pay? Each participant alone vs the merged dataset",
        "",
        f"`{results['command']}`",
        "",
        f"{cfg['num_train']} training images, {len(cfg['prototypes'])} participants (pool `{cfg.get('pool', POOL)}`: "
        f"{', '.join(cfg['prototypes'])}), student {cfg['arch']}, {cfg['epochs']} epochs (alone: the "
        f"same number of optimizer steps), seeds {', '.join(map(str, cfg['seeds']))}; test accuracy "
        f"of the full linear probe on {cfg['num_test']} test images. Load average at the start: "
        f"{', '.join(f'{v:.2f}' for v in results['environment']['loadavg_start'])}.",
        "",
        "| partitioner | row | test accuracy (mean) | std | per seed |",
        "|---|---|---:|---:|---|",
    ]
    for r in results["rows"]:
        name = r["row"] + (" **(default)**" if r["default"] else "") + \
            (f" (`{r['prototype']}`)" if r.get("prototype") else "")
        lines.append(f"| {r['partitioner']} | {name} | {100 * r['acc_mean']:.2f} | {100 * r['acc_std']:.2f} | "
                     + ", ".join(f"{100 * v:.2f}" for v in r["per_seed"].values()) + " |")
    for seed, o in results["seeds"].items():
        lines += ["", f"Seed {seed}, no student (probe on the raw pixels / a prototype's own features), test "
                      "accuracy (validation): " + ", ".join(
                          f"{name} {100 * v['full_acc']:.2f} ({100 * v['full_val_acc']:.2f})"
                          for name, v in o["floors"].items())]
    paired = {p: d for p, d in results["differences"].items() if any(d.values())}  # --no-alone: none
    if paired:
        lines += ["", "Paired differences of the default merge, points, per seed:", "",
                  "| partitioner | " + " | ".join(next(iter(paired.values()))) + " |", "|---|" + "---:|" * 4]
    for partitioner, diffs in paired.items():
        lines.append(f"| {partitioner} | " + " | ".join(", ".join(f"{d:+.2f}" for d in v) for v in diffs.values())
                     + " |")
    others = [(p, row, d) for p, by_row in results.get("merge_differences", {}).items() for row, d in by_row.items()]
    if others:
        lines += ["", "Paired differences of the other merges, points, per seed:", "",
                  "| partitioner | merge | vs default merge | vs best alone |", "|---|---|---:|---:|"]
        lines += [f"| {p} | {row} | " + " | ".join(", ".join(f"{v:+.2f}" for v in d[k])
                                                   for k in ("vs default merge", "vs best alone")) + " |"
                  for p, row, d in others]
    by_merge = [(p, row, d) for p, rows in results.get("merge_validation", {}).items() for row, d in rows.items()]
    if by_merge:
        lines += ["", "The merges on the validation split (the default merge is chosen on these, not on the test "
                      "set), per seed, %:", "",
                  "| partitioner | merge | validation accuracy | vs default merge (points) |", "|---|---|---|---:|"]
        lines += [f"| {p} | {row} | " + ", ".join(f"{v:.2f}" for v in d["validation accuracy"]) + " | "
                  + ", ".join(f"{v:+.2f}" for v in d["vs default merge"]) + " |" for p, row, d in by_merge]
        lines += ["", "A merge *leads* when, on validation, it is never below the default on the seeds' mean and "
                      "above it on every seed under at least one partitioner:", ""]
        lines += [f"- {row}: " + ("leads" if v["leads"] else "does not lead") + " (mean vs default: " + ", ".join(
                      f"{p} {m:+.2f}, {v['seeds_above'][p]}/{v['seeds'][p]} seeds above"
                      for p, m in v["mean_vs_default"].items()) + ")"
                  for row, v in results["merge_verdict"].items()]
    if results["not_run"]:
        lines += ["", "Not run (yet): " + "; ".join(results["not_run"])]
    lines += ["", "Targets:", ""]
    lines += [f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} (per seed "
              + ", ".join(f"{d:+.2f}" for d in t["per_seed"]) + ")" for t in results["targets"]]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    partitioners = list(results["differences"])
    kinds = [ALIGNED, UNALIGNED, ALONE_BEST, ALONE_MEAN]
    by = {(r["partitioner"], r["row"]): r["acc_mean"] for r in results["rows"]}
    single = next((r for r in results["rows"] if r["partitioner"] == ALL_DATA), None)
    figure, axes = plt.subplots(figsize=(7.0, 4.0))
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        values = [100 * by.get((p, kind), np.nan) for p in partitioners]
        axes.bar(np.arange(len(partitioners)) + (i - (len(kinds) - 1) / 2) * width, values, width, label=kind)
    if single is not None:
        axes.axhline(100 * single["acc_mean"], color="black", linestyle="--",
                     label=f"{single['row']} (centralized)")
    axes.set_xticks(range(len(partitioners)), partitioners)
    low = min(100 * v for v in by.values()) - 5 if by else 0
    axes.set_ylim(bottom=max(0, low))
    axes.set_ylabel("test accuracy of the linear probe (%)")
    axes.set_title("Each participant alone vs the merged dataset")
    axes.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--tiny", action="store_true", help="the smoke configuration (numbers mean nothing)")
    parser.add_argument("--partitioners", default="iid,dirichlet:0.1,dirichlet:1.0")
    parser.add_argument("--seeds", default=None, help="comma list (default: the config's)")
    parser.add_argument("--merges", default="heads,multi-teacher",
                        help="comma list of further merge rows besides the default (align-ridge) and "
                             "none: " + ", ".join(m.value for m in MERGE_ROWS) + "; '' for none")
    parser.add_argument("--prototypes", default=None, help="comma list: another pool than the config's")
    parser.add_argument("--pool", default=POOL, help="the pool's name in the results (with --prototypes)")
    for key in ("num_train", "epochs", "threads"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/coopt-collaboration"))
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/coopt-benchmark-cache"))
    parser.add_argument("--no-alone", action="store_true",
                        help="train only the merges and the centralized row (what choosing a merge needs)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the runs the work dir holds (the others: not run)")
    args = parser.parse_args(argv)
    cfg = load_config(TINY_CONFIG if args.tiny else args.config)
    changes = {k: getattr(args, k) for k in ("num_train", "epochs", "threads") if getattr(args, k) is not None}
    if args.seeds:
        changes["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    if args.prototypes:
        changes["prototypes"] = tuple(s.strip() for s in args.prototypes.split(",") if s.strip())
    elif args.pool != POOL and args.config == DEFAULT_CONFIG:
        parser.error("--pool names another pool than the default config's: give its --prototypes or --config too")
    elif args.pool == POOL and args.config != DEFAULT_CONFIG and cfg.prototypes != load_config(DEFAULT_CONFIG).prototypes:
        parser.error(f"{args.config} names another pool than the default: name it with --pool")
    args.merges = [Merge(m.strip()) for m in args.merges.split(",") if m.strip()]
    unknown = [m.value for m in args.merges if m not in MERGE_ROWS]
    if unknown:
        parser.error(f"--merges: {', '.join(unknown)} has no row here; choose among {', '.join(MERGE_ROWS)}")
    cfg = replace(cfg, **changes, arch2="")
    for spec in args.partitioners.split(","):
        parse_partitioner(spec)  # a bad value is refused before any encoding
    if cfg.num_val <= 0:
        raise SystemExit("the study picks the best prototype and participant on a validation split: num_val > 0")
    return cfg, args


def main(argv=None) -> int:
    cfg, args = parse_args(argv)
    partitioners = [str(parse_partitioner(p)) for p in args.partitioners.split(",")]
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    started = time.perf_counter()
    load_start = os.getloadavg()
    data = open_data(cfg)
    encoded = encode_prototypes(cfg, args.cache_dir, data)
    # Another pool trains other rows under the same names: it gets a work dir of its own.
    work_dir = args.work_dir if args.pool == POOL else args.work_dir / slug(args.pool)
    store = RunStore(work_dir / "runs", train=not args.report_only,
                     settings={k: getattr(cfg, k) for k in RUN_SETTINGS})
    per_seed = {seed: run_seed(cfg, seed, partitioners, data, encoded, work_dir, store, args.merges,
                               alone=not args.no_alone)
                for seed in cfg.seeds}
    results = {
        "config": {**cfg.as_dict(), "partitioners": partitioners, "pool": args.pool,
                   "merges": [m.value for m in args.merges]}, "command": reproducing_command(
            "simulations.collaboration_study", argv),
        "environment": {"loadavg_start": load_start, "loadavg_end": os.getloadavg(), "cpu_count": os.cpu_count(),
                        "torch": torch.__version__, "wall_seconds": time.perf_counter() - started},
        "rows": collect_rows(per_seed, args.pool),
        "differences": {p: paired_differences(per_seed, p) for p in partitioners},
        "merge_differences": {p: merge_differences(per_seed, p) for p in partitioners},
        "merge_validation": {p: merge_validation(per_seed, p) for p in partitioners},
        "not_run": not_run(per_seed, partitioners),
        "seeds": {str(s): {"best_single": o["best_single"], "partitions": o["partitions"],
                           "floors": {k: {m: v[m] for m in ("full_acc", "full_val_acc")} for k, v in o["floors"].items()}}
                  for s, o in per_seed.items()},
    }
    results["targets"] = targets(results["differences"], args.pool)
    results["merge_verdict"] = merge_verdict(results["merge_validation"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    names = result_names(args.pool)
    (args.out_dir / names[0]).write_text(json.dumps(results, indent=2))
    (args.out_dir / names[1]).write_text(render_markdown(results))
    plot(results, args.out_dir / names[2])
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min: {args.out_dir / names[1]}")
    for t in results["targets"]:
        log(f"  {'MET   ' if t['met'] else 'MISSED'} {t['target']}: mean {t['mean']:+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
