"""Reference selection and alignment study: do label-free scores rank prototypes as labels do?

For each labeled source of the config, every prototype of a spread pool encodes a labeled
train/test sample once (feature cache). Then:

1. **Scores vs truths.** One CoOpt round over the whole pool (the product's round engine,
   :func:`coopt_flower.engine.run_in_process` with cached participants) computes every
   reference score on the shared subset S. Two truths per prototype: (i) the linear-probe
   accuracy of its own features, (ii) the probe accuracy of a small student trained on its
   targets alone (a single-prototype round over all train images). Spearman per score, truth
   and source.
2. **Merges.** The default four-prototype pool merged unaligned and with every ``align-*``
   method (reference: the default uniform score), each trained into a student and probed,
   beside the best single prototype.
3. **Shared-size sweep.** For each |S|, each alignment's residual (1 - R^2) on the test
   images (never in S) and its own held-out residual on S, mean over the non-reference
   participants of the default pool.

    python -m simulations.selection_study --config simulations/configs/selection.yaml \\
        --out simulations/results/selection
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from coopt_flower.alignment import unexplained_variance
from coopt_flower.config import RunSettings
from coopt_flower.data import open_source, select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.engine import run_in_process
from coopt_flower.engine.samples import RoundSamples
from coopt_flower.merges import ALIGN_METHODS, Merge
from coopt_flower.probing import extract_features, linear_probe
from coopt_flower.projection import project, projection_matrix
from coopt_flower.scores import HIGHER_IS_BETTER, REFERENCE_SCORES
from coopt_flower.student_training import train_on_optimized
from coopt_flower.training_loop import TrainConfig
from simulations.benchmark.datasets import CachedParticipant
from simulations.benchmark.features import cached_features, log, slug
from simulations.benchmark.statistics import spearman_with_p
from simulations.study_args import reproducing_command


STUDY_PARTS = ("scores", "merges", "sweep")


@dataclass
class StudyConfig:
    """The study's settings (``simulations/configs/selection.yaml`` sets every one)."""

    sources: list[dict[str, Any]]
    pool: list[str]                  # "spec@image_size" entries
    merge_pool: list[str]            # the default participants, for the merge rows and the sweep
    shared_size: int = 256
    target_dim: int = 512
    sweep: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    seed: int = 0
    student: dict[str, Any] = field(default_factory=dict)
    probe_min_steps: int = 1000
    threads: int = 2
    encode_batch_size: int = 128
    parts: list[str] = field(default_factory=lambda: list(STUDY_PARTS))  # which of the three to run
    sweep_students: list[str] = field(default_factory=list)  # merges whose sweep datasets train a student


def parse_entry(entry: str) -> tuple[str, int]:
    """``"efficientnet-lite0@32"`` -> ``("efficientnet-lite0", 32)``."""
    spec, _, size = entry.rpartition("@")
    if not spec or not size.isdigit():
        raise ValueError(f"pool entry {entry!r}: write it as SPEC@IMAGE_SIZE, e.g. efficientnet-lite0@96")
    return spec, int(size)


def write_digits_folder(root: Path) -> None:
    """scikit-learn's bundled 8x8 digits as ``root/{train,test}/<label>/<i>.png`` (offline).

    The first 2/3 of a seeded permutation is train, the rest test.
    """
    if (root / "done").exists():
        return
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * 16.0, 0, 255).astype(np.uint8)   # 0..16 -> 0..255
    order = np.random.default_rng(0).permutation(len(images))
    cut = (2 * len(images)) // 3
    for split, rows in (("train", order[:cut]), ("test", order[cut:])):
        for i in rows:
            folder = root / split / str(int(digits.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    (root / "done").write_text("ok\n")


def open_study_source(source: dict[str, Any], cache_dir: Path):
    """(train source, test source) of a config entry; ``digits`` is written on first use."""
    if source["name"] == "digits":
        root = cache_dir / "digits-folder"
        write_digits_folder(root)
        return open_source(f"folder:{root / 'train'}"), open_source(f"folder:{root / 'test'}")
    return open_source(source["train"]), open_source(source["test"])


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def spearman_p(a: list[float], b: list[float]) -> float:
    """The permutation p-value of :func:`spearman` (a handful of prototypes: exact)."""
    return spearman_with_p(a, b)[1]


@dataclass
class SourceData:
    """One source's labeled sample and every pool entry's cached features of it."""

    train: Any
    train_ids: np.ndarray
    test_ids: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    x_test: np.ndarray
    feats: dict[str, np.ndarray]       # entry -> raw train features
    test_feats: dict[str, np.ndarray]  # entry -> raw test features
    rates: dict[str, float]


def load_source(cfg: StudyConfig, source: dict[str, Any], cache_dir: Path) -> SourceData:
    train, test = open_study_source(source, cache_dir)
    train_ids = select_samples(len(train), int(source.get("num_train", 0)), cfg.seed)
    test_ids = select_samples(len(test), int(source.get("num_test", 0)), 0)
    feats, test_feats, rates = {}, {}, {}
    for entry in cfg.pool:
        spec, size = parse_entry(entry)
        where = cache_dir / slug(source["name"])
        feats[entry], meta = cached_features(where, spec, size, train, train_ids,
                                             batch_size=cfg.encode_batch_size, split="train")
        test_feats[entry], _ = cached_features(where, spec, size, test, test_ids,
                                               batch_size=cfg.encode_batch_size, split="test")
        rates[entry] = meta["images_per_second"]
    return SourceData(train, train_ids, test_ids, train.labels(train_ids), test.labels(test_ids),
                      train.images(train_ids), test.images(test_ids), feats, test_feats, rates)


def run_round(cfg: StudyConfig, data: SourceData, entries: list[str], out: Path, *,
              shared_size: int, merge: str = "align-ridge"):
    """A product round over ``entries`` answering from the cache; returns its RoundResult."""
    settings = RunSettings(prototypes=list(entries), data="study", num_samples=len(data.train_ids),
                           shared_size=shared_size, target_dim=cfg.target_dim, seed=cfg.seed,
                           output_dir=str(out.resolve()), overwrite=True,
                           page_size=len(data.train_ids), refinement="static", merge=str(merge))
    settings.validate()
    drawn = RoundSamples.draw(settings, data.train)
    round_ids, shared_ids = drawn.ids, drawn.shared_ids
    if not np.array_equal(round_ids, data.train_ids):
        raise ValueError("the round selected other samples than the study encoded")
    participants = [CachedParticipant(entry, data.feats[entry], data.train_ids, shared_ids,
                                      data.rates[entry], parse_entry(entry)[1], k)
                    for k, entry in enumerate(entries)]
    return run_in_process(settings, data.train, participants)


def student_probe(cfg: StudyConfig, data: SourceData, dataset_dir: Path) -> dict[str, float]:
    """Train the small student on a round's dataset and linear-probe its features."""
    st = cfg.student
    config = TrainConfig(arch=st.get("arch", "small-cnn"), image_size=int(st.get("image_size", 32)),
                         epochs=int(st.get("epochs", 3)), batch_size=int(st.get("batch_size", 64)),
                         seed=cfg.seed, progress=False)
    t = time.perf_counter()
    result = train_on_optimized(load_optimized_dataset(dataset_dir), config)
    train_s = time.perf_counter() - t
    kw = dict(image_size=config.image_size)
    acc = linear_probe(extract_features(result.backbone, data.x_train, **kw), data.y_train,
                       extract_features(result.backbone, data.x_test, **kw), data.y_test,
                       min_steps=cfg.probe_min_steps, seed=cfg.seed, num_threads=cfg.threads).accuracy
    return {"acc": 100.0 * acc, "train_seconds": train_s}


def feature_probe(cfg: StudyConfig, data: SourceData, entry: str) -> float:
    return 100.0 * linear_probe(data.feats[entry], data.y_train, data.test_feats[entry], data.y_test,
                                min_steps=cfg.probe_min_steps, seed=cfg.seed,
                                num_threads=cfg.threads).accuracy


def sweep_residuals(cfg: StudyConfig, data: SourceData, work: Path) -> list[dict[str, Any]]:
    """Each alignment's residual on the test images and on held-out S, per shared size."""
    rows = []
    for size in [s for s in cfg.sweep if s <= len(data.train_ids)]:
        for merge in ALIGN_METHODS:
            result = run_round(cfg, data, cfg.merge_pool, work / f"sweep-{size}-{merge}", shared_size=size,
                               merge=merge)
            plan, names = result.plan.alignment, entry_of_round(result)
            proj = {entry: project(data.test_feats[entry],
                                   projection_matrix(data.test_feats[entry].shape[1], cfg.target_dim, cfg.seed))
                    for entry in cfg.merge_pool}
            ref_test = proj[names[plan.reference]]
            others = [n for n in names if n != plan.reference]
            test_res = [unexplained_variance(plan.maps[n].apply(proj[names[n]]), ref_test) for n in others]
            rows.append({"shared_size": size, "merge": merge, "reference": names[plan.reference],
                         "test_residual": float(np.mean(test_res)),
                         "holdout_residual": float(np.mean([plan.maps[n].holdout_residual for n in others])),
                         "per_participant_test_residual": {names[n]: r for n, r in zip(others, test_res)}})
            if merge in cfg.sweep_students:
                rows[-1]["student"] = student_probe(cfg, data, result.dataset_path)
            log(f"  |S|={size} {merge}: test residual {rows[-1]['test_residual']:.3f}, "
                f"held-out {rows[-1]['holdout_residual']:.3f}"
                + (f", student probe {rows[-1]['student']['acc']:.1f}" if "student" in rows[-1] else ""))
    return rows


def study_source(cfg: StudyConfig, source: dict[str, Any], cache_dir: Path, work: Path) -> dict[str, Any]:
    name = source["name"]
    log(f"[{name}] encoding (cached) {len(cfg.pool)} pool entries")
    data = load_source(cfg, source, cache_dir)
    out: dict[str, Any] = {"num_train": int(len(data.train_ids)), "num_test": int(len(data.test_ids))}
    if "scores" in cfg.parts or "merges" in cfg.parts:
        out.update(scores_and_merges(cfg, data, name, work))
    if "sweep" in cfg.parts:  # 3. Shared-size sweep of the alignments' residuals.
        out["sweep"] = sweep_residuals(cfg, data, work)
    return out


def scores_and_merges(cfg: StudyConfig, data: SourceData, name: str, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # 1. Scores on S (one round over the whole pool) and the two truths per prototype.
    pool_round = run_round(cfg, data, cfg.pool, work / "pool", shared_size=cfg.shared_size)
    entry_of = entry_of_round(pool_round)
    scores = {s: {entry_of[n]: v for n, v in vals.items()} for s, vals in pool_round.plan.alignment.scores.items()}
    truths: dict[str, dict[str, float]] = {"feature_probe": {}, "student_probe": {}}
    for k, entry in enumerate(cfg.pool):
        truths["feature_probe"][entry] = feature_probe(cfg, data, entry)
        single = run_round(cfg, data, [entry], work / f"single-{k}", shared_size=cfg.shared_size)
        truths["student_probe"][entry] = student_probe(cfg, data, single.dataset_path)["acc"]
        log(f"[{name}] {entry}: feature probe {truths['feature_probe'][entry]:.1f}, "
            f"student probe {truths['student_probe'][entry]:.1f}, "
            + ", ".join(f"{s} {scores[s][entry]:.3f}" for s in REFERENCE_SCORES))
    out["scores"], out["truths"] = scores, truths
    oriented = {s: [(1 if HIGHER_IS_BETTER[s] else -1) * scores[s][e] for e in cfg.pool] for s in REFERENCE_SCORES}
    out["spearman"] = {s: {t: spearman(oriented[s], [truths[t][e] for e in cfg.pool]) for t in truths}
                       for s in REFERENCE_SCORES}
    # How likely a rank correlation this strong is by chance over so few prototypes.
    out["spearman_p"] = {s: {t: spearman_p(oriented[s], [truths[t][e] for e in cfg.pool]) for t in truths}
                         for s in REFERENCE_SCORES}

    # 2. The default pool merged: unaligned and with every alignment.
    merges: dict[str, Any] = {}
    rows = [("unaligned", Merge.NONE)] + [(m.value, m) for m in ALIGN_METHODS]
    for label, merge in rows:
        result = run_round(cfg, data, cfg.merge_pool, work / f"merge-{label}", shared_size=cfg.shared_size,
                           merge=merge)
        alignment = result.plan.alignment
        merges[label] = {**student_probe(cfg, data, result.dataset_path),
                         "reference": entry_of_round(result)[alignment.reference],
                         "holdout_residual": {entry_of_round(result)[n]: m.holdout_residual
                                              for n, m in alignment.maps.items()}}
        log(f"[{name}] merge {label}: student probe {merges[label]['acc']:.1f}")
    best_single = max(cfg.merge_pool, key=lambda e: truths["student_probe"][e])
    merges["best_single"] = {"entry": best_single, "acc": truths["student_probe"][best_single]}
    out["merges"] = merges
    return out


def entry_of_round(result) -> dict[str, str]:
    return {p.name: p.prototype for p in result.manifest.participants}


def render(cfg: StudyConfig, results: dict[str, Any], command: str, seconds: float) -> str:
    """The study's Markdown summary."""
    st = cfg.student
    lines = ["# Reference selection and alignment study", "", f"Command: `{command}`", "",
             f"Wall clock {seconds / 60:.1f} min on this machine ({cfg.threads} torch threads). "
             f"Scores on a shared subset of {cfg.shared_size} train images, targets {cfg.target_dim}-d. "
             f"Student: {st.get('arch', 'small-cnn')} at {st.get('image_size', 32)} px, "
             f"{st.get('epochs', 3)} epochs, batch {st.get('batch_size', 64)}, on all train images; "
             f"linear probes: >= {cfg.probe_min_steps} Adam steps, one seed (so differences under "
             "~1 point are within noise).", ""]
    for name, res in results.items():
        lines += [f"## {name} ({res['num_train']} train / {res['num_test']} test)", ""]
        if "scores" in res:
            lines += _scores_and_merges_lines(cfg, res)
        if "sweep" in res:
            lines += _sweep_lines(res)
        lines.append("")
    return "\n".join(lines)


def _scores_and_merges_lines(cfg: StudyConfig, res: dict[str, Any]) -> list[str]:
    lines = ["| prototype | feature probe | student probe | " + " | ".join(
                  f"{s} {'↑' if HIGHER_IS_BETTER[s] else '↓'}" for s in REFERENCE_SCORES) + " |",
              "|---|---:|---:|" + "---:|" * len(REFERENCE_SCORES)]
    for e in cfg.pool:
        lines.append(f"| {e} | {res['truths']['feature_probe'][e]:.1f} | {res['truths']['student_probe'][e]:.1f} | "
                     + " | ".join(f"{res['scores'][s][e]:.4f}" for s in REFERENCE_SCORES) + " |")
    lines += ["", "Spearman (score oriented so that higher = better) with each truth, and its "
                  "permutation p-value where the study computed it:", "",
              "| score | feature probe | student probe |", "|---|---:|---:|"]
    pvals = res.get("spearman_p", {})

    def cell(s, t):
        p = pvals.get(s, {}).get(t)
        return f"{res['spearman'][s][t]:.2f}" + ("" if p is None else f" (p {p:.2f})")
    lines += [f"| {s} | {cell(s, 'feature_probe')} | {cell(s, 'student_probe')} |" for s in res["spearman"]]
    m = res["merges"]
    lines += ["", f"Merged default pool (student probe, reference by uniform value: "
                  f"{m['align-ridge']['reference']}); best single prototype on all data: "
                  f"{m['best_single']['entry']} {m['best_single']['acc']:.1f}", "",
              "| merge | student probe | mean held-out residual on S |", "|---|---:|---:|"]
    for label in ["unaligned", *ALIGN_METHODS]:
        hr = [v for v in m[label]["holdout_residual"].values() if v]
        lines.append(f"| {label} | {m[label]['acc']:.1f} | "
                     f"{np.mean(hr) if hr else 0.0:.3f} |")
    lines.append("")
    return lines


def _sweep_lines(res: dict[str, Any]) -> list[str]:
    lines = ["Shared-size sweep: residual (1 - R^2) of the maps to the reference, mean over "
                  "the non-reference participants; on the test images (never in S) / on the "
                  "held-out 20% of S:", "",
              "| |S| | " + " | ".join(ALIGN_METHODS) + " |", "|---:|" + "---:|" * len(ALIGN_METHODS)]
    for size in sorted({r["shared_size"] for r in res["sweep"]}):
        cells = {r["merge"]: r for r in res["sweep"] if r["shared_size"] == size}
        lines.append(f"| {size} | " + " | ".join(
            f"{cells[mg]['test_residual']:.3f} / {cells[mg]['holdout_residual']:.3f}"
            for mg in ALIGN_METHODS) + " |")
    students = [r for r in res["sweep"] if "student" in r]
    if students:
        lines += ["", "Student probe accuracy (%) on the merged dataset, per |S|:", "",
                  "| |S| | merge | student probe | train s |", "|---:|---|---:|---:|"]
        lines += [f"| {r['shared_size']} | {r['merge']} | {r['student']['acc']:.1f} | "
                  f"{r['student']['train_seconds']:.0f} |" for r in students]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="simulations/configs/selection.yaml")
    parser.add_argument("--out", default="simulations/results/selection")
    parser.add_argument("--cache-dir", default="/tmp/coopt-selection-cache")
    parser.add_argument("--sources", default="", help="comma list: only these sources of the config")
    args = parser.parse_args(argv)
    try:
        raw = yaml.safe_load(Path(args.config).read_text())
        cfg = StudyConfig(**raw)
        for entry in cfg.pool + cfg.merge_pool:
            parse_entry(entry)
        if set(cfg.sweep_students) - set(ALIGN_METHODS):
            raise ValueError(f"sweep_students must list merges of {', '.join(ALIGN_METHODS)}, "
                             f"got {cfg.sweep_students}")
        if not cfg.parts or set(cfg.parts) - set(STUDY_PARTS):
            raise ValueError(f"parts must be a non-empty list of {', '.join(STUDY_PARTS)}, got {cfg.parts}")
    except (OSError, TypeError, ValueError, yaml.YAMLError) as error:
        raise SystemExit(f"selection study config {args.config}: {error}") from None
    torch.set_num_threads(cfg.threads)
    cache_dir, out = Path(args.cache_dir), Path(args.out)
    wanted = [s for s in args.sources.split(",") if s]
    t0 = time.perf_counter()
    results = {}
    for source in cfg.sources:
        if wanted and source["name"] not in wanted:
            continue
        results[source["name"]] = study_source(cfg, source, cache_dir, cache_dir / "work" / slug(source["name"]))
    command = reproducing_command("simulations.selection_study", argv)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps({"command": command, "config": raw, "results": results},
                                                   indent=2))
    (out / "selection.md").write_text(render(cfg, results, command, time.perf_counter() - t0))
    log(f"wrote {out / 'selection.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
