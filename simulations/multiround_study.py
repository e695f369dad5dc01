"""Multi-round study: does the optimized data keep improving as prototypes are refined?

Runs ``flwr run .`` (local simulation) for two prototype pools, each with a refining policy and
the static control, for R rounds, then tabulates and plots the probe accuracy of the student
trained on every round's dataset. The study's settings come from a YAML file (``--config``,
default ``simulations/configs/multiround.yaml``, the one behind the committed results); options
override single keys.

    python -m simulations.multiround_study --config simulations/configs/multiround.yaml
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from coopt_flower.errors import did_you_mean

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "multiround.yaml"
# The study's keys (also its command-line options, with dashes) and their types.
KEYS = {"rounds": int, "num_samples": int, "shared_size": int, "image_size": int, "target_dim": int,
        "train_epochs": int, "probe_train": int, "probe_test": int, "seed": int, "pools": dict,
        "policies": list, "student_image_size": int}
# Keys a config may leave out, with the value the app takes then (the committed small study
# predates them).
OPTIONAL = {"student_image_size": 0}


def load_config(path: str | Path) -> dict:
    """The study's settings from a YAML file; every key of :data:`KEYS` must be there."""
    values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for key in values:
        if key not in KEYS:
            raise ValueError(f"{path}: unknown study key {key!r}{did_you_mean(key, KEYS)}")
    values = {**OPTIONAL, **values}
    missing = sorted(set(KEYS) - set(values))
    if missing:
        raise ValueError(f"{path}: missing study keys {', '.join(missing)}")
    return {key: KEYS[key](value) for key, value in values.items()}


def run_one(pool: str, policy: str, args, workdir: Path) -> dict:
    from simulations.local_run import run_local_simulation

    specs = ",".join(args.pools[pool])
    out = workdir / f"{pool}-{policy}"
    config = {
        "prototypes": specs, "num-samples": args.num_samples, "shared-size": args.shared_size,
        "image-size": args.image_size, "target-dim": args.target_dim, "seed": args.seed,
        "student-image-size": args.student_image_size,
        "num-server-rounds": args.rounds, "train-epochs": args.train_epochs,
        "refinement": policy, "probe-train-samples": args.probe_train,
        "probe-test-samples": args.probe_test, "output-dir": str(out),
        # --resume: the app continues a run from the last round its checkpoint finished
        # (same run config); otherwise every run starts afresh.
        "overwrite": not getattr(args, "resume", False),
    }
    start = time.perf_counter()
    result = run_local_simulation(config, num_supernodes=len(specs.split(",")), echo=False,
                                  flwr_home=workdir / f"home-{pool}-{policy}")
    if result.returncode != 0 or not (out / "checkpoint.json").exists():
        raise RuntimeError(f"{pool}/{policy} failed:\n{result.output[-3000:]}")
    run = read_run(out, pool, policy, seconds=time.perf_counter() - start)
    if run["rounds_finished"] < args.rounds:
        # The run ended without an error code but short of its rounds (e.g. Flower stopped it):
        # say so, and how to continue, instead of tabulating a cut run as the study's result.
        raise RuntimeError(
            f"{pool}/{policy} ended after {run['rounds_finished']} of {args.rounds} rounds; "
            f"continue it with the same command plus --resume:\n{result.output[-3000:]}")
    return run


def read_run(out: Path, pool: str, policy: str, *, seconds: float | None = None) -> dict:
    """One run's per-round results from its checkpoint (the rounds that finished, in order).

    Also reads a run that was stopped before its last round: every round the checkpoint holds
    with a probed student counts; ``rounds_finished`` says how many.
    """
    summary = json.loads((out / "checkpoint.json").read_text())
    rounds = []
    for r in range(1, len(summary["rounds"]) + 1):
        one = summary["rounds"].get(str(r))
        if one is None or (one.get("student") or {}).get("probe_accuracy") is None:
            break
        rounds.append(one)
    return {
        "pool": pool, "policy": policy, "seconds": seconds, "rounds_finished": len(rounds),
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
        f"`{args.command}` (config `{args.config}`)",
        "",
        f"{args.num_samples} samples, shared subset {args.shared_size}, prototypes at {args.image_size} px, "
        f"target dim {args.target_dim}; after every round a small-cnn student"
        + (f" at {args.student_image_size} px" if args.student_image_size else "")
        + " is trained for "
        f"{args.train_epochs} epochs on the round's dataset and linear-probed "
        f"({args.probe_train} labeled train / {args.probe_test} test images).",
        "",
        "| pool | policy | probe accuracy per round | reference per round | participants on the student | minutes |",
        "|---|---|---|---|---|---:|",
    ]
    stopped = [r for r in results if r.get("rounds_finished", args.rounds) < args.rounds]
    if stopped:
        lines[3:3] = ["**Stopped before the last round** (read from the runs' checkpoints with "
                      "`--from-checkpoints`): " + "; ".join(
                          f"{r['pool']}/{r['policy']} finished {r['rounds_finished']} of "
                          f"{args.rounds} rounds" for r in stopped) + ".", ""]
    for r in results:
        accs = " / ".join(f"{a:.3f}" for a in r["probe_accuracy"])
        refs = " / ".join(ref.split(":")[0] if ref.startswith("student") else ref for ref in r["reference"])
        minutes = "-" if r.get("seconds") is None else f"{r['seconds'] / 60:.1f}"
        lines.append(f"| {r['pool']} | {r['policy']} | {accs} | {refs} | "
                     f"{' / '.join(map(str, r['switched']))} | {minutes} |")
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
    from simulations.study_args import add_key_overrides, reproducing_command

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file with the study's keys")
    add_key_overrides(parser, {key: int for key, kind in KEYS.items() if kind is int})
    parser.add_argument("--only-pools", help="comma list: run only these pools of the config")
    parser.add_argument("--only-policies", help="comma list: run only these policies of the config")
    parser.add_argument("--workdir", default="/tmp/coopt-multiround")
    parser.add_argument("--from-checkpoints", action="store_true",
                        help="run nothing: tabulate the runs already in --workdir (<pool>-<policy>/"
                             "checkpoint.json), also runs stopped before their last round")
    parser.add_argument("--resume", action="store_true",
                        help="continue the runs already in --workdir from their last finished "
                             "round (same keys; e.g. after a stop) instead of starting afresh")
    parser.add_argument("--out", default="simulations/results")
    args = parser.parse_args(argv)
    if args.resume and args.from_checkpoints:
        parser.error("--resume runs the study; --from-checkpoints runs nothing: choose one")
    config = load_config(args.config)
    for key, value in config.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.only_pools:
        args.pools = {name: args.pools[name] for name in args.only_pools.split(",")}
    if args.only_policies:
        args.policies = args.only_policies.split(",")
    args.command = reproducing_command("simulations.multiround_study", argv)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for pool in args.pools:
        for policy in args.policies:
            if args.from_checkpoints:
                results.append(read_run(workdir / f"{pool}-{policy}", pool, policy))
                continue
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
