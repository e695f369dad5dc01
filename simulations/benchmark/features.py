"""The benchmark's prototype feature cache: every image is encoded once per prototype.

Features are stored as ``.npy`` under ``--cache-dir`` (memory-mapped on read) with the
measured encoding throughput, which is CoOpt's one-off encoding cost in the speedup tables.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from coopt_flower.atomic import save_npy_atomic

_T0 = time.perf_counter()


def log(message: str) -> None:
    elapsed = time.perf_counter() - _T0
    print(f"[{time.strftime('%H:%M:%S')} +{elapsed:7.1f}s] {message}", flush=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def cached_features(cache_dir: Path, spec: str, image_size: int, source, ids: np.ndarray,
                    *, batch_size: int, split: str, device: str = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
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

    # Features from another device differ in the last bits: they get a cache of their own.
    on = "" if torch.device(device).type == "cpu" else f"-{slug(device)}"
    folder = cache_dir / f"{slug(spec)}-{image_size}px{on}" / split
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
        prototype = create_prototype(spec, image_size=image_size, device=device)
        meta["build_seconds"] += time.perf_counter() - t
        log(f"encoding {missing.size} {split} images with {spec} at {image_size} px "
            f"(cache: {have.size} already)")
        cpu = time.process_time()
        new, stats = encode_features(prototype, source, missing, batch_size=batch_size, progress=False)
        meta["images_encoded"] += int(stats.num_images)
        meta["encode_seconds"] += float(stats.seconds)
        meta["encode_cpu_seconds"] = meta.get("encode_cpu_seconds", 0.0) + time.process_time() - cpu
        meta["dim"] = int(prototype.output_dim)
        meta["encoded_size"] = int(getattr(prototype, "image_size", 0) or image_size)
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
