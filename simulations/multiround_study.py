"""Multi-round study: does the optimized data keep improving as prototypes are refined?

Runs R rounds for each prototype pool and policy (a refining policy and the ``static`` control),
then tabulates and plots the probe accuracy of the student trained on every round's dataset.
With ``driver: flower`` (the default) every run is ``flwr run .`` (local simulation); with
``driver: in-process`` the very same multi-round loop runs in this process
(:func:`coopt_flower.engine.run_rounds_in_process`: one participant per spec, no Flower), so
several seeds fit in one sitting. The study's settings come from a YAML file (``--config``,
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
        "policies": list, "student_image_size": int, "driver": str, "seeds": list, "run_config": dict}
# Keys a config may leave out, with the value the app takes then (the committed small study
# predates them). ``seeds`` (a list) runs every pool and policy once per seed instead of ``seed``;
# ``run_config`` holds further run-config keys for every run (e.g. partitioner, refine-epochs),
# ``pools`` may map a pool to ``{prototypes: [...], run_config: {...}}`` for keys of its own.
OPTIONAL = {"student_image_size": 0, "driver": "flower", "seeds": [], "run_config": {}}
DRIVERS = ("flower", "in-process")


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
    if values["driver"] not in DRIVERS:
        raise ValueError(f"{path}: driver must be one of {', '.join(DRIVERS)}, got {values['driver']!r}")
    return {key: KEYS[key](value) for key, value in values.items()}


def pool_specs(args, pool: str) -> tuple[list[str], dict]:
    """A pool's prototype specs and its own run-config keys."""
    entry = args.pools[pool]
    if isinstance(entry, dict):
        return list(entry["prototypes"]), dict(entry.get("run_config", {}))
    return list(entry), {}


def policy_keys(policy: str) -> dict:
    """A policy's run-config keys: ``distill:last-stage`` is ``refinement = distill`` with
    ``refine-layers = last-stage`` (so that one study compares layer groups side by side)."""
    refinement, _, layers = policy.partition(":")
    return {"refinement": refinement, **({"refine-layers": layers} if layers else {})}


def run_name(pool: str, policy: str, seed: int | None = None) -> str:
    """A run's directory name (no ``:`` in paths; ``-seedN`` when the study runs seeds)."""
    return f"{pool}-{policy.replace(':', '-')}" + ("" if seed is None else f"-seed{seed}")


def run_config(pool: str, policy: str, args, out: Path, seed: int) -> dict:
    """The run config of one pool / policy / seed."""
    specs, own = pool_specs(args, pool)
    return {
        "prototypes": ",".join(specs), "num-samples": args.num_samples, "shared-size": args.shared_size,
        "image-size": args.image_size, "target-dim": args.target_dim, "seed": seed,
        "student-image-size": args.student_image_size,
        "num-server-rounds": args.rounds, "train-epochs": args.train_epochs,
        **policy_keys(policy), "probe-train-samples": args.probe_train,
        "probe-test-samples": args.probe_test, "output-dir": str(out),
        # --resume: the app continues a run from the last round its checkpoint finished
        # (same run config); otherwise every run starts afresh.
        "overwrite": not getattr(args, "resume", False),
        **args.run_config, **own,
    }


def run_in_process(pool: str, policy: str, args, out: Path, seed: int) -> dict:
    """One run through the engine's multi-round loop in this process (no Flower)."""
    from coopt_flower.config import RunSettings
    from coopt_flower.data import open_source
    from coopt_flower.engine import prototype_participants, run_rounds_in_process

    settings = RunSettings.from_run_config(run_config(pool, policy, args, out, seed))
    participants = prototype_participants(settings, settings.resolved_device())
    start = time.perf_counter()
    run_rounds_in_process(settings, open_source(settings.data), participants)
    return read_run(out, pool, policy, seconds=time.perf_counter() - start, seed=seed)


def run_one(pool: str, policy: str, args, workdir: Path, seed: int | None = None) -> dict:
    from simulations.local_run import run_local_simulation

    seed = args.seed if seed is None else seed
    out = workdir / run_name(pool, policy, seed if args.seeds else None)
    if args.driver == "in-process":
        return run_in_process(pool, policy, args, out, seed)
    config = run_config(pool, policy, args, out, seed)
    specs = config["prototypes"]
    start = time.perf_counter()
    result = run_local_simulation(config, num_supernodes=len(specs.split(",")), echo=False,
                                  flwr_home=workdir / f"home-{run_name(pool, policy)}")
    if result.returncode != 0 or not any((out / name).exists() for name in PROGRESS_FILES):
        raise RuntimeError(f"{pool}/{policy} failed:\n{result.output[-3000:]}")
    run = read_run(out, pool, policy, seconds=time.perf_counter() - start, seed=seed)
    if run["rounds_finished"] < args.rounds:
        # The run ended without an error code but short of its rounds (e.g. Flower stopped it):
        # say so, and how to continue, instead of tabulating a cut run as the study's result.
        raise RuntimeError(
            f"{pool}/{policy} ended after {run['rounds_finished']} of {args.rounds} rounds; "
            f"continue it with the same command plus --resume:\n{result.output[-3000:]}")
    return run


PROGRESS_FILES = ("progress.json", "checkpoint.json")  # the run's progress file (its older name)


def read_run(out: Path, pool: str, policy: str, *, seconds: float | None = None, seed: int | None = None) -> dict:
    """One run's per-round results from its progress file (the rounds that finished, in order).

    Also reads a run that was stopped before its last round: every round the progress file
    holds with a probed student counts; ``rounds_finished`` says how many. Per round, the
    seconds spent refining (the slowest participant: they refine in parallel, each on its
    node), encoding (the round's steps at the platform, refinement included) and training
    the student.
    """
    from coopt_flower.engine.progress import load_progress

    summary = load_progress(out)
    rounds = []
    for r in range(1, len(summary["rounds"]) + 1):
        one = summary["rounds"].get(str(r))
        if one is None or (one.get("student") or {}).get("probe_accuracy") is None:
            break
        rounds.append(one)
    timing = []
    for one in rounds:
        path = Path(one.get("dataset", "")) / "manifest.json"
        manifest = json.loads(path.read_text()) if one.get("dataset") and path.exists() else {}
        refine = [p.get("refine_seconds", 0.0) for p in one["participants"]]
        # Each participant's encoding: its samples at its measured throughput.
        encode = [p["num_samples"] / p["images_per_second"] for p in manifest.get("participants", [])
                  if p.get("images_per_second")]
        timing.append({"refine_s": max(refine, default=0.0), "refine_sum_s": sum(refine),
                       "encode_sum_s": sum(encode),
                       "round_s": manifest.get("timings", {}).get("total"),
                       "train_s": one["student"].get("train_seconds")})
    return {
        "pool": pool, "policy": policy, "seed": seed, "seconds": seconds, "rounds_finished": len(rounds),
        "round_seconds": timing,
        "probe_accuracy": [r["student"]["probe_accuracy"] for r in rounds],
        "reference": [r["reference_prototype"] for r in rounds],
        "student_uniform_value": [(r["student_in"] or {}).get("uniform_value") for r in rounds],
        "switched": [sum(p.get("encoder") in ("student", "refined") for p in r["participants"]) for r in rounds],
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
        "| pool | policy | seed | probe accuracy per round | reference per round | participants on the student (switch) or refined (distill) | minutes |",
        "|---|---|---:|---|---|---|---:|",
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
        refs = " / ".join(ref.split("+distill")[0] + ("+distill" if "+distill" in ref else "")
                          for ref in refs.split(" / "))
        seed = "-" if r.get("seed") is None else r["seed"]
        lines.append(f"| {r['pool']} | {r['policy']} | {seed} | {accs} | {refs} | "
                     f"{' / '.join(map(str, r['switched']))} | {minutes} |")
    lines += paired_lines(results) + timing_lines(results)
    return "\n".join(lines) + "\n"


def paired(results: list[dict], control: str = "static") -> list[dict]:
    """Per pool, policy and seed: the policy's probe accuracy minus the control's, round by round
    (the control of the same pool and seed)."""
    controls = {(r["pool"], r.get("seed")): r for r in results if r["policy"] == control}
    out = []
    for r in results:
        c = controls.get((r["pool"], r.get("seed")))
        if r["policy"] == control or c is None:
            continue
        n = min(len(r["probe_accuracy"]), len(c["probe_accuracy"]))
        out.append({"pool": r["pool"], "policy": r["policy"], "seed": r.get("seed"),
                    "gain": [r["probe_accuracy"][i] - c["probe_accuracy"][i] for i in range(n)],
                    "vs_own_round3": (r["probe_accuracy"][n - 1] - r["probe_accuracy"][2]) if n >= 3 else None})
    return out


def paired_lines(results: list[dict]) -> list[str]:
    rows = paired(results)
    if not rows:
        return []
    lines = ["", "Paired with `static` (same pool and seed): points of probe accuracy per round, and the "
             "last round minus the policy's own round 3.", "",
             "| pool | policy | seed | policy - static per round | last - round 3 |", "|---|---|---:|---|---:|"]
    for row in rows:
        gain = " / ".join(f"{100 * g:+.2f}" for g in row["gain"])
        last = "-" if row["vs_own_round3"] is None else f"{100 * row['vs_own_round3']:+.2f}"
        lines.append(f"| {row['pool']} | {row['policy']} | {'-' if row['seed'] is None else row['seed']} | "
                     f"{gain} | {last} |")
    return lines


def timing_lines(results: list[dict]) -> list[str]:
    timed = [r for r in results if r.get("round_seconds") and any(t["refine_s"] for t in r["round_seconds"])]
    if not timed:
        return []
    lines = ["", "Seconds per round: refine (the slowest participant's refinement; participants refine "
             "in parallel on their own nodes), encode (the participants' encoding of their shards, summed), "
             "round (the platform's whole round; in process the participants take turns, so it holds "
             "every refinement), train (the round's student). Last column: refinement over encoding, "
             "summed over participants and refined rounds.", "",
             "| pool | policy | seed | refine / encode / round / train per round | refine / encode |",
             "|---|---|---:|---|---:|"]
    for r in timed:
        per = " ; ".join(f"{t['refine_s']:.0f} / {t.get('encode_sum_s') or 0:.0f} / {t['round_s'] or 0:.0f} / "
                         f"{t['train_s'] or 0:.0f}" for t in r["round_seconds"])
        refined = [t for t in r["round_seconds"] if t["refine_s"] and t.get("encode_sum_s")]
        ratio = sum(t["refine_sum_s"] for t in refined) / max(sum(t["encode_sum_s"] for t in refined), 1e-9)
        lines.append(f"| {r['pool']} | {r['policy']} | {'-' if r.get('seed') is None else r['seed']} | "
                     f"{per} | {ratio:.2f} |")
    return lines


def plot(results: list[dict], path: Path) -> None:
    """Probe accuracy against rounds: one panel per pool, one colour per policy (the mean over
    seeds in bold, each seed thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pools = list(dict.fromkeys(r["pool"] for r in results))
    fig, axes = plt.subplots(1, len(pools), figsize=(5.5 * len(pools), 4), squeeze=False)
    for ax, pool in zip(axes[0], pools):
        for i, policy in enumerate(dict.fromkeys(r["policy"] for r in results if r["pool"] == pool)):
            runs = [r["probe_accuracy"] for r in results if r["pool"] == pool and r["policy"] == policy]
            style = dict(color=f"C{i}", linestyle="--" if policy == "static" else "-")
            for accs in runs:
                ax.plot(range(1, len(accs) + 1), accs, alpha=0.35, linewidth=0.8, **style)
            n = min(len(a) for a in runs)
            mean = np.mean([a[:n] for a in runs], axis=0)
            ax.plot(range(1, n + 1), mean, marker="o", linewidth=2, label=f"{policy} ({len(runs)} seed(s))", **style)
        ax.set_title(pool)
        ax.set_xlabel("round")
        ax.set_ylabel("student linear-probe accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("CoOpt multi-round: refined vs static prototypes")
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
    for seed in (args.seeds or [None]):
        for pool in args.pools:
            for policy in args.policies:
                if args.from_checkpoints:
                    results.append(read_run(workdir / run_name(pool, policy, seed), pool, policy, seed=seed))
                    continue
                print(f"[study] {pool} / {policy}" + ("" if seed is None else f" / seed {seed}") + " ...",
                      flush=True)
                results.append(run_one(pool, policy, args, workdir, seed))
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
