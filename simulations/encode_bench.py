"""Does a participant encode at its model's own speed, and what does Flower add to a round?

Two measurements, each side by side in one run and repeated (these machines are shared):

``encode``
    The ClientApp's encode path (:class:`coopt_flower.participant.PrototypeParticipant`:
    read a page of ids from the data source, preprocess, run the model, project) against a
    bare loop over the same model, batch size and preprocessing on images decoded beforehand.
    Prints img/s of both and the ratio (target: the project's path >= 0.9x the bare loop).
``round``
    A whole ``flwr run`` round in local simulation against the same round in one process
    (:func:`coopt_flower.engine.run_in_process` with the same participants). Prints the wall
    clock of both and the ratio (target: Flower's round <= 1.25x the in-process one).

Usage::

    python -m simulations.encode_bench encode --prototypes efficientnet-lite0,onnx:open-nsfw
    python -m simulations.encode_bench encode --device cuda --precision bf16   # on a GPU
    python -m simulations.encode_bench round --num-samples 10000
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

from coopt_flower.data import open_source, select_samples
from coopt_flower.participant import NodeSettings, PrototypeParticipant, load_prototype
from coopt_flower.protocol import EncodeConfig, EncodeRequest


def bare_encode(prototype, images: np.ndarray, batch_size: int) -> None:
    """The model and its own preprocessing over pre-decoded images, nothing else."""
    for start in range(0, len(images), batch_size):
        prototype._encode_batch(images[start: start + batch_size])
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_encode(args) -> dict:
    source = open_source(args.data)
    ids = select_samples(len(source), args.num_images, 0)
    images = source.images(ids)  # decoded beforehand, for the bare loop only
    results = {}
    for spec in args.prototypes.split(","):
        node = NodeSettings(spec, device=args.device, precision=args.precision, partition_id=0)
        participant = PrototypeParticipant(node)
        prototype = load_prototype(spec, args.image_size, node.device, node.precision)
        request = EncodeRequest(EncodeConfig(target_dim=args.target_dim, batch_size=args.batch_size,
                                             image_size=args.image_size, data=args.data), ids=ids)
        bare_encode(prototype, images[: args.batch_size], args.batch_size)  # warm-up
        runs = {"project": lambda: participant.encode(request),
                "bare": lambda: bare_encode(prototype, images, args.batch_size)}
        rates = {name: [] for name in runs}
        cpu_rates = {name: [] for name in runs}
        for repeat in range(args.repeats):
            # Alternate who goes first: on a shared machine the load drifts within a repeat.
            for name in (("project", "bare") if repeat % 2 == 0 else ("bare", "project")):
                wall, cpu = time.perf_counter(), time.process_time()
                runs[name]()
                rates[name].append(len(ids) / (time.perf_counter() - wall))
                cpu_rates[name].append(len(ids) / max(time.process_time() - cpu, 1e-9))
        median = {k: statistics.median(v) for k, v in rates.items()}
        cpu_median = {k: statistics.median(v) for k, v in cpu_rates.items()}
        ratio, cpu_ratio = median["project"] / median["bare"], cpu_median["project"] / cpu_median["bare"]
        results[spec] = {"img_per_s": rates, "img_per_cpu_s": cpu_rates, "median": median,
                         "ratio": ratio, "cpu_ratio": cpu_ratio}
        print(f"{spec} ({node.device}, {node.precision}, {prototype.image_size} px, batch "
              f"{args.batch_size}): project {median['project']:.1f} img/s, bare {median['bare']:.1f} "
              f"img/s, ratio {ratio:.3f} (per CPU second {cpu_ratio:.3f}; target >= 0.9: "
              f"{'met' if ratio >= 0.9 else 'missed'})", flush=True)
    return results


def bench_round(args) -> dict:
    from coopt_flower.config import RunSettings
    from coopt_flower.engine import run_in_process
    if not args.in_process_only:
        from simulations.local_run import run_local_simulation, run_succeeded

    specs = args.prototypes.split(",")
    work = Path(tempfile.mkdtemp(prefix="coopt-round-bench-"))
    config = {"prototypes": ",".join(specs), "num-samples": args.num_samples, "image-size": args.image_size,
              "target-dim": args.target_dim, "shared-size": args.shared_size, "page-size": 0,
              "overwrite": True}
    seconds = {"flower": [], "in process": []}
    for repeat in range(args.repeats):
        if not args.in_process_only:
            out = work / f"flower-{repeat}"
            started = time.perf_counter()
            run = run_local_simulation(dict(config, **{"output-dir": str(out)}), num_supernodes=len(specs),
                                       echo=False, flwr_home=work / f"home-{repeat}")
            seconds["flower"].append(time.perf_counter() - started)
            if not run_succeeded(run):
                raise RuntimeError(f"the flwr run failed:\n{run.output[-3000:]}")
        local = Path(args.keep_dataset) if args.keep_dataset and repeat == args.repeats - 1 else work / f"local-{repeat}"
        settings = RunSettings.from_run_config(dict(config, **{"output-dir": str(local)}))
        started = time.perf_counter()
        participants = [PrototypeParticipant(NodeSettings(spec, device=args.device, partition_id=i))
                        for i, spec in enumerate(specs)]
        run_in_process(settings, open_source(settings.data), participants)
        seconds["in process"].append(time.perf_counter() - started)
        print(f"[{repeat + 1}/{args.repeats}] flwr run {(seconds['flower'] or [0.0])[-1]:.1f} s, "
              f"in process {seconds['in process'][-1]:.1f} s", flush=True)
    if args.in_process_only:
        median = statistics.median(seconds["in process"])
        print(f"{args.num_samples} samples, {len(specs)} participants at {args.image_size} px in one "
              f"process: {median:.1f} s ({args.num_samples / median:.0f} samples/s)")
        return {"seconds": seconds, "median_in_process": median}
    median = {k: statistics.median(v) for k, v in seconds.items()}
    ratio = median["flower"] / median["in process"]
    print(f"{args.num_samples} samples, {len(specs)} participants at {args.image_size} px: flwr run "
          f"{median['flower']:.1f} s, in process {median['in process']:.1f} s, ratio {ratio:.2f} "
          f"(target <= 1.25: {'met' if ratio <= 1.25 else 'missed'})")
    return {"seconds": seconds, "median": median, "ratio": ratio}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("encode", "round"))
    parser.add_argument("--prototypes", default="efficientnet-lite0,onnx:open-nsfw")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--num-images", type=int, default=2000, help="encode: images per repeat")
    parser.add_argument("--num-samples", type=int, default=10000, help="round: samples of the round")
    parser.add_argument("--shared-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--target-dim", type=int, default=512)
    parser.add_argument("--device", default="", help="default: cuda when available")
    parser.add_argument("--precision", default="fp32", help="fp32, or on a GPU bf16 / fp16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--in-process-only", action="store_true",
                        help="round: skip the flwr run (where Flower is not installed)")
    parser.add_argument("--keep-dataset", metavar="DIR",
                        help="round: write the last in-process round's optimized dataset here (and keep it)")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = bench_encode(args) if args.what == "encode" else bench_round(args)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
