"""Multi-round study: does the optimized data keep improving as prototypes are refined?

Runs ``flwr run .`` (local simulation) for two prototype pools, each with a refining policy and
the static control, for R rounds, then tabulates and plots the probe accuracy of the student
trained on every round's dataset.

    python -m simulations.multiround_study --rounds 5 --out simulations/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from coopt_flower.config import DEFAULT_PROTOTYPES

POOLS = {
    "default": ",".join(DEFAULT_PROTOTYPES),
    "weak": "random:efficientnet-lite0,random:efficientnet-lite1,random:efficientnet-lite2",
}


def run_one(pool: str, policy: str, args, workdir: Path) -> dict:
    from simulations.local_run import run_local_simulation

    specs = POOLS[pool]
    out = workdir / f"{pool}-{policy}"
    config = {
        "prototypes": specs, "num-samples": args.num_samples, "shared-size": args.shared_size,
        "image-size": args.image_size, "target-dim": args.target_dim, "seed": args.seed,
        "num-server-rounds": args.rounds, "train-epochs": args.train_epochs,
        "refinement": policy, "probe-train-samples": args.probe_train,
        "probe-test-samples": args.probe_test, "output-dir": str(out), "overwrite": True,
    }
    start = time.perf_counter()
    result = run_local_simulation(config, num_supernodes=len(specs.split(",")), echo=False,
                                  flwr_home=workdir / f"home-{pool}-{policy}")
    if result.returncode != 0 or not (out / "summary.json").exists():
        raise RuntimeError(f"{pool}/{policy} failed:\n{result.output[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    rounds = [summary["rounds"][str(r)] for r in range(1, args.rounds + 1)]
    return {
        "pool": pool, "policy": policy, "seconds": time.perf_counter() - start,
        "probe_accuracy": [r["student"]["probe_accuracy"] for r in rounds],
        "reference": [r["reference_prototype"] for r in rounds],
        "student_uniform_value": [(r["student_in"] or {}).get("uniform_value") for r in rounds],
        "switched": [sum(p.get("encoder") == "student" for p in r["participants"]) for r in rounds],
        "best_own_uniform_value": [min(p["uniform_value"] for p in r["participants"]) for r in rounds],
    }


def render(results: list[dict], args) -> str:
    lines = [
        "# Multi-round study (Fashion-MNIST)",
        "",
        f"`python -m simulations.multiround_study --rounds {args.rounds} --num-samples {args.num_samples} "
        f"--train-epochs {args.train_epochs} --image-size {args.image_size}`",
        "",
        f"{args.num_samples} samples, shared subset {args.shared_size}, prototypes at {args.image_size} px, "
        f"target dim {args.target_dim}; after every round a small-cnn student is trained for "
        f"{args.train_epochs} epochs on the round's dataset and linear-probed "
        f"({args.probe_train} labeled train / {args.probe_test} test images).",
        "",
        "| pool | policy | probe accuracy per round | reference per round | participants on the student | minutes |",
        "|---|---|---|---|---|---:|",
    ]
    for r in results:
        accs = " / ".join(f"{a:.3f}" for a in r["probe_accuracy"])
        refs = " / ".join(ref.split(":")[0] if ref.startswith("student") else ref for ref in r["reference"])
        lines.append(f"| {r['pool']} | {r['policy']} | {accs} | {refs} | "
                     f"{' / '.join(map(str, r['switched']))} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        rounds = range(1, len(r["probe_accuracy"]) + 1)
        ax.plot(rounds, r["probe_accuracy"], marker="o",
                linestyle="-" if r["policy"] != "static" else "--", label=f"{r['pool']} / {r['policy']}")
    ax.set_xlabel("round")
    ax.set_ylabel("student linear-probe accuracy")
    ax.set_title("CoOpt multi-round: refined vs static prototypes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--shared-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--target-dim", type=int, default=128)
    parser.add_argument("--train-epochs", type=int, default=4)
    parser.add_argument("--probe-train", type=int, default=2000)
    parser.add_argument("--probe-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pools", default="default,weak")
    parser.add_argument("--policies", default="switch,static")
    parser.add_argument("--workdir", default="/tmp/coopt-multiround")
    parser.add_argument("--out", default="simulations/results")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for pool in args.pools.split(","):
        for policy in args.policies.split(","):
            print(f"[study] {pool} / {policy} ...", flush=True)
            results.append(run_one(pool, policy, args, workdir))
            print(f"[study] {pool} / {policy}: {results[-1]['probe_accuracy']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "multiround.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    (out / "multiround.md").write_text(render(results, args))
    plot(results, out / "multiround_probe.png")
    print(render(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
