"""Peak memory of training input streamed from webdataset shards, against the dataset's size.

Each size runs in a fresh process that streams a synthetic export through
:class:`coopt_flower.streaming.StreamingExport` (the shuffle buffer, PNG decoding, target
parsing) and stacks batches as :func:`coopt_flower.stream_training.train_on_stream` does, then
reports its peak resident memory (``ru_maxrss``). The shards come from a ``pipe:`` command that
writes tar streams of synthetic samples (one 32x32 PNG and one float16 target of ``--dim``,
repeated under new keys), so 1.28M samples need no disk. Prints each size's peak RSS and the
ratio to the smallest size (the issue's target: within 10 %).

    python -m simulations.stream_memory_bench --sizes 10000,1280000 --out simulations/results/stream-memory
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np


def write_synthetic_shard(first: int, count: int, dim: int, out) -> None:
    """A tar stream of ``count`` samples with keys from ``first``, in webdataset's layout."""
    from PIL import Image

    rng = np.random.default_rng(first)
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(png, format="PNG")
    target = io.BytesIO()
    np.save(target, rng.standard_normal(dim).astype(np.float16))
    members = {"png": png.getvalue(), "target.npy": target.getvalue()}
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for key in range(first, first + count):
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key:010d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def stream_once(num_samples: int, per_shard: int, dim: int, buffer: int, batch: int) -> dict:
    """Stream every sample once (in this process); its peak RSS and throughput."""
    from coopt_flower.stream_training import _batched
    from coopt_flower.streaming import StreamingExport, StreamSpec

    generator = f"{shlex.quote(sys.executable)} -m simulations.stream_memory_bench --write"
    urls = [f"pipe:{generator} {first} {min(per_shard, num_samples - first)} {dim}"
            for first in range(0, num_samples, per_shard)]
    spec = StreamSpec(tuple(urls), "png", num_samples, tuple(min(per_shard, num_samples - f)
                                                             for f in range(0, num_samples, per_shard)))
    t0 = time.perf_counter()
    seen = 0
    for images, _targets in _batched(StreamingExport(spec, shuffle_buffer=buffer, seed=0), batch, keep_last=True):
        seen += len(images)
    seconds = time.perf_counter() - t0
    return {"num_samples": num_samples, "streamed": seen, "seconds": seconds,
            "samples_per_s": seen / seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,1280000", help="dataset sizes, comma-separated")
    p.add_argument("--per-shard", type=int, default=10000, help="samples per shard")
    p.add_argument("--dim", type=int, default=512, help="target dimension")
    p.add_argument("--shuffle-buffer", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", default=None, help="write stream_memory.json and .txt here")
    p.add_argument("--write", nargs=3, type=int, metavar=("FIRST", "COUNT", "DIM"), help=argparse.SUPPRESS)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write:
        write_synthetic_shard(*args.write, sys.stdout.buffer)
        return 0
    if args.one is not None:
        print(json.dumps(stream_once(args.one, args.per_shard, args.dim, args.shuffle_buffer, args.batch_size)))
        return 0
    load = os.getloadavg()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, "-m", "simulations.stream_memory_bench", "--one", str(size), "--per-shard",
                   str(args.per_shard), "--dim", str(args.dim), "--shuffle-buffer", str(args.shuffle_buffer),
                   "--batch-size", str(args.batch_size)]
        rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
        print(f"{size:>9} samples: peak RSS {rows[-1]['peak_rss_mib']:.1f} MiB, "
              f"{rows[-1]['samples_per_s']:.0f} samples/s", flush=True)
    base = rows[0]["peak_rss_mib"]
    lines = [f"Streaming input memory ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
             f"{os.cpu_count()} CPUs, load {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f})",
             f"command: python -m simulations.stream_memory_bench --sizes {args.sizes} --per-shard {args.per_shard} "
             f"--dim {args.dim} --shuffle-buffer {args.shuffle_buffer} --batch-size {args.batch_size}",
             "samples    peak RSS (MiB)  ratio to first  samples/s"]
    lines += [f"{r['num_samples']:>9}  {r['peak_rss_mib']:>14.1f}  {r['peak_rss_mib'] / base:>14.3f}  "
              f"{r['samples_per_s']:>9.0f}" for r in rows]
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stream_memory.json").write_text(json.dumps({"rows": rows, "load": load, "args": vars(args)}, indent=2))
        (out / "stream_memory.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
