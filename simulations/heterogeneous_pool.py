"""A pool that differs: five prototypes from what installs offline, measured for spread and
complementarity, with an in-house model among them.

Every organisation that joins a federation has its own model, trained on data nobody else
sees. This study builds one: a small CNN trained with labels on ``--num-private`` Fashion-MNIST
training images that lie outside every reportable seed's sample of the benchmark and outside
its validation split (:func:`simulations.benchmark.validation.private_ids`; the test images are
another split), saved as a checkpoint that joins the pool as ``student:<checkpoint>``, encoding
at its own 32 px. Beside it: ImageNet CNNs at 96 px, Open-NSFW (trained on another task) and a
random-init network.

Per prototype it reports the linear probe of its own features (trained on a seed's 10,000
training images' labels), overall and per class, on the validation split and on the test set,
and the *per-class oracle*: for each class the prototype whose features are best on that class
on the validation split, scored on the test set. ``oracle - best single`` measures how much the
prototypes know that the best one does not. The pool is written as a benchmark config
(``simulations/configs/pool-heterogeneous.yaml``) that the collaboration study runs with.

    python -m simulations.heterogeneous_pool --seed 0 --threads 1

The test set makes no choice here: the best single prototype and the per-class oracle are
picked on the validation split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coopt_flower.probing import linear_probe
from simulations.benchmark.config import load_config
from simulations.benchmark.features import log
from simulations.benchmark.main import encode_prototypes, open_data
from simulations.benchmark.validation import private_ids
from simulations.study_args import reproducing_command

RESULTS = Path(__file__).resolve().parent / "results" / "pool"
POOL_CONFIG = Path(__file__).resolve().parent / "configs" / "pool-heterogeneous.yaml"
#: The config the committed pool was measured with: the benchmark's at lr 0.004, its rate then.
#: The in-house model trains at the config's rate, so a run on today's benchmark config (0.008)
#: would build another in-house model than the one the committed results name.
BASE_CONFIG = Path(__file__).resolve().parent / "configs" / "collaboration.yaml"
#: What the in-house model's training depends on besides its private images and epochs: a
#: checkpoint recorded with other values is retrained, not reused.
INHOUSE_SETTINGS = ("lr", "batch_size", "weight_decay")
INHOUSE_DIR = Path("/tmp/coopt-pool/inhouse")
#: The pool besides the in-house model: pretrained at 96 px, another task, random weights.
OTHERS = ("efficientnet-lite0", "efficientnet-lite2", "onnx:open-nsfw", "random:efficientnet-lite0")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


def inhouse_spec(folder: Path) -> str:
    return f"student:{folder / 'last.pt'}"


def train_inhouse(cfg, data, folder: Path, *, num_private: int, epochs: int, seed: int) -> dict[str, Any]:
    """The in-house prototype: small-cnn trained with labels on private images (checkpointed)."""
    from coopt_flower.student_training import TrainConfig, train_supervised

    ids = private_ids(len(data.train), cfg.num_train, cfg.num_val, cfg.val_seed, num_private)
    reported = np.union1d(data.union, data.val_ids)
    if np.intersect1d(ids, reported).size:
        raise AssertionError("private images overlap a reported sample")  # private_ids guarantees it
    digest = hashlib.sha256(ids.tobytes()).hexdigest()
    settings = {k: getattr(cfg, k) for k in INHOUSE_SETTINGS}
    record_path = folder / "inhouse.json"
    if record_path.exists() and (folder / "last.pt").exists():
        record = json.loads(record_path.read_text())
        same = all(record.get(k, v) == v for k, v in settings.items())  # a record from before them: unrecorded
        if record.get("ids_sha256") == digest and record.get("epochs") == epochs and same:
            log(f"in-house prototype: reusing {folder / 'last.pt'}")
            return record
    folder.mkdir(parents=True, exist_ok=True)
    log(f"in-house prototype: small-cnn, supervised on {len(ids)} private images, {epochs} epochs")
    config = TrainConfig(arch="small-cnn", image_size=32, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                         weight_decay=cfg.weight_decay, seed=seed, progress=False, checkpoint_dir=str(folder))
    started = time.perf_counter()
    result = train_supervised(data.train.images(ids), data.train.labels(ids), config, num_classes=len(CLASSES))
    record = {"num_private": len(ids), "ids_sha256": digest, "epochs": epochs, "seed": seed,
              "arch": "small-cnn", "image_size": 32, **settings, "final_loss": float(result.losses[-1]),
              "train_seconds": time.perf_counter() - started,
              "disjoint_from": "every reportable seed's sample (seeds 0-4) and the validation split"}
    record_path.write_text(json.dumps(record, indent=2))
    return record


def per_class(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    return [float(correct[labels == c].mean()) if np.any(labels == c) else float("nan") for c in range(num_classes)]


def probe_prototype(f_train, y_train, f_val, y_val, f_test, y_test, *, steps: int, seed: int,
                    threads: int | None) -> dict[str, Any]:
    """Own-feature linear probe, one classifier read on the test set and on validation (the
    per-class choices are made on the latter)."""
    probe = linear_probe(f_train, y_train, f_test, y_test, epochs=None, min_steps=steps, seed=seed,
                         num_threads=threads, also_evaluate={"val": (f_val, y_val)})
    test, val = probe.test_correct, probe.other_correct["val"]
    k = len(CLASSES)
    return {"test_acc": float(test.mean()), "val_acc": float(val.mean()),
            "test_per_class": per_class(test, np.asarray(y_test), k),
            "val_per_class": per_class(val, np.asarray(y_val), k)}


def oracle(probes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Best single (by validation) and the per-class oracle (per class by validation), on test."""
    best = max(probes, key=lambda s: probes[s]["val_acc"])
    picks = [max(probes, key=lambda s: probes[s]["val_per_class"][c]) for c in range(len(CLASSES))]
    acc = float(np.mean([probes[s]["test_per_class"][c] for c, s in enumerate(picks)]))
    return {"best_single": best, "best_single_test_acc": probes[best]["test_acc"],
            "per_class_picks": picks, "per_class_oracle_test_acc": acc,
            "oracle_minus_best_points": 100 * (acc - probes[best]["test_acc"]),
            "spread_points": 100 * (max(p["test_acc"] for p in probes.values())
                                    - min(p["test_acc"] for p in probes.values()))}


def write_pool_config(path: Path, pool: list[str], sizes: dict[str, int], config: Path = BASE_CONFIG) -> None:
    import yaml

    base = yaml.safe_load(config.read_text())
    base.update({"prototypes": pool,
                 "proto_image_sizes": ";".join(f"{s}={n}" for s, n in sizes.items())})
    header = ("# The heterogeneous pool (issue: a pool that differs), written by\n"
              "# `python -m simulations.heterogeneous_pool`: an in-house small CNN trained with labels on\n"
              "# private images (none of them in any reported sample or the validation split; encodes at its\n"
              "# own 32 px), two ImageNet CNNs, Open-NSFW and a random-init network at 96 px. Everything else\n"
              "# is the benchmark's config at the rate the pool was measured with (lr 0.004).\n"
              "# Measured: simulations/results/pool/pool.md.\n")
    path.write_text(header + yaml.safe_dump(base, sort_keys=False))


def render(results: dict[str, Any]) -> str:
    o, probes = results["oracle"], results["probes"]
    lines = ["# A pool that differs: spread and complementarity of five prototypes", "",
             f"`{results['command']}`", "",
             f"Seed {results['seed']}: linear probes of each prototype's own features, trained on the seed's "
             f"{results['num_train']} training images; accuracy on the validation split ({results['num_val']} "
             f"training images outside every seed's sample; it makes every choice) and on the {results['num_test']} "
             "test images. In-house "
             f"model: small-cnn trained with labels on {results['inhouse']['num_private']} private images "
             f"({results['inhouse']['epochs']} epochs), disjoint from every reported sample. Load average at the "
             f"start: {', '.join(f'{v:.2f}' for v in results['loadavg_start'])}.", "",
             "| prototype | encodes at | validation | test | " + " | ".join(CLASSES) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(CLASSES)]
    for spec, p in probes.items():
        name = "in-house (`student:`)" if spec.startswith("student:") else f"`{spec}`"
        lines.append(f"| {name} | {results['sizes'][spec]} px | {100 * p['val_acc']:.2f} | {100 * p['test_acc']:.2f} | "
                     + " | ".join(f"{100 * v:.1f}" for v in p["test_per_class"]) + " |")
    picks = ", ".join(f"{c}: {'in-house' if s.startswith('student:') else s}" for c, s in zip(CLASSES, o["per_class_picks"]))
    lines += ["", f"- spread of the own-feature probes (test): {o['spread_points']:.2f} points",
              f"- best single prototype (by validation): `{o['best_single']}`, test {100 * o['best_single_test_acc']:.2f}",
              f"- per-class oracle (per class the prototype best on validation): test "
              f"{100 * o['per_class_oracle_test_acc']:.2f}, {o['oracle_minus_best_points']:+.2f} points over the best "
              f"single; picks: {picks}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=BASE_CONFIG,
                   help="the benchmark config whose images, seed, probe and training rate the pool is measured "
                        "with (default: the one the committed pool was measured with)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--num-private", type=int, default=3000)
    p.add_argument("--inhouse-epochs", type=int, default=15)
    p.add_argument("--inhouse-dir", type=Path, default=INHOUSE_DIR)
    p.add_argument("--others", default=",".join(OTHERS), help="comma list: the pool besides the in-house model")
    p.add_argument("--cache-dir", type=Path, default=Path("/tmp/coopt-benchmark-cache"))
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--pool-config", type=Path, default=POOL_CONFIG)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    inhouse = inhouse_spec(args.inhouse_dir)
    pool = [inhouse] + [s.strip() for s in args.others.split(",") if s.strip()]
    sizes = {inhouse: 0}  # its own training size (32 px); the others at the benchmark's 96
    cfg = load_config(args.config)
    cfg = replace(cfg, seeds=(args.seed,), prototypes=tuple(pool), arch2="",
                  proto_image_sizes=";".join(f"{s}={n}" for s, n in sizes.items()))
    data = open_data(cfg)
    record = train_inhouse(cfg, data, args.inhouse_dir, num_private=args.num_private,
                           epochs=args.inhouse_epochs, seed=args.seed)
    encoded = encode_prototypes(cfg, args.cache_dir, data)
    ids = data.sample_ids[args.seed]
    rows, val_rows = np.searchsorted(data.union, ids), np.searchsorted(data.union, data.val_ids)
    y_train = data.train.labels(ids)
    probes = {}
    for spec in pool:
        feats = np.asarray(encoded.train[spec])
        probes[spec] = probe_prototype(feats[rows], y_train, feats[val_rows], data.y_val, encoded.test[spec],
                                       data.y_test, steps=cfg.full_probe_steps, seed=args.seed, threads=args.threads)
        log(f"  {spec}: validation {probes[spec]['val_acc']:.4f}, test {probes[spec]['test_acc']:.4f}")
    results = {"command": reproducing_command("simulations.heterogeneous_pool", argv), "seed": args.seed,
               "num_train": cfg.num_train, "num_val": cfg.num_val, "num_test": cfg.num_test, "pool": pool, "inhouse": record, "loadavg_start": load_start,
               "sizes": {s: encoded.metas[s].get("encoded_size", cfg.proto_size(s)) for s in pool},
               "probes": probes, "oracle": oracle(probes)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "pool.json").write_text(json.dumps(results, indent=2))
    (args.out_dir / "pool.md").write_text(render(results))
    write_pool_config(args.pool_config, pool, sizes, args.config)
    log(f"spread {results['oracle']['spread_points']:.2f} points; per-class oracle "
        f"{results['oracle']['oracle_minus_best_points']:+.2f} over the best single; {args.out_dir / 'pool.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
