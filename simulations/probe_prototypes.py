"""Does the uniform value rank prototypes the way their own features probe?

For each prototype: encode a Fashion-MNIST train/test subset at one resolution, linear-probe
its raw features (mean +- std over seeds), and compute its uniform value on a shared subset
projected exactly as a CoOpt round does. Raw pixels are probed too, as the floor.

    python -m simulations.probe_prototypes --out simulations/results/prototype_probe.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from coopt_flower.data import open_source, select_samples, select_shared_subset
from coopt_flower.config import DEFAULT_PROTOTYPES
from coopt_flower.probing import linear_probe, mean_std
from simulations.benchmark.statistics import spearman_with_p
from coopt_flower.projection import project, projection_matrix
from coopt_flower.prototypes import create_prototype
from coopt_flower.targets import encode_features
from coopt_flower.scores import uniform_value

DEFAULT_SPECS = ",".join(DEFAULT_PROTOTYPES)


def encode(prototype, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    features, _ = encode_features(prototype, images, None, batch_size=batch_size,
                                  desc=prototype.spec)
    return features


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prototypes", default=DEFAULT_SPECS)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--shared-size", type=int, default=256)
    parser.add_argument("--target-dim", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    train, test = open_source("fashion-mnist"), open_source("fashion-mnist:test")
    train_ids = select_samples(len(train), args.num_train, seed=0)
    test_ids = select_samples(len(test), args.num_test, seed=0)
    shared_ids = select_shared_subset(select_samples(len(train), 0, 0), args.shared_size, seed=0)
    x_train, y_train = train.images(train_ids), train.labels(train_ids)
    x_test, y_test = test.images(test_ids), test.labels(test_ids)
    x_shared = train.images(shared_ids)

    def probe(f_train, f_test):
        accs = [linear_probe(f_train, y_train, f_test, y_test, epochs=args.epochs, seed=s).accuracy
                for s in range(args.seeds)]
        return mean_std(accs)

    rows = []
    m, s = probe(x_train, x_test)
    rows.append({"prototype": "raw pixels", "probe_mean": m, "probe_std": s})
    for spec in [p.strip() for p in args.prototypes.split(",") if p.strip()]:
        start = time.perf_counter()
        prototype = create_prototype(spec, image_size=args.image_size)
        f_train, f_test = encode(prototype, x_train), encode(prototype, x_test)
        shared = project(encode(prototype, x_shared),
                         projection_matrix(prototype.output_dim, args.target_dim, 0))
        m, s = probe(f_train, f_test)
        rows.append({"prototype": spec, "dim": prototype.output_dim, "probe_mean": m,
                     "probe_std": s, "uniform_value": uniform_value(shared),
                     "seconds": time.perf_counter() - start})

    protos = [r for r in rows if "uniform_value" in r]
    by_uv = [r["prototype"] for r in sorted(protos, key=lambda r: r["uniform_value"])]
    by_probe = [r["prototype"] for r in sorted(protos, key=lambda r: -r["probe_mean"])]
    # Lower uniform value should mean higher accuracy: correlate -UV with accuracy.
    rho, p_value = spearman_with_p([-r["uniform_value"] for r in protos], [r["probe_mean"] for r in protos])
    print(f"\nFashion-MNIST, {args.num_train} train / {args.num_test} test, "
          f"{args.image_size} px, {args.seeds} seeds, shared subset {args.shared_size}")
    print(f"{'prototype':22s} {'dim':>5s} {'probe acc':>15s} {'uniform value':>14s}")
    for r in rows:
        uv = f"{r['uniform_value']:.4f}" if "uniform_value" in r else "-"
        print(f"{r['prototype']:22s} {r.get('dim', ''):>5} "
              f"{r['probe_mean']:.4f} +- {r['probe_std']:.4f} {uv:>14s}")
    print(f"ranking by uniform value (best first): {by_uv}")
    print(f"ranking by probe accuracy (best first): {by_probe}")
    print(f"Spearman(-uniform value, probe accuracy) = {rho:.2f} (permutation p = {p_value:.2f} over "
          f"{len(protos)} prototypes)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"args": vars(args), "rows": rows, "rank_by_uniform_value": by_uv,
                       "rank_by_probe": by_probe, "spearman": rho, "spearman_p": p_value}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
