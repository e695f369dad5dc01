"""Training step cost per method, measured side by side: is CoOpt training input-bound?

Every method trains the same student with the same augmentations, two views per step, batch
size and optimizer; only the objective and the input path differ. This script times one
epoch of each, interleaved over several repeats (this machine is shared and noisy), on the
same Fashion-MNIST images, and prints milliseconds per image-epoch (median over repeats) and
the ratios that matter:

- CoOpt (images decoded once, batches sliced: the default) / supervised: target <= 1.10;
- CoOpt through a DataLoader reading one image at a time (``preload=False``, the path before
  the change) / CoOpt preloaded.

The CoOpt rows train on a real optimized dataset (written with ``DatasetWriter``, targets
drawn at random: their values do not change the cost of a step)::

    python -m simulations.train_speed --num-images 2000 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_dataset(num_images: int, target_dim: int, folder: Path):
    """An optimized dataset over the first Fashion-MNIST training images (random targets)."""
    from coopt_flower.data import select_samples
    from coopt_flower.dataset_format import load_optimized_dataset
    from coopt_flower.dataset_writer import DatasetWriter

    ids = select_samples(60000, num_images, 0)
    targets = np.random.default_rng(0).normal(size=(num_images, target_dim)).astype(np.float32)
    with DatasetWriter(folder / "round-001", ids, target_dim, "float16") as writer:
        writer.write(ids, targets, owner=0)
        writer.commit({"source": "fashion-mnist", "participants": [{"name": "p0"}]})
    return load_optimized_dataset(folder / "round-001")


def time_methods(args) -> dict[str, list[float]]:
    from coopt_flower.data import open_source
    from coopt_flower.student_training import TrainConfig, train_on_optimized, train_supervised

    folder = Path(tempfile.mkdtemp(prefix="coopt-train-speed-"))
    dataset = make_dataset(args.num_images, args.target_dim, folder)
    source = open_source("fashion-mnist")
    images, labels = source.images(dataset.sample_ids), source.labels(dataset.sample_ids)

    def config(**extra):
        return TrainConfig(arch=args.arch, image_size=args.image_size, epochs=1,
                           batch_size=args.batch_size, device=args.device, progress=False, **extra)

    def byol():
        from coopt_flower.byol import train_byol  # needs lightly

        return train_byol(images, config())

    methods = {
        "coopt": lambda: train_on_optimized(dataset, config()),
        "coopt (DataLoader, item by item)": lambda: train_on_optimized(dataset, config(preload=False)),
        "supervised": lambda: train_supervised(images, labels, config()),
        "byol": byol,
    }
    if args.skip_byol:
        del methods["byol"]
    ms: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        for name, run in methods.items():
            started = time.perf_counter()
            result = run()
            # The epoch's own time (model building excluded); preloading counts once per run.
            whole = time.perf_counter() - started
            ms[name].append(1000 * result.epoch_times[0] / args.num_images)
            print(f"[{repeat + 1}/{args.repeats}] {name}: {ms[name][-1]:.3f} ms per image-epoch "
                  f"({whole:.1f} s with set-up)", flush=True)
    return ms


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--target-dim", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores)")
    parser.add_argument("--skip-byol", action="store_true", help="where lightly is not installed")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ms = time_methods(args)
    median = {name: statistics.median(values) for name, values in ms.items()}
    print(f"\n{args.arch}, {args.image_size} px, batch {args.batch_size}, {args.num_images} images, "
          f"{args.repeats} repeats, {torch.get_num_threads()} thread(s), {args.device}")
    print("| method | ms per image-epoch (median) | all repeats |")
    print("|---|---:|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} | {', '.join(f'{v:.3f}' for v in ms[name])} |")
    coopt_vs_supervised = median["coopt"] / median["supervised"]
    loader_vs_preloaded = median["coopt (DataLoader, item by item)"] / median["coopt"]
    print(f"\nCoOpt / supervised: {coopt_vs_supervised:.3f} (target <= 1.10: "
          f"{'met' if coopt_vs_supervised <= 1.10 else 'missed'})")
    print(f"CoOpt through the DataLoader / CoOpt preloaded: {loader_vs_preloaded:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "ms_per_image_epoch": ms,
                                               "median": median}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
