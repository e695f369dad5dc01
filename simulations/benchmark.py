"""Benchmark: CoOpt (with and without alignment) vs BYOL at an equal training budget.

Fashion-MNIST, side by side, several seeds, the same student, augmentations, batch size,
optimizer and epoch budget for every trained row:

- floors and ceiling: raw pixels, a random-init student, each prototype's own features,
  a supervised student (labels, :func:`coopt_flower.training.train_supervised`);
- BYOL (:func:`coopt_flower.byol.train_byol`, momentum 0.99 -> 1.0 on a cosine schedule);
- each prototype alone (centralized: targets = that prototype's projected features of
  every training image);
- CoOpt without alignment (K IID shards, each participant's projected targets merged as is);
- CoOpt with alignment (same shards; shared subset S, reference = lowest uniform value,
  ridge maps applied: :func:`coopt_flower.platform.plan_alignment`);
- CoOpt with alignment and BYOL again for a second student architecture.

The CoOpt datasets are built with the functions the Flower platform uses
(``coopt_flower.data.select_samples / partition_iid / select_shared_subset`` with the run's
seed, ``coopt_flower.projection``, ``plan_alignment``), written with
:class:`~coopt_flower.dataset_format.DatasetWriter` and read back with
:func:`~coopt_flower.dataset_format.load_optimized_dataset` for training: the students
train on real optimized datasets, exactly as a user would.

Every training image is encoded once per prototype (no augmentation, the prototype's own
preprocessing, batch 128 as in the platform) and cached as ``.npy`` under ``--cache-dir``
(memory-mapped); every target set is derived from that cache. The measured throughput is
CoOpt's one-off encoding cost: a centralized single prototype encodes all N images; in the
collaborative setting participant k encodes its shard plus S, on its own machine, so the
wall-clock cost is the max over participants (the sum is the total compute).

Sizes (``Config``): 2000 training images per seed, 1000 test images, 32 px students, 5
epochs, batch 64, 3 seeds. The full 60k set does not fit this benchmark's CPU budget (a
shared 2-core machine, one torch thread: measured ~3 ms per image-epoch for small-cnn with two
views, ~7 ms for ResNet-18, ~1.5x that for BYOL, plus probing), and neither did the 3000 images
x 6-8 epochs first planned (~70 min estimated from a calibration under load).
The second student is ``torchvision:resnet18`` (ImageNet stem): ``resnet18-small`` (CIFAR
stem, 32x32 feature maps) measured ~95 ms per image-epoch, 20x small-cnn, too slow here.

After every epoch the student is probed (offline linear probe, :mod:`coopt_flower.probing`)
and the training time of the epoch is recorded without the probe. The per-epoch probe is
cheaper than the protocol's default (``--probe-epochs`` passes of Adam, ~800 steps on
2000 images, instead of >= 3000 steps); the final epoch is also probed with the default
protocol (``--full-probe-steps``). Every row uses the same probes.

Command (the committed results; ~50 minutes on a shared 2-core CPU, ~38 without the
supplementary 20-epoch BYOL row, ``--byol-long-epochs 0``)::

    python -m simulations.benchmark

and a smoke configuration that runs end to end in well under a minute::

    python -m simulations.benchmark --tiny --out-dir /tmp/coopt-benchmark-tiny

Outputs in ``--out-dir``: ``benchmark.json`` (everything, per seed and per epoch),
``benchmark.md`` (tables) and ``benchmark_probe_curves.png`` (probe accuracy vs epoch and vs
wall clock, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform as py_platform
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from coopt_flower.atomic import save_npy_atomic
from coopt_flower.config import DEFAULT_PROTOTYPES
from coopt_flower.data import (
    open_source,
    partition_iid,
    select_samples,
    select_shared_subset,
)
from coopt_flower.dataset_format import DatasetWriter, load_optimized_dataset
from coopt_flower.platform import plan_alignment
from coopt_flower.probing import extract_features, linear_probe, mean_std
from coopt_flower.projection import project, projection_matrix

RESULTS_DIR = Path(__file__).resolve().parent / "results"
JSON_NAME = "benchmark.json"
MD_NAME = "benchmark.md"
PLOT_NAME = "benchmark_probe_curves.png"

# Row names. Single-prototype rows are "single:<spec>".
RANDOM, SUPERVISED, BYOL = "random init", "supervised", "BYOL"
UNALIGNED, ALIGNED = "CoOpt (no alignment)", "CoOpt (aligned)"
BYOL_LONG = "BYOL, longer budget"  # supplementary: more epochs than everyone else
SINGLE = "single:"


@dataclass
class Config:
    """Everything that defines one benchmark run (stored in the results)."""

    num_train: int = 2000
    num_test: int = 1000
    epochs: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    prototypes: tuple[str, ...] = DEFAULT_PROTOTYPES
    proto_image_size: int = 96
    target_dim: int = 512
    shared_size: int = 256
    target_dtype: str = "float16"
    image_size: int = 32
    # 64, not 256: at this CPU budget (5 epochs of 2000 images) batch 256 gives 40 optimizer
    # steps, too few for any method to move off the random-init student (measured on seed 0:
    # supervised +2 points, BYOL +0); batch 64 gives 160 steps for the same images seen.
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    arch: str = "small-cnn"
    arch2: str = "torchvision:resnet18"
    # Supplementary BYOL row for the first student with this many epochs (0 = off): at the
    # equal budget BYOL may not improve on the random-init student at all, which leaves the
    # speedup undefined; a longer BYOL run gives it a target to measure against.
    byol_long_epochs: int = 20
    probe_epochs: int = 100
    full_probe_steps: int = 3000
    encode_batch_size: int = 128
    threads: int = 1
    data: str = "fashion-mnist"
    test_data: str = "fashion-mnist:test"
    test_seed: int = 0
    tiny: bool = False


TINY = dict(num_train=200, num_test=100, epochs=1, seeds=(0,),
            prototypes=("efficientnet-lite0", "onnx:open-nsfw"), proto_image_size=32,
            shared_size=32, probe_epochs=30, full_probe_steps=200, byol_long_epochs=2,
            tiny=True)


# --------------------------------------------------------------------------- logging

_T0 = time.perf_counter()


def log(message: str) -> None:
    elapsed = time.perf_counter() - _T0
    print(f"[{time.strftime('%H:%M:%S')} +{elapsed:7.1f}s] {message}", flush=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


# --------------------------------------------------------------------------- feature cache


def cached_features(cache_dir: Path, spec: str, image_size: int, source, ids: np.ndarray,
                    *, batch_size: int, split: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Prototype features of ``ids`` from the cache, encoding the ids it does not hold yet.

    The cache for (spec, image size, split) is a directory with ``ids.npy`` (sorted),
    ``features.npy`` (float32, memory-mapped on read) and ``meta.json`` (images encoded and
    seconds spent encoding them, i.e. the measured throughput; model build time apart).

    Returns
    -------
    features : np.ndarray
        float32 ``(len(ids), d)`` in the order of ``ids``.
    meta : dict
    """
    from coopt_flower.targets import encode_features

    folder = cache_dir / f"{slug(spec)}-{image_size}px" / split
    folder.mkdir(parents=True, exist_ok=True)
    ids_path, feats_path, meta_path = folder / "ids.npy", folder / "features.npy", folder / "meta.json"
    ids = np.asarray(ids, dtype=np.int64)
    if ids_path.exists() and feats_path.exists() and meta_path.exists():
        have = np.load(ids_path)
        meta = json.loads(meta_path.read_text())
    else:
        have, meta = np.empty(0, np.int64), {"spec": spec, "image_size": image_size,
                                             "split": split, "source": source.spec,
                                             "images_encoded": 0, "encode_seconds": 0.0,
                                             "build_seconds": 0.0, "torch_threads": []}
    missing = np.setdiff1d(ids, have)
    if missing.size:
        from coopt_flower.prototypes import create_prototype

        t = time.perf_counter()
        prototype = create_prototype(spec, image_size=image_size)
        meta["build_seconds"] += time.perf_counter() - t
        log(f"encoding {missing.size} {split} images with {spec} at {image_size} px "
            f"(cache: {have.size} already)")
        cpu = time.process_time()
        new, stats = encode_features(prototype, source, missing, batch_size=batch_size, progress=False)
        meta["images_encoded"] += int(stats.num_images)
        meta["encode_seconds"] += float(stats.seconds)
        meta["encode_cpu_seconds"] = meta.get("encode_cpu_seconds", 0.0) + time.process_time() - cpu
        meta["dim"] = int(prototype.output_dim)
        meta["torch_threads"] = sorted(set(meta["torch_threads"]) | {torch.get_num_threads()})
        log(f"  {spec}: {stats.images_per_second:.1f} img/s ({stats.seconds:.1f} s)")
        old = np.load(feats_path) if have.size else np.empty((0, new.shape[1]), np.float32)
        all_ids = np.concatenate([have, missing])
        order = np.argsort(all_ids, kind="stable")
        save_npy_atomic(feats_path, np.concatenate([old, new])[order])
        save_npy_atomic(ids_path, all_ids[order])
        meta_path.write_text(json.dumps(meta, indent=2))
        del prototype
    have = np.load(ids_path)
    features = np.load(feats_path, mmap_mode="r")
    rows = np.searchsorted(have, ids)
    meta = dict(meta, images_per_second=meta["images_encoded"] / max(meta["encode_seconds"], 1e-9),
                images_per_cpu_second=meta["images_encoded"] / max(meta.get("encode_cpu_seconds", 0.0), 1e-9))
    return np.asarray(features[rows], dtype=np.float32), meta


# --------------------------------------------------------------------------- datasets


def write_dataset(path: Path, sample_ids: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]],
                  participants: list[dict[str, Any]], cfg: Config, extra: dict[str, Any],
                  extra_arrays: Optional[dict[str, np.ndarray]] = None):
    """Write one optimized dataset (one ``(ids, targets)`` part per participant) and load it."""
    with DatasetWriter(path, sample_ids, cfg.target_dim, cfg.target_dtype, overwrite=True) as writer:
        for owner, (ids, targets) in enumerate(parts):
            writer.write(ids, targets, owner)
        manifest = {"source": cfg.data, "participants": participants, "benchmark": extra}
        writer.commit(manifest, extra_arrays=extra_arrays)
    return load_optimized_dataset(path)


def build_datasets(cfg: Config, seed: int, sample_ids: np.ndarray, feats: dict[str, np.ndarray],
                   metas: dict[str, dict], work_dir: Path) -> dict[str, Any]:
    """The seed's single-prototype, unaligned and aligned datasets, as the platform builds them.

    ``feats[spec]`` holds the prototype's raw features of ``sample_ids`` (same order).
    """
    row_of = {int(i): r for r, i in enumerate(sample_ids)}
    projected = {
        spec: project(f, projection_matrix(f.shape[1], cfg.target_dim, seed))
        for spec, f in feats.items()
    }
    names = [f"p{k}" for k in range(len(cfg.prototypes))]
    spec_of = dict(zip(names, cfg.prototypes))
    shared_ids = select_shared_subset(sample_ids, cfg.shared_size, seed)
    shared_rows = np.array([row_of[int(i)] for i in shared_ids])
    shards = partition_iid(sample_ids, len(names), seed)
    shared = {name: projected[spec_of[name]][shared_rows] for name in names}
    t = time.perf_counter()
    plan = plan_alignment(shared, seed=seed)
    plan_seconds = time.perf_counter() - t

    def participant(name, count, aligned):
        spec = spec_of[name]
        m = plan.maps[name]
        return {"name": name, "prototype": spec, "output_dim": int(feats[spec].shape[1]),
                "image_size": cfg.proto_image_size, "num_samples": int(count),
                "uniform_value": plan.uniform_values[name],
                "fit_residual": m.fit_residual if aligned else None,
                "holdout_residual": m.holdout_residual if aligned else None,
                "alpha": m.alpha if aligned else None,
                "images_per_second": metas[spec]["images_per_second"]}

    out: dict[str, Any] = {"datasets": {}}
    seed_dir = work_dir / f"seed-{seed}"
    for spec in cfg.prototypes:
        name = next(n for n in names if spec_of[n] == spec)
        info = participant(name, len(sample_ids), aligned=False)
        info["name"] = "p0"
        out["datasets"][SINGLE + spec] = write_dataset(
            seed_dir / f"single-{slug(spec)}", sample_ids, [(sample_ids, projected[spec])],
            [info], cfg, {"row": SINGLE + spec, "seed": seed})
    shard_rows = [np.array([row_of[int(i)] for i in shard]) for shard in shards]
    shared_stack = np.stack([shared[n] for n in names])
    for row, aligned in ((UNALIGNED, False), (ALIGNED, True)):
        parts = []
        for name, shard, rows in zip(names, shards, shard_rows):
            targets = projected[spec_of[name]][rows]
            parts.append((shard, plan.maps[name].apply(targets) if aligned else targets))
        out["datasets"][row] = write_dataset(
            seed_dir / slug(row), sample_ids, parts,
            [participant(n, len(s), aligned) for n, s in zip(names, shards)], cfg,
            {"row": row, "seed": seed, "reference": plan.reference if aligned else None,
             "shared_ids": shared_ids.tolist()},
            extra_arrays={"shared_embeddings.npy": shared_stack})

    # Encoding cost: centralized = all N images; collaborative = shard_k + S on participant k.
    rate = {spec: metas[spec]["images_per_second"] for spec in cfg.prototypes}
    rate_cpu = {spec: metas[spec]["images_per_cpu_second"] for spec in cfg.prototypes}
    collab = {name: (len(shard) + len(shared_ids)) / rate[spec_of[name]]
              for name, shard in zip(names, shards)}
    collab_cpu = {name: (len(shard) + len(shared_ids)) / rate_cpu[spec_of[name]]
                  for name, shard in zip(names, shards)}
    out["alignment"] = {
        "reference": plan.reference, "reference_prototype": spec_of[plan.reference],
        "plan_seconds": plan_seconds,
        "participants": [participant(n, len(s), True) for n, s in zip(names, shards)],
    }
    out["encoding"] = {
        "centralized_seconds": {spec: len(sample_ids) / rate[spec] for spec in cfg.prototypes},
        "collaborative_seconds": {spec_of[n]: s for n, s in collab.items()},
        "collaborative_sum_seconds": float(sum(collab.values())),
        "collaborative_max_seconds": float(max(collab.values())),
        "collaborative_sum_cpu_seconds": float(sum(collab_cpu.values())),
        "collaborative_max_cpu_seconds": float(max(collab_cpu.values())),
    }
    return out


# --------------------------------------------------------------------------- probing


@dataclass
class ProbeSet:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_size: int
    probe_epochs: int
    full_probe_steps: int
    seed: int

    def features(self, backbone) -> tuple[torch.Tensor, torch.Tensor]:
        kw = dict(image_size=self.image_size)
        return extract_features(backbone, self.x_train, **kw), extract_features(backbone, self.x_test, **kw)

    def probe(self, f_train, f_test, full: bool = False) -> dict[str, float]:
        out = {"acc": linear_probe(f_train, self.y_train, f_test, self.y_test,
                                   epochs=self.probe_epochs, seed=self.seed).accuracy}
        if full:
            out["full_acc"] = linear_probe(f_train, self.y_train, f_test, self.y_test, epochs=None,
                                           min_steps=self.full_probe_steps, seed=self.seed).accuracy
        return out

    def probe_backbone(self, backbone, full: bool = False) -> dict[str, float]:
        t = time.perf_counter()
        out = self.probe(*self.features(backbone), full=full)
        out["probe_seconds"] = time.perf_counter() - t
        return out


# --------------------------------------------------------------------------- training rows


def train_row(row: str, arch: str, cfg: Config, seed: int, probes: ProbeSet,
              x_train: np.ndarray, y_train: np.ndarray, dataset=None,
              epochs: Optional[int] = None) -> dict[str, Any]:
    """Train one row for ``epochs`` (default ``cfg.epochs``), probing after every epoch."""
    from coopt_flower.byol import train_byol
    from coopt_flower.training import TrainConfig, train_on_optimized, train_supervised

    epochs = int(epochs or cfg.epochs)
    curve: list[dict[str, float]] = []
    last = [time.perf_counter()]
    cpu_last = [time.process_time()]
    cpu_epochs: list[float] = []

    def on_epoch_end(epoch: int, backbone) -> dict[str, float]:
        # CPU seconds of the process during the epoch: with one torch thread this is the
        # compute the epoch needed, whatever else runs on the machine (wall clock is not).
        cpu_epochs.append(time.process_time() - cpu_last[0])
        seconds = time.perf_counter() - last[0]
        result = probes.probe_backbone(backbone, full=epoch == epochs)
        curve.append(result)
        full = f", full probe {result['full_acc']:.4f}" if "full_acc" in result else ""
        log(f"  seed {seed} {arch} {row}: epoch {epoch}/{epochs} probe {result['acc']:.4f}"
            f"{full} (train {seconds:.1f} s, probe {result['probe_seconds']:.1f} s)")
        last[0] = time.perf_counter()
        cpu_last[0] = time.process_time()
        return result

    config = TrainConfig(arch=arch, image_size=cfg.image_size, epochs=epochs,
                         batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                         seed=seed, progress=False)
    t = time.perf_counter()
    if row == SUPERVISED:
        result = train_supervised(x_train, y_train, config, on_epoch_end=on_epoch_end)
    elif row in (BYOL, BYOL_LONG):
        result = train_byol(x_train, config, on_epoch_end=on_epoch_end)
    else:
        result = train_on_optimized(dataset, config, on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - t
    return {"epoch_times": [float(s) for s in result.epoch_times],
            "epoch_cpu_times": cpu_epochs,
            "losses": [float(v) for v in result.losses],
            "probe_acc": [c["acc"] for c in curve],
            "full_probe_acc": curve[-1]["full_acc"],
            "probe_seconds": [c["probe_seconds"] for c in curve],
            "wall_seconds": wall}


# --------------------------------------------------------------------------- summary


def curve_points(run: dict[str, Any], init_acc: float,
                 clock: str = "epoch_times") -> tuple[np.ndarray, np.ndarray]:
    """(cumulative training seconds, probe accuracy) per epoch, epoch 0 = random init.

    ``clock`` is ``"epoch_times"`` (wall clock) or ``"epoch_cpu_times"`` (process CPU time).
    """
    times = np.concatenate([[0.0], np.cumsum(run[clock])])
    accs = np.concatenate([[init_acc], run["probe_acc"]])
    return times, accs


def time_to_reach(times: np.ndarray, accs: np.ndarray, target: float) -> Optional[float]:
    """First time the piecewise-linear curve reaches ``target`` (None if it never does)."""
    if accs[0] >= target:
        return 0.0
    for i in range(1, len(accs)):
        if accs[i] >= target:
            frac = (target - accs[i - 1]) / max(accs[i] - accs[i - 1], 1e-12)
            return float(times[i - 1] + frac * (times[i] - times[i - 1]))
    return None


def acc_at_time(times: np.ndarray, accs: np.ndarray, t: float) -> tuple[float, bool]:
    """Accuracy of the curve at time ``t`` (and whether the run was still training then)."""
    if t >= times[-1]:
        return float(accs[-1]), False
    return float(np.interp(t, times, accs)), True


def speedup(byol: dict[str, np.ndarray], coopt: dict[str, np.ndarray],
            encoding: tuple[float, float, float, float]) -> dict[str, Any]:
    """BYOL's time to reach its final accuracy / CoOpt's time to reach the same accuracy.

    Both times come from the mean curves (linear interpolation; epoch 0 = the random-init
    student, where every curve starts). ``encoding`` is CoOpt's one-off encoding cost:
    (max over participants, sum, the same two in CPU seconds). The ratio is None when CoOpt
    never reaches the target, or when BYOL ends no better than the random-init student
    (both "reach" it at time 0).
    """
    enc_max, enc_sum, enc_max_cpu, enc_sum_cpu = encoding
    target = float(byol["accs"][-1])
    init_acc = float(coopt["accs"][0])
    degenerate = target <= init_acc
    epochs = np.arange(len(coopt["accs"]), dtype=float)
    out: dict[str, Any] = {
        "byol_epochs": len(byol["accs"]) - 1, "byol_final_acc": target,
        "random_init_acc": init_acc, "byol_not_above_init": degenerate,
        "encoding_max_seconds": enc_max, "encoding_sum_seconds": enc_sum,
        "coopt_epochs_to_reach": time_to_reach(epochs, coopt["accs"], target),
    }
    for clock, suffix, e_max, e_sum in (("times", "", enc_max, enc_sum),
                                        ("cpu_times", "_cpu", enc_max_cpu, enc_sum_cpu)):
        t_byol = time_to_reach(byol[clock], byol["accs"], target)  # first time BYOL gets there
        t_coopt = time_to_reach(coopt[clock], coopt["accs"], target)
        ok = t_coopt is not None and not degenerate
        out[f"byol{suffix}_seconds_to_final"] = t_byol
        out[f"byol{suffix}_train_seconds"] = float(byol[clock][-1])
        out[f"coopt{suffix}_seconds_to_reach"] = t_coopt
        out[f"training_only{suffix}"] = t_byol / t_coopt if ok else None
        out[f"with_encoding_max{suffix}"] = t_byol / (t_coopt + e_max) if ok else None
        out[f"with_encoding_sum{suffix}"] = t_byol / (t_coopt + e_sum) if ok else None
    out["reached"] = out["coopt_seconds_to_reach"] is not None
    return out


def summarize(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    """Means over seeds, equal-wall-clock accuracies, speedups and the target checks."""
    seeds = [str(s) for s in cfg.seeds]
    archs = [cfg.arch, cfg.arch2]
    summary: dict[str, Any] = {"rows": [], "floors": [], "speedup": {}, "equal_wall_clock": {}}

    # Floors (features probed directly).
    for name in ["raw pixels"] + [f"features:{s}" for s in cfg.prototypes]:
        vals = [results["seeds"][s]["floors"][name] for s in seeds]
        m, sd = mean_std([v["acc"] for v in vals])
        fm, fsd = mean_std([v["full_acc"] for v in vals])
        summary["floors"].append({"name": name, "dim": vals[0].get("dim"), "acc_mean": m,
                                  "acc_std": sd, "full_acc_mean": fm, "full_acc_std": fsd})

    mean_curves: dict[str, dict[str, Any]] = {}
    for arch in archs:
        init = [results["seeds"][s]["runs"][arch][RANDOM] for s in seeds]
        m, sd = mean_std([r["acc"] for r in init])
        fm, fsd = mean_std([r["full_acc"] for r in init])
        summary["rows"].append({"row": RANDOM, "arch": arch, "acc_mean": m, "acc_std": sd,
                                "full_acc_mean": fm, "full_acc_std": fsd, "train_seconds": 0.0,
                                "epoch_seconds": 0.0})
        for row in results["seeds"][seeds[0]]["runs"][arch]:
            if row == RANDOM:
                continue
            runs = [results["seeds"][s]["runs"][arch][row] for s in seeds]
            inits = [results["seeds"][s]["runs"][arch][RANDOM]["acc"] for s in seeds]
            pts = [curve_points(r, a) for r, a in zip(runs, inits)]
            times = np.mean([p[0] for p in pts], axis=0)
            accs = np.mean([p[1] for p in pts], axis=0)
            accs_std = np.std([p[1] for p in pts], axis=0)
            cpu_times = np.mean([curve_points(r, a, "epoch_cpu_times")[0]
                                 for r, a in zip(runs, inits)], axis=0)
            mean_curves[f"{arch}|{row}"] = {"times": times, "accs": accs, "cpu_times": cpu_times}
            m, sd = mean_std([r["probe_acc"][-1] for r in runs])
            fm, fsd = mean_std([r["full_probe_acc"] for r in runs])
            summary["rows"].append({
                "row": row, "arch": arch, "acc_mean": m, "acc_std": sd,
                "full_acc_mean": fm, "full_acc_std": fsd,
                "train_seconds": float(times[-1]),
                "epochs": len(runs[0]["epoch_times"]),
                "epoch_seconds": float(times[-1] / len(runs[0]["epoch_times"])),
                "train_cpu_seconds": float(cpu_times[-1]),
                "curve_cpu_seconds": cpu_times.tolist(),
                "curve_epochs": list(range(len(times))),
                "curve_seconds": times.tolist(), "curve_acc_mean": accs.tolist(),
                "curve_acc_std": accs_std.tolist(),
            })

    enc = [results["seeds"][s]["encoding"] for s in seeds]
    enc_max = float(np.mean([e["collaborative_max_seconds"] for e in enc]))
    enc_sum = float(np.mean([e["collaborative_sum_seconds"] for e in enc]))
    enc_max_cpu = float(np.mean([e["collaborative_max_cpu_seconds"] for e in enc]))
    enc_sum_cpu = float(np.mean([e["collaborative_sum_cpu_seconds"] for e in enc]))
    summary["encoding"] = {
        "collaborative_max_seconds": enc_max, "collaborative_sum_seconds": enc_sum,
        "collaborative_max_cpu_seconds": enc_max_cpu, "collaborative_sum_cpu_seconds": enc_sum_cpu,
        "centralized_seconds": {spec: float(np.mean([e["centralized_seconds"][spec] for e in enc]))
                                for spec in cfg.prototypes},
        "images_per_second": results["encoding_rates"],
        "images_per_cpu_second": {spec: results["encoding_meta"][spec]["images_per_cpu_second"]
                                  for spec in cfg.prototypes},
    }

    for arch in archs:
        coopt = mean_curves[f"{arch}|{ALIGNED}"]
        byol = mean_curves[f"{arch}|{BYOL}"]
        budget = float(coopt["times"][-1])
        summary["equal_wall_clock"][arch] = {"budget_seconds": budget, "rows": {}}
        for key, c in mean_curves.items():
            a, row = key.split("|", 1)
            if a != arch:
                continue
            acc, running = acc_at_time(c["times"], c["accs"], budget)
            summary["equal_wall_clock"][arch]["rows"][row] = {
                "acc": acc, "finished_before_budget": not running,
                "train_seconds": float(c["times"][-1])}
        enc_costs = (enc_max, enc_sum, enc_max_cpu, enc_sum_cpu)
        summary["speedup"][arch] = speedup(byol, coopt, enc_costs)
        long = mean_curves.get(f"{arch}|{BYOL_LONG}")
        if long is not None:
            summary.setdefault("speedup_vs_longer_byol", {})[arch] = speedup(long, coopt, enc_costs)

    summary["targets"] = check_targets(cfg, summary)
    return summary


def _row(summary: dict[str, Any], row: str, arch: str) -> dict[str, Any]:
    return next(r for r in summary["rows"] if r["row"] == row and r["arch"] == arch)


def check_targets(cfg: Config, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed."""
    checks = []
    for arch in (cfg.arch, cfg.arch2):
        al, by = _row(summary, ALIGNED, arch), _row(summary, BYOL, arch)
        gap = 100 * (al["acc_mean"] - by["acc_mean"])
        gap_full = 100 * (al["full_acc_mean"] - by["full_acc_mean"])
        checks.append({"target": f"{arch}: CoOpt (aligned) >= BYOL + 5 points at equal epochs",
                       "value": f"{gap:+.1f} points (full probe {gap_full:+.1f})",
                       "met": gap >= 5.0 and gap_full >= 5.0})
        sp = summary["speedup"][arch]
        why = ("undefined: BYOL ended at or below the random-init student"
               if sp["byol_not_above_init"] else "CoOpt never reached BYOL's final accuracy")
        for key, label in (("training_only", "training time"),
                           ("with_encoding_max", "with encoding, parallel participants")):
            val = sp[key]
            checks.append({"target": f"{arch}: speedup >= 1.9x ({label})",
                           "value": why if val is None else f"{val:.2f}x",
                           "met": val is not None and val >= 1.9})
    for arch, sp in summary.get("speedup_vs_longer_byol", {}).items():
        val = sp["training_only"]
        why = ("undefined: BYOL ended at or below the random-init student"
               if sp["byol_not_above_init"] else
               f"CoOpt ({cfg.epochs} epochs) never reached it")
        enc = sp["with_encoding_max"]
        checks.append({"target": f"{arch}: (supplementary) speedup >= 1.9x vs BYOL trained "
                                 f"{sp['byol_epochs']} epochs",
                       "value": why if val is None else
                       f"{val:.2f}x training, {enc:.2f}x with encoding (parallel)",
                       "met": val is not None and val >= 1.9})
    al, un = _row(summary, ALIGNED, cfg.arch), _row(summary, UNALIGNED, cfg.arch)
    diff = 100 * (al["acc_mean"] - un["acc_mean"])
    diff_full = 100 * (al["full_acc_mean"] - un["full_acc_mean"])
    noise = 100 * 2 * math.sqrt((al["acc_std"] ** 2 + un["acc_std"] ** 2) / 2)
    checks.append({"target": f"{cfg.arch}: aligned clearly above unaligned "
                             "(> 1 point and > 2 pooled std)",
                   "value": f"{diff:+.1f} points (2 pooled std = {noise:.1f}; "
                            f"full probe {diff_full:+.1f})",
                   "met": diff > max(1.0, noise) and diff_full > 1.0})
    singles = [r for r in summary["rows"] if r["arch"] == cfg.arch and r["row"].startswith(SINGLE)]
    best = max(singles, key=lambda r: r["acc_mean"])
    best_full = max(singles, key=lambda r: r["full_acc_mean"])
    diff = 100 * (al["acc_mean"] - best["acc_mean"])
    diff_full = 100 * (al["full_acc_mean"] - best_full["full_acc_mean"])
    checks.append({"target": f"{cfg.arch}: aligned not more than 1 point below the best single "
                             "prototype",
                   "value": f"{diff:+.1f} points vs {best['row'][len(SINGLE):]} (full probe "
                            f"{diff_full:+.1f} vs {best_full['row'][len(SINGLE):]})",
                   "met": diff >= -1.0 and diff_full >= -1.0})
    return checks


# --------------------------------------------------------------------------- report


def _pct(m: float, s: Optional[float] = None) -> str:
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def _speedup_table(speedups: dict[str, dict[str, Any]]) -> list[str]:
    def ratio(v):
        return "-" if v is None else f"{v:.2f}x"

    def secs(v):
        return "never" if v is None else f"{v:.0f}"

    lines = ["| student | BYOL epochs | BYOL final probe | clock | BYOL time to it (s) | "
             "CoOpt time to it (s) | speedup, training | + encoding (parallel, max) | "
             "+ encoding (sum) |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for arch, sp in speedups.items():
        for clock, suffix in (("wall", ""), ("CPU", "_cpu")):
            note = ""
            if sp["byol_not_above_init"]:
                note = f" (random init: {_pct(sp['random_init_acc'])}; ratio undefined)"
            lines.append(
                f"| {arch} | {sp['byol_epochs']} | {_pct(sp['byol_final_acc'])}{note} | {clock} | "
                f"{secs(sp[f'byol{suffix}_seconds_to_final'])} | "
                f"{secs(sp[f'coopt{suffix}_seconds_to_reach'])} | "
                f"{ratio(sp[f'training_only{suffix}'])} | {ratio(sp[f'with_encoding_max{suffix}'])} | "
                f"{ratio(sp[f'with_encoding_sum{suffix}'])} |")
    lines += ["", "Wall: training wall clock (other users shared this machine); CPU: process CPU "
                  "seconds with one torch thread, i.e. the compute each method needed. Encoding "
                  "costs are added on the same clock."]
    return lines


def render_markdown(cfg: Config, results: dict[str, Any], summary: dict[str, Any]) -> str:
    n_seeds = len(cfg.seeds)
    lines = [
        "# Benchmark: CoOpt vs BYOL at an equal training budget",
        "",
        f"Command: `{results['command'].replace(' --resume', '').replace(' --report-only', '')}`",
        "",
        f"Fashion-MNIST subset: {cfg.num_train} training images per seed "
        f"(`select_samples(60000, {cfg.num_train}, seed)`), {cfg.num_test} test images "
        f"(fixed, seed {cfg.test_seed}); students at {cfg.image_size} px (from 28 px), "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} wd "
        f"{cfg.weight_decay:g}, two augmented views per step for every method; seeds "
        f"{', '.join(map(str, cfg.seeds))}. Prototypes at {cfg.proto_image_size} px, "
        f"targets {cfg.target_dim}-d ({cfg.target_dtype}), {len(cfg.prototypes)} participants "
        f"(IID shards), shared subset {cfg.shared_size}. {cfg.threads} torch thread(s) on "
        f"{results['environment']['cpu_count']} CPU cores; wall clock of this invocation "
        f"{results['wall_seconds'] / 60:.1f} min"
        + (f" ({len(results['reused_runs'])} training runs reused from an earlier invocation "
           f"with `--resume`; each run's own wall clock is in the JSON)."
           if results.get("reused_runs") else "."),
        "",
        f"Probe: after every epoch, features of the {cfg.num_train} training images (labels) "
        f"and {cfg.num_test} test images; `nn.Linear`, Adam lr 3e-4, batch 256, "
        f"{cfg.probe_epochs} epochs, mean test accuracy of the last 3 epochs (\"probe\"). The "
        f"final epoch is also probed with >= {cfg.full_probe_steps} steps (\"full probe\", the "
        "protocol's default). Accuracies in %, mean ± std over "
        f"{n_seeds} seed(s). Training time excludes probing.",
        "",
        "## (a) Equal epochs",
        "",
        "| method | student | epochs | probe | full probe | train time (s) | s/epoch | "
        "train CPU (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(f"| {r['row']} | {r['arch']} | {r.get('epochs', 0)} | "
                     f"{_pct(r['acc_mean'], r['acc_std'])} | "
                     f"{_pct(r['full_acc_mean'], r['full_acc_std'])} | "
                     f"{r['train_seconds']:.0f} | {r['epoch_seconds']:.1f} | "
                     f"{r.get('train_cpu_seconds', 0.0):.0f} |")
    lines += ["", "Floors (features probed directly, no student):", "",
              "| features | dim | probe | full probe |", "|---|---:|---:|---:|"]
    for f in summary["floors"]:
        dim = f["dim"] if f["dim"] is not None else "784"
        lines.append(f"| {f['name']} | {dim} | {_pct(f['acc_mean'], f['acc_std'])} | "
                     f"{_pct(f['full_acc_mean'], f['full_acc_std'])} |")
    for arch, eq in summary["equal_wall_clock"].items():
        lines += ["", f"## (b) Equal wall clock ({arch}): accuracy within CoOpt (aligned)'s "
                      f"{eq['budget_seconds']:.0f} s of training", "",
                  "| method | probe at budget | its own training time (s) |", "|---|---:|---:|"]
        for row, v in eq["rows"].items():
            note = " (finished earlier)" if v["finished_before_budget"] and row != ALIGNED else ""
            lines.append(f"| {row} | {_pct(v['acc'])}{note} | {v['train_seconds']:.0f} |")
    lines += ["", "## (c) Speedup: BYOL's training time to its final accuracy / CoOpt (aligned)'s "
                  "time to the same accuracy", ""]
    lines += _speedup_table(summary["speedup"])
    if summary.get("speedup_vs_longer_byol"):
        lines += ["", f"Supplementary: the same against BYOL trained {cfg.byol_long_epochs} epochs "
                      f"(first student only; CoOpt still trained {cfg.epochs} epochs):", ""]
        lines += _speedup_table(summary["speedup_vs_longer_byol"])
    enc = summary["encoding"]
    lines += ["", "Curves are means over seeds (cumulative training seconds, probe accuracy per "
                  "epoch, epoch 0 = the random-init student), interpolated linearly.", "",
              "## Encoding cost (one-off, CoOpt's side)", "",
              "| prototype | img/s (wall) | img/CPU-s | centralized: all images (s) | "
              "collaborative: shard + S (s) |",
              "|---|---:|---:|---:|---:|"]
    collab = {spec: float(np.mean([results["seeds"][str(s)]["encoding"]["collaborative_seconds"][spec]
                                   for s in cfg.seeds])) for spec in cfg.prototypes}
    for spec in cfg.prototypes:
        lines.append(f"| `{spec}` | {enc['images_per_second'][spec]:.1f} | "
                     f"{enc['images_per_cpu_second'][spec]:.1f} | "
                     f"{enc['centralized_seconds'][spec]:.1f} | {collab[spec]:.1f} |")
    lines += [f"| collaborative, max over participants (wall clock) | | | | "
              f"{enc['collaborative_max_seconds']:.1f} |",
              f"| collaborative, sum over participants (compute) | | | | "
              f"{enc['collaborative_sum_seconds']:.1f} |",
              "", "## Alignment per seed", "",
              "| seed | reference (lowest uniform value) | participant | prototype | uniform value | "
              "residual on S | held-out residual |", "|---|---|---|---|---:|---:|---:|"]
    for s in cfg.seeds:
        a = results["seeds"][str(s)]["alignment"]
        for p in a["participants"]:
            lines.append(f"| {s} | {a['reference']} (`{a['reference_prototype']}`) | {p['name']} | "
                         f"`{p['prototype']}` | {p['uniform_value']:.4f} | "
                         f"{p['fit_residual']:.3f} | {p['holdout_residual']:.3f} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for c in summary["targets"]:
        lines.append(f"| {c['target']} | {c['value']} | {'yes' if c['met'] else 'no'} |")
    lines += ["", f"![probe curves]({PLOT_NAME})", ""]
    return "\n".join(lines)


def plot(cfg: Config, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), squeeze=False)
    styles = {SUPERVISED: ("black", "-"), BYOL: ("tab:red", "-"), BYOL_LONG: ("tab:red", ":"),
              UNALIGNED: ("tab:orange", "-"),
              ALIGNED: ("tab:blue", "-")}
    single_colors = ["tab:green", "tab:olive", "tab:cyan", "tab:purple", "tab:brown", "tab:pink"]
    floors = {f["name"]: f["acc_mean"] for f in summary["floors"]}
    for i, arch in enumerate((cfg.arch, cfg.arch2)):
        rows = [r for r in summary["rows"] if r["arch"] == arch and r["row"] != RANDOM]
        for j, xkey in enumerate(("curve_epochs", "curve_seconds")):
            ax = axes[i][j]
            k = 0
            for r in rows:
                if r["row"].startswith(SINGLE):
                    color, ls = single_colors[k % len(single_colors)], "--"
                    k += 1
                else:
                    color, ls = styles.get(r["row"], ("gray", "-"))
                ax.plot(r[xkey], 100 * np.asarray(r["curve_acc_mean"]), ls, color=color,
                        marker="o", ms=3, lw=2 if r["row"] in (ALIGNED, BYOL) else 1.2,
                        label=r["row"].replace(SINGLE, "single "))
            ax.axhline(100 * floors["raw pixels"], color="gray", ls=":", lw=1,
                       label="raw pixels (floor)")
            best = max((v, n) for n, v in floors.items() if n.startswith("features:"))
            ax.axhline(100 * best[0], color="tab:green", ls=":", lw=1,
                       label=f"best prototype features ({best[1][len('features:'):]})")
            ax.set_xlabel("epoch" if j == 0 else "training wall clock (s, probe excluded)")
            ax.set_ylabel("linear probe accuracy (%)")
            ax.set_title(f"{arch}: probe accuracy vs {'epoch' if j == 0 else 'wall clock'} "
                         f"(mean of {len(cfg.seeds)} seed(s))")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> tuple[Config, argparse.Namespace]:
    d = Config()
    p = argparse.ArgumentParser(description="CoOpt vs BYOL benchmark on Fashion-MNIST.")
    p.add_argument("--tiny", action="store_true",
                   help="smoke configuration (200 train / 100 test, 1 epoch, 1 seed, 2 prototypes "
                        "at 32 px); explicit options still override it")
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-test", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--prototypes", help=f"comma-separated specs (default {','.join(DEFAULT_PROTOTYPES)})")
    p.add_argument("--proto-image-size", type=int)
    p.add_argument("--target-dim", type=int)
    p.add_argument("--shared-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--arch")
    p.add_argument("--arch2")
    p.add_argument("--probe-epochs", type=int)
    p.add_argument("--full-probe-steps", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--byol-long-epochs", type=int,
                   help="epochs of the supplementary longer BYOL row (0 = off; default 20)")
    p.add_argument("--cache-dir", default="/tmp/coopt-benchmark-cache",
                   help="prototype feature cache (.npy, reused across runs)")
    p.add_argument("--work-dir", default=None,
                   help="optimized datasets and per-run results (default: <cache-dir>/work[-tiny])")
    p.add_argument("--out-dir", default=None,
                   help=f"results (default: {RESULTS_DIR} for the full run, "
                        "/tmp/coopt-benchmark-tiny for --tiny)")
    p.add_argument("--resume", action="store_true",
                   help="reuse per-run results already in the work dir (same config)")
    p.add_argument("--report-only", action="store_true",
                   help="re-render benchmark.md and the plot from an existing benchmark.json")
    args = p.parse_args(argv)
    values = asdict(d)
    if args.tiny:
        values.update(TINY)
    for name in ("num_train", "num_test", "epochs", "proto_image_size", "target_dim",
                 "shared_size", "image_size", "batch_size", "arch", "arch2", "probe_epochs",
                 "full_probe_steps", "threads", "byol_long_epochs"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.seeds:
        values["seeds"] = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    if args.prototypes:
        values["prototypes"] = tuple(s.strip() for s in args.prototypes.split(",") if s.strip())
    values["seeds"], values["prototypes"] = tuple(values["seeds"]), tuple(values["prototypes"])
    return Config(**values), args


def run(cfg: Config, *, cache_dir: Path, work_dir: Path, out_dir: Path, resume: bool = False,
        command: str = "") -> dict[str, Any]:
    """Run the whole benchmark and write the JSON, the Markdown and the plot."""
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    runs_dir = work_dir / "runs"
    runs_dir.mkdir(exist_ok=True)
    log(f"config: {json.dumps(asdict(cfg), sort_keys=True)}")
    # A stored run is reused only under the same settings; the supplementary row's epoch
    # count is part of the run's key instead, so changing it does not invalidate the others.
    cfg_key = json.dumps({k: v for k, v in asdict(cfg).items() if k != "byol_long_epochs"},
                         sort_keys=True)

    train, test = open_source(cfg.data), open_source(cfg.test_data)
    sample_ids = {s: select_samples(len(train), cfg.num_train, s) for s in cfg.seeds}
    test_ids = select_samples(len(test), cfg.num_test, cfg.test_seed)
    union = np.unique(np.concatenate(list(sample_ids.values())))
    x_test, y_test = test.images(test_ids), test.labels(test_ids)
    load_start = os.getloadavg()

    # One encode of every needed image per prototype (cached).
    train_feats, test_feats, metas = {}, {}, {}
    for spec in cfg.prototypes:
        train_feats[spec], metas[spec] = cached_features(
            cache_dir, spec, cfg.proto_image_size, train, union,
            batch_size=cfg.encode_batch_size, split="train")
        test_feats[spec], _ = cached_features(
            cache_dir, spec, cfg.proto_image_size, test, test_ids,
            batch_size=cfg.encode_batch_size, split="test")
    rates = {spec: metas[spec]["images_per_second"] for spec in cfg.prototypes}
    log("encoding throughput (img/s): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))

    results: dict[str, Any] = {
        "config": asdict(cfg), "command": command, "encoding_rates": rates,
        "encoding_meta": metas, "seeds": {}, "reused_runs": [],
        "environment": {"torch": torch.__version__, "threads": cfg.threads,
                        "cpu_count": os.cpu_count(), "python": py_platform.python_version(),
                        "machine": py_platform.machine(), "loadavg_start": load_start},
    }

    def cached_run(key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = runs_dir / f"{slug(key)}.json"
        if resume and path.exists():
            stored = json.loads(path.read_text())
            if stored.get("config") == cfg_key:
                log(f"  reusing {key}")
                results["reused_runs"].append(key)
                return stored["result"]
        result = fn()
        path.write_text(json.dumps({"config": cfg_key, "result": result}))
        return result

    for seed in cfg.seeds:
        ids = sample_ids[seed]
        rows = np.searchsorted(union, ids)
        feats = {spec: train_feats[spec][rows] for spec in cfg.prototypes}
        x_train, y_train = train.images(ids), train.labels(ids)
        log(f"seed {seed}: building datasets ({len(ids)} samples, {len(cfg.prototypes)} "
            f"participants, |S| = {cfg.shared_size})")
        built = build_datasets(cfg, seed, ids, feats, metas, work_dir)
        a = built["alignment"]
        log(f"  reference {a['reference']} ({a['reference_prototype']}); " + ", ".join(
            f"{p['name']} UV {p['uniform_value']:.3f} held-out residual {p['holdout_residual']:.3f}"
            for p in a["participants"]))
        probes = ProbeSet(x_train, y_train, x_test, y_test, cfg.image_size, cfg.probe_epochs,
                          cfg.full_probe_steps, seed)

        floors = {}
        # Gray pixels (the three RGB channels of Fashion-MNIST are copies).
        r = probes.probe(x_train[..., 0], x_test[..., 0], full=True)
        floors["raw pixels"] = dict(r, dim=int(np.prod(x_train.shape[1:3])))
        for spec in cfg.prototypes:
            r = probes.probe(feats[spec], test_feats[spec], full=True)
            floors[f"features:{spec}"] = dict(r, dim=int(feats[spec].shape[1]))
        log(f"  floors: " + ", ".join(f"{k} {v['acc']:.4f}/{v['full_acc']:.4f}"
                                     for k, v in floors.items()))
        seed_runs: dict[str, dict[str, Any]] = {}
        for arch in (cfg.arch, cfg.arch2):
            from coopt_flower.students import create_student

            torch.manual_seed(seed)  # the same init every training function draws
            init = create_student(arch, image_size=cfg.image_size)
            seed_runs[arch] = {RANDOM: probes.probe_backbone(init, full=True)}
            log(f"  seed {seed} {arch} {RANDOM}: probe {seed_runs[arch][RANDOM]['acc']:.4f}")
            del init
            if arch == cfg.arch:
                rows_to_run = [SUPERVISED, BYOL] + [SINGLE + s for s in cfg.prototypes] + [
                    UNALIGNED, ALIGNED]
            else:
                rows_to_run = [ALIGNED, BYOL]
            if arch == cfg.arch and cfg.byol_long_epochs > 0:
                rows_to_run.append(BYOL_LONG)
            for row in rows_to_run:
                dataset = built["datasets"].get(row)
                epochs = cfg.byol_long_epochs if row == BYOL_LONG else cfg.epochs
                seed_runs[arch][row] = cached_run(
                    f"seed{seed}-{arch}-{row}-{epochs}ep",
                    lambda row=row, arch=arch, dataset=dataset, epochs=epochs: train_row(
                        row, arch, cfg, seed, probes, x_train, y_train, dataset, epochs))
        results["seeds"][str(seed)] = {
            "floors": floors, "runs": seed_runs, "alignment": built["alignment"],
            "encoding": built["encoding"], "num_train": int(len(ids)),
        }

    results["wall_seconds"] = time.perf_counter() - t_start
    results["environment"]["loadavg_end"] = os.getloadavg()
    summary = summarize(cfg, results)
    results["summary"] = summary
    (out_dir / JSON_NAME).write_text(json.dumps(results, indent=2, default=float))
    (out_dir / MD_NAME).write_text(render_markdown(cfg, results, summary))
    plot(cfg, summary, out_dir / PLOT_NAME)
    log(f"done in {results['wall_seconds'] / 60:.1f} min: {out_dir / MD_NAME}")
    for c in summary["targets"]:
        log(f"  target {'MET   ' if c['met'] else 'MISSED'} {c['target']}: {c['value']}")
    return results


def main(argv=None) -> int:
    cfg, args = parse_args(argv)
    cache_dir = Path(args.cache_dir)
    work_dir = Path(args.work_dir) if args.work_dir else cache_dir / ("work-tiny" if cfg.tiny else "work")
    out_dir = Path(args.out_dir) if args.out_dir else (
        Path("/tmp/coopt-benchmark-tiny") if cfg.tiny else RESULTS_DIR)
    if args.report_only:
        results = json.loads((out_dir / JSON_NAME).read_text())
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in results["config"].items()})
        results["summary"] = summary = summarize(cfg, results)
        (out_dir / JSON_NAME).write_text(json.dumps(results, indent=2, default=float))
        (out_dir / MD_NAME).write_text(render_markdown(cfg, results, summary))
        plot(cfg, summary, out_dir / PLOT_NAME)
        log(f"re-rendered {out_dir / MD_NAME}")
        return 0
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = "python -m simulations.benchmark" + "".join(f" {shlex.quote(a)}" for a in argv_list)
    run(cfg, cache_dir=cache_dir, work_dir=work_dir, out_dir=out_dir, resume=args.resume,
        command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
