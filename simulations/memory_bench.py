"""Peak memory of the platform's round at any dataset size (ImageNet-1K scale included).

One in-process round (:func:`coopt_flower.round.run_in_process`, the engine a ServerApp runs)
over a synthetic image source of N samples, with four participants that answer instantly
(targets computed from the ids: no model), so only the platform's own memory is measured:
paging, checks, alignment and the memory-mapped merge. Prints the peak USS (memory unique to
the process, sampled every 50 ms) above the starting point. Run it for two sizes side by side::

    python -m simulations.memory_bench --sizes 200000,1280000 --target-dim 512 --page-size 8192
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np
import psutil

from coopt_flower.config import RunSettings
from coopt_flower.protocol import Description, EncodeReply, pixels_digest
from coopt_flower.round import CoOptRound, run_in_process


class SyntheticSource:
    """N tiny RGB images computed from their ids (no storage)."""

    spec = "synthetic"

    def __init__(self, size: int) -> None:
        self.size = size

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


def measure(size: int, target_dim: int, page_size: int) -> dict:
    process = psutil.Process()
    start = process.memory_full_info().uss
    peak, done = [start], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_full_info().uss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory(prefix="coopt-memory-") as out:
        settings = RunSettings(prototypes=["a", "b", "c", "d"], num_samples=size, shared_size=256,
                               target_dim=target_dim, output_dir=out, overwrite=True, page_size=page_size)
        settings.validate()
        started = time.perf_counter()
        run_in_process(CoOptRound(settings, SyntheticSource(size)), [InstantParticipant(i) for i in range(4)])
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return {"samples": size, "seconds": seconds, "peak_growth_mb": (peak[0] - start) / 2**20}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,1280000")
    parser.add_argument("--target-dim", type=int, default=512)
    parser.add_argument("--page-size", type=int, default=8192)
    args = parser.parse_args(argv)
    rows = [measure(int(n), args.target_dim, args.page_size) for n in args.sizes.split(",")]
    for r in rows:
        print(f"{r['samples']} samples x {args.target_dim}-d, pages of {args.page_size}: peak memory "
              f"+{r['peak_growth_mb']:.0f} MB ({r['seconds']:.1f} s)")
    print(f"largest / smallest: {rows[-1]['peak_growth_mb'] / rows[0]['peak_growth_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
