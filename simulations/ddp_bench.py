"""Student training in one process against ``torchrun --nproc-per-node N`` (DDP), side by side.

Trains the same student on the same optimized dataset, at the same global batch, once in one
process (all the machine's cores as intra-op threads) and once as N DDP processes (the cores
split between them), each run in a fresh interpreter; prints the wall clock of each, samples
per second in all and per process, the ratio, and how far the final weights are apart (the
whole model's relative difference). A third run, one process at the DDP processes' thread
count, is the control for that difference: float rounding that depends on the number of
threads alone grows over hundreds of steps (training is chaotic), so DDP's difference means
something only next to it. Measured side by side in one invocation, with the load average
recorded, because these machines are noisy.

    python -m simulations.ddp_bench --dataset <round directory> --arch small-cnn --processes 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(dataset: str, out: Path, *, processes: int, threads: int, args) -> tuple[float, dict]:
    """Wall seconds and the JSON summary of one ``coopt train`` run."""
    command = ["--dataset", dataset, "--out", str(out), "--arch", args.arch, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--device", args.device, "--no-progress", "--seed", str(args.seed)]
    if args.image_size:
        command += ["--image-size", str(args.image_size)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run([*launcher, "-m", "coopt_flower.student_training", *command], capture_output=True,
                            text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"coopt train with {processes} process(es) failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(result.stdout)


def weight_difference(a: Path, b: Path) -> float:
    """``||w_a - w_b|| / ||w_a||`` over every floating-point tensor of two checkpoints."""
    from coopt_flower.checkpoints import load_checkpoint

    x, y = load_checkpoint(a / "last.pt")["model"], load_checkpoint(b / "last.pt")["model"]
    keys = [k for k in x if x[k].is_floating_point()]
    diff = sum(float((x[k].double() - y[k].double()).square().sum()) for k in keys) ** 0.5
    return diff / max(sum(float(x[k].double().square().sum()) for k in keys) ** 0.5, 1e-30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="an optimized dataset (round directory)")
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch of both runs")
    parser.add_argument("--image-size", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="cores to use: one process gets them all as threads, N processes share them")
    parser.add_argument("--device", default="cpu",
                        help="cpu (gloo; the cores split between processes) or cuda (nccl; a GPU per process, "
                             "the one-process run on the first)")
    parser.add_argument("--out", help="write the measurement here as JSON")
    args = parser.parse_args(argv)
    from coopt_flower.dataset_format import load_optimized_dataset

    samples = len(load_optimized_dataset(args.dataset)) * args.epochs
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        one_s, one = train(args.dataset, Path(work) / "one", processes=1, threads=args.cores, args=args)
        many_s, many = train(args.dataset, Path(work) / "many", processes=args.processes,
                             threads=max(1, args.cores // args.processes), args=args)
        difference = weight_difference(Path(work) / "one", Path(work) / "many")
        threads = max(1, args.cores // args.processes)
        train(args.dataset, Path(work) / "control", processes=1, threads=threads, args=args)
        control = weight_difference(Path(work) / "one", Path(work) / "control")
    # Training time as the runs report it (the epochs), and the wall clock with start-up.
    one_train, many_train = sum(one["epoch_times_s"]), sum(many["epoch_times_s"])
    result = {
        "command": "python -m simulations.ddp_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "arch": args.arch, "device": args.device, "epochs": args.epochs, "global_batch": args.batch_size, "samples": samples,
        "cores": args.cores, "processes": args.processes, "load_average_before": list(load),
        "one_process": {"wall_s": one_s, "train_s": one_train, "samples_per_s": samples / one_train},
        "ddp": {"wall_s": many_s, "train_s": many_train, "samples_per_s": samples / many_train,
                "samples_per_s_per_process": samples / many_train / args.processes},
        "speedup_train": one_train / many_train, "speedup_wall": one_s / many_s,
        "weights_relative_difference": difference,
        "control_weights_relative_difference": control,
        "control": f"one process at {max(1, args.cores // args.processes)} thread(s) against one at {args.cores}",
        "losses": {"one_process": one["losses"], "ddp": many["losses"]},
    }
    lines = [
        f"load average before: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {args.cores} cores",
        f"1 process ({args.cores} threads): {one_train:.1f} s training, {samples / one_train:.0f} samples/s "
        f"({one_s:.1f} s wall)",
        f"{args.processes} DDP processes ({max(1, args.cores // args.processes)} thread(s) each): "
        f"{many_train:.1f} s training, {samples / many_train:.0f} samples/s, "
        f"{samples / many_train / args.processes:.0f} per process ({many_s:.1f} s wall)",
        f"speedup {one_train / many_train:.2f}x training, {one_s / many_s:.2f}x wall; final weights differ by "
        f"{difference:.3f} of their norm (control, one process at {max(1, args.cores // args.processes)} "
        f"thread(s) instead of {args.cores}: {control:.3f})",
    ]
    print("\n".join(lines))
    if args.out:  # the JSON, and the lines above as the run printed them
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        Path(args.out).with_suffix(".txt").write_text(f"{result['command']}\n" + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
