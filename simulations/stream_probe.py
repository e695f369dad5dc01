"""Does streaming change what the student learns? The memory-map path and the stream, side by side.

For each seed, the same student is trained twice on the same round with the same settings:
once with ``coopt train --dataset ROUND`` (memory map, a shuffled index) and once with
``coopt train --dataset EXPORT --stream`` (the round's webdataset export, streamed through a
shuffle buffer); each is then linear-probed (``coopt probe``) on the same labeled images.
Prints per seed both accuracies and their difference (the issue's target: within 0.5 points),
and the training time of each.

    python -m simulations.stream_probe --round ROUND --seeds 0,1 --out simulations/results/stream-probe
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path


def run(command: list[str]) -> dict:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(command)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--round", required=True, type=Path, help="round directory to train on")
    p.add_argument("--work", type=Path, default=Path("/tmp/coopt-stream-probe"), help="export, checkpoints")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--arch", default="small-cnn")
    p.add_argument("--shuffle-buffer", type=int, default=2000)
    p.add_argument("--samples-per-shard", type=int, default=1000)
    p.add_argument("--probe-train-samples", type=int, default=10000)
    p.add_argument("--probe-test-samples", type=int, default=0, help="0 = the whole test split")
    p.add_argument("--out", type=Path, default=None, help="write stream_probe.json and .md here")
    args = p.parse_args(argv)
    coopt = [sys.executable, "-m", "coopt_flower.cli"]
    export = args.work / "export"
    if not (export / "coopt_export.json").is_file():
        subprocess.run([*coopt, "export", str(args.round), "--format", "webdataset", "--out", str(export),
                        "--samples-per-shard", str(args.samples_per_shard), "--overwrite"], check=True,
                       capture_output=True)
    load_start = os.getloadavg()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = {"seed": seed}
        for name, dataset in (("memory-map", [str(args.round)]), ("stream", [str(export), "--stream",
                                                                           "--shuffle-buffer", str(args.shuffle_buffer)])):
            out = args.work / f"{name}-seed{seed}"
            trained = run([*coopt, "train", "--dataset", *dataset, "--out", str(out), "--arch", args.arch,
                           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", str(seed),
                           "--device", "cpu", "--no-progress"])
            probed = run([*coopt, "probe", str(out / "last.pt"), "--train-samples", str(args.probe_train_samples),
                          "--test-samples", str(args.probe_test_samples)])
            row[name] = {"accuracy": probed["accuracy"], "accuracy_std": probed["accuracy_std"],
                         "train_time_s": trained["train_time_s"], "final_loss": trained["losses"][-1]}
        row["difference_points"] = 100 * (row["stream"]["accuracy"] - row["memory-map"]["accuracy"])
        rows.append(row)
        print(f"seed {seed}: memory map {100 * row['memory-map']['accuracy']:.2f}, stream "
              f"{100 * row['stream']['accuracy']:.2f} ({row['difference_points']:+.2f} points); train "
              f"{row['memory-map']['train_time_s']:.0f} s vs {row['stream']['train_time_s']:.0f} s", flush=True)
    load_end = os.getloadavg()
    command = "python -m simulations.stream_probe " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [f"# Streaming vs memory map: the same student, the same round ({time.strftime('%Y-%m-%d', time.gmtime())})",
             "", f"Command: `{command}`", "",
             f"Machine: {platform.node()}, {os.cpu_count()} CPUs; load average {load_start[0]:.2f} at the start, "
             f"{load_end[0]:.2f} at the end.", "",
             f"Round: `{args.round}`; student `{args.arch}`, {args.epochs} epochs, batch {args.batch_size}, AdamW "
             f"(`coopt train` defaults); stream: webdataset export, {args.samples_per_shard} samples per shard, "
             f"shuffle buffer {args.shuffle_buffer}. Probe: `coopt probe`, {args.probe_train_samples} training "
             f"images, {'the whole test split' if not args.probe_test_samples else args.probe_test_samples}.", "",
             "| seed | memory map | stream | stream - memory map (points) | train s (map / stream) |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['seed']} | {100 * r['memory-map']['accuracy']:.2f} | {100 * r['stream']['accuracy']:.2f} | "
              f"{r['difference_points']:+.2f} | {r['memory-map']['train_time_s']:.0f} / {r['stream']['train_time_s']:.0f} |"
              for r in rows]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "stream_probe.json").write_text(json.dumps({"rows": rows, "args": {k: str(v) for k, v in vars(args).items()},
                                                                 "load": [load_start, load_end]}, indent=2))
        (args.out / "stream_probe.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
