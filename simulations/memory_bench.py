"""Peak memory of the platform's round and of one participant at any dataset size.

``platform`` (the ServerApp's side)
    One in-process round (:func:`coopt_flower.engine.run_in_process`, the engine a ServerApp
    runs) over a synthetic image source of N samples, with four participants that answer
    instantly (targets computed from the ids: no model), so only the platform's own memory is
    measured: paging, checks, alignment and the memory-mapped merge.
``participant`` (one ClientApp's side)
    :class:`coopt_flower.participant.PrototypeParticipant`, the object the ClientApp wraps,
    answering every page of its shard (N / 4 samples, pages as the platform sends them) over a
    synthetic source of N samples, each reply turned into the Flower record dict it is sent
    as. Its prototype is the real preprocessing (:func:`preprocess_batch`) of 8x8 images with
    no network behind it, so the model's constant size does not hide what grows.

Every size runs in a fresh process, so each number is that process's own: the absolute peak
RSS (the kernel's high-water mark, ``VmHWM``) and its growth over the RSS just before the
work starts (imports done). Run it for three sizes side by side::

    OMP_NUM_THREADS=1 python -m simulations.memory_bench --sizes 10000,200000,1280000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from coopt_flower.config import RunSettings
from coopt_flower.protocol import Description, EncodeReply, pixels_digest

SIDES = ("platform", "participant")
SOURCE_SPEC = "memory-bench-synthetic:"  # + N
PROTOTYPE_SPEC = "memory-bench:pixels"


class SyntheticSource:
    """N tiny RGB images computed from their ids (no storage)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.spec = f"{SOURCE_SPEC}{size}"

    def __len__(self) -> int:
        return self.size

    def images(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)[:, None, None, None]
        grid = np.arange(8)[None, :, None, None] + np.arange(8)[None, None, :, None]
        return ((ids * np.array([1, 3, 7]) + grid) % 251).astype(np.uint8)

    def labels(self, ids: np.ndarray) -> None:
        return None


class InstantParticipant:
    """Targets from the ids (pages) or a fixed projection of the pixels (the shared subset)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def describe(self, config) -> Description:
        return Description(prototype=f"instant-{self.index}", output_dim=192, partition_id=self.index)

    def encode(self, request, student=None) -> EncodeReply:
        dim = request.config.target_dim
        if request.pixels is not None:
            flat = request.pixels.reshape(len(request.pixels), -1).astype(np.float32) / 255
            weight = np.random.default_rng(self.index).normal(size=(flat.shape[1], dim))
            targets, ids, digest = flat @ weight.astype(np.float32), np.full(len(flat), -1), \
                pixels_digest(request.pixels)
        else:
            ids, digest = request.ids, ""
            freq = np.arange(dim, dtype=np.float32)[None, :] + 1 + self.index
            targets = np.sin(ids[:, None].astype(np.float32) * freq * 1e-3)
        return EncodeReply(targets=targets.astype(np.float32), ids=ids, num_images=len(ids),
                           encode_seconds=1e-3, pixels_sha256=digest)


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (``VmRSS``) or its peak so far (``VmHWM``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def settings_for(size: int, target_dim: int, page_size: int, out: str) -> RunSettings:
    settings = RunSettings(prototypes=["a", "b", "c", "d"], num_samples=size, shared_size=256,
                           target_dim=target_dim, output_dir=out, overwrite=True, page_size=page_size)
    settings.validate()
    return settings


def run_platform(size: int, target_dim: int, page_size: int) -> None:
    from coopt_flower.engine import run_in_process

    with tempfile.TemporaryDirectory(prefix="coopt-memory-") as out:
        run_in_process(settings_for(size, target_dim, page_size, out), SyntheticSource(size),
                       [InstantParticipant(i) for i in range(4)])


def register_bench_parts() -> None:
    """The synthetic source and the model-free prototype, under names no real one uses."""
    from coopt_flower.data import DATA_SOURCES
    from coopt_flower.prototypes import register_family
    from coopt_flower.prototypes.base import Prototype
    from coopt_flower.prototypes.preprocess import Preprocess, preprocess_batch

    if SOURCE_SPEC.rstrip(":") in DATA_SOURCES:
        return
    DATA_SOURCES.add(SOURCE_SPEC.rstrip(":"), lambda body: SyntheticSource(int(body)), prefix=True,
                     forms=(f"{SOURCE_SPEC}<N>",))

    class PixelsPrototype(Prototype):
        """The prototypes' own preprocessing of 8x8 images, flattened: no model."""

        output_dim, native_size, image_size, device = 192, 8, 8, "cpu"
        preprocess = Preprocess(mean=(127.5,) * 3, std=(64.0,) * 3)

        def _encode_batch(self, images: np.ndarray) -> np.ndarray:
            return preprocess_batch(images, 8, self.preprocess, "cpu").flatten(1).numpy()

    def build(spec, image_size, device):
        prototype = PixelsPrototype()
        prototype.spec, prototype.parsed = str(spec), spec
        return prototype

    register_family(PROTOTYPE_SPEC.split(":")[0], parse=lambda body: (body, None),
                    forms=(PROTOTYPE_SPEC,))(build)


def run_participant(size: int, target_dim: int, page_size: int) -> None:
    """One participant answers every page of a quarter of N (every 4th sample, so its ids span
    the whole source), page by page as the platform asks; the bench never holds the shard."""
    from coopt_flower.participant import NodeSettings, PrototypeParticipant
    from coopt_flower.protocol import EncodeConfig, EncodeRequest
    from server_app.records import to_record_dict

    config = EncodeConfig(target_dim=target_dim, projection_seed=0, batch_size=128, image_size=8,
                          data=f"{SOURCE_SPEC}{size}")
    participant = PrototypeParticipant(NodeSettings(PROTOTYPE_SPEC, device="cpu", partition_id=0))
    participant.describe(config)
    for start in range(0, size, 4 * page_size):
        ids = np.arange(start, min(size, start + 4 * page_size), 4, dtype=np.int64)
        reply = participant.encode(EncodeRequest(config, ids=ids))
        to_record_dict(reply.content())  # what the ClientApp hands to Flower


def child(side: str, size: int, target_dim: int, page_size: int) -> dict:
    """Runs one measurement in this (fresh) process; returns its numbers."""
    import torch

    torch.set_num_threads(1)
    register_bench_parts()
    import coopt_flower.engine  # noqa: F401  (imports are not the work being measured)
    import coopt_flower.report  # noqa: F401
    import matplotlib.pyplot  # noqa: F401  (the round's plots)

    start = rss_bytes()
    exact = reset_peak()
    started = time.perf_counter()
    (run_platform if side == "platform" else run_participant)(size, target_dim, page_size)
    seconds = time.perf_counter() - started
    peak = rss_bytes("VmHWM")
    return {"side": side, "samples": size, "seconds": seconds, "start_mb": start / 2**20,
            "peak_mb": peak / 2**20, "growth_mb": (peak - start) / 2**20, "peak_reset": exact}


def measure(side: str, size: int, target_dim: int, page_size: int) -> dict:
    """:func:`child` in a fresh interpreter (a peak RSS is per process)."""
    cmd = [sys.executable, "-m", "simulations.memory_bench", "--child", side, "--sizes", str(size),
           "--target-dim", str(target_dim), "--page-size", str(page_size)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,200000,1280000")
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--target-dim", type=int, default=512)
    parser.add_argument("--page-size", type=int, default=8192)
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    if args.child:
        print(json.dumps(child(args.child, sizes[0], args.target_dim, args.page_size)))
        return 0
    for side in args.sides.split(","):
        rows = []
        for size in sizes:
            r = measure(side, size, args.target_dim, args.page_size)
            rows.append(r)
            print(f"{side}: {size} samples x {args.target_dim}-d, pages of {args.page_size}: peak RSS "
                  f"{r['peak_mb']:.0f} MB (+{r['growth_mb']:.0f} MB over {r['start_mb']:.0f} MB at "
                  f"start, {r['seconds']:.1f} s)", flush=True)
        first, last = rows[0], rows[-1]
        print(f"{side}: {last['samples']} / {first['samples']} samples: peak RSS "
              f"{last['peak_mb'] / first['peak_mb']:.3f}x, growth "
              f"{last['growth_mb'] / first['growth_mb']:.2f}x "
              f"(target: peak within 1.10x)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
