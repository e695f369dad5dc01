"""Which BYOL optimizer recipe is healthy on every student? (A healthy baseline first.)

A CoOpt-vs-BYOL number counts only when BYOL rises above the random-init student. With the
AdamW every row shares, BYOL falls below its random init on torchvision ResNet-18 and
collapses on MobileNetV3-small (benchmark, 10 epochs). This study trains the benchmark's BYOL
row, unchanged but for the optimizer recipe (:data:`coopt_flower.byol.BYOL_RECIPES`), on the
benchmark's data, students, augmentations and probe, and tabulates each recipe's probe curve
against the random-init student of the same seed. The recipe is *chosen* on the benchmark's
validation split (training images outside every reportable seed's sample), never on the test
set: per student, the recipe whose final full probe on validation is highest among those
healthy on validation::

    python -m simulations.byol_recipes --students small-cnn,torchvision:resnet18 \\
        --recipes shared,lars-cosine --epochs 5 --out simulations/results/byol-recipes

Every run is stored in ``--workdir`` and reused by a later invocation with the same settings
(so students can be run by separate invocations, one per core, and tabulated together).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

RESULTS = "byol_recipes"


def healthy(init: dict[str, float], curve: list[float], final: float) -> dict[str, Any]:
    """BYOL is healthy when its final full probe beats the random-init student's.

    ``init``: the random-init student's probes (``acc``, the per-epoch probe, and
    ``full_acc``); ``curve``: BYOL's per-epoch probe; ``final``: its full probe.
    """
    peak = max(curve)
    return {"healthy": final > init["full_acc"], "above_init_every_epoch": min(curve) > init["acc"],
            "peak": peak, "peak_epoch": curve.index(peak) + 1, "final_drop": peak - curve[-1]}


def choose(init: dict[str, float], runs: dict[str, dict[str, Any]]) -> str | None:
    """The recipe chosen on validation: the highest final full validation probe among the
    recipes whose BYOL beats the random init on validation (None: none is healthy, or the runs
    were made without a validation split)."""
    if "full_val_acc" not in init:
        return None
    healthy_on_val = {r: run["full_val_probe_acc"] for r, run in runs.items()
                      if "full_val_probe_acc" in run and run["full_val_probe_acc"] > init["full_val_acc"]}
    return max(healthy_on_val, key=healthy_on_val.get) if healthy_on_val else None


def run_study(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from coopt_flower.byol import BYOL_RECIPES
    from coopt_flower.data import open_source, select_samples
    from coopt_flower.students import create_student
    from simulations.benchmark.config import BYOL, load_config
    from simulations.benchmark.features import log, slug
    from simulations.benchmark.rows import ProbeSet, train_row
    from simulations.benchmark.validation import check_disjoint, validation_ids

    base = load_config(args.config)
    overrides = {k: v for k, v in {"epochs": args.epochs, "num_train": args.num_train,
                                   "num_test": args.num_test, "threads": args.threads,
                                   "device": args.device}.items() if v is not None}
    base = dataclasses.replace(base, **overrides)
    torch.set_num_threads(base.threads or 1)
    train, test = open_source(base.data), open_source(base.test_data)
    ids = select_samples(len(train), base.num_train, args.seed)
    test_ids = select_samples(len(test), base.num_test, base.test_seed)
    val_ids = validation_ids(len(train), base.num_train, base.num_val, base.val_seed)
    check_disjoint(val_ids, ids, args.seed)
    x_train, y_train = train.images(ids), train.labels(ids)
    val = dict(x_val=train.images(val_ids), y_val=train.labels(val_ids)) if len(val_ids) else {}
    probes = ProbeSet(x_train, y_train, test.images(test_ids), test.labels(test_ids),
                      base.image_size, base.probe_epochs, base.full_probe_steps, args.seed,
                      device=base.device, threads=1 if base.threads == 1 else None, **val)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(base, k) for k in ("num_train", "num_test", "epochs", "image_size",
                                             "batch_size", "lr", "weight_decay", "probe_epochs",
                                             "full_probe_steps", "data", "test_data", "num_val",
                                             "val_seed", "byol_views")}

    def stored(name: str, fn) -> dict[str, Any]:
        path = workdir / f"{slug(name)}.json"
        key = json.dumps({**settings, "seed": args.seed}, sort_keys=True)
        if path.exists():
            one = json.loads(path.read_text())
            if one["settings"] == key:
                log(f"  reusing {name}")
                return one["result"]
        if args.from_runs:
            return None  # tabulating only what is stored
        result = fn()
        path.write_text(json.dumps({"settings": key, "result": result}))
        return result

    students: dict[str, Any] = {}
    for arch in args.students.split(","):
        def init_probe(arch=arch) -> dict[str, Any]:
            torch.manual_seed(args.seed)  # the init every training function draws
            return probes.probe_backbone(create_student(arch, image_size=base.image_size), full=True)

        init = stored(f"{arch}-random-init", init_probe)
        if init is None:
            continue
        log(f"{arch} random init: probe {init['acc']:.4f} / full {init['full_acc']:.4f}")
        runs = {}
        for recipe in args.recipes.split(","):
            cfg = dataclasses.replace(base, byol_recipe=recipe)
            t = time.perf_counter()
            run = stored(f"{arch}-byol-{recipe}-{base.epochs}ep", lambda cfg=cfg, arch=arch: train_row(
                BYOL, arch, cfg, args.seed, probes, x_train, y_train, epochs=cfg.epochs))
            if run is None:
                continue
            run.update(healthy(init, run["probe_acc"], run["full_probe_acc"]))
            runs[recipe] = run
            log(f"{arch} BYOL {recipe}: full probe {run['full_probe_acc']:.4f} (init "
                f"{init['full_acc']:.4f}; healthy {run['healthy']}; {time.perf_counter() - t:.0f} s)")
        students[arch] = {"random_init": init, "recipes": runs, "chosen_on_validation": choose(init, runs)}
    return {"settings": {**settings, "seed": args.seed}, "students": students,
            "recipes": {r: BYOL_RECIPES[r] for r in args.recipes.split(",")}}


def render(results: dict[str, Any], command: str) -> str:
    s = results["settings"]
    stored = (" Tabulated from the runs stored in the work dir (`--from-runs`: the rows below are "
              "the combinations that were trained, by the same command without `--from-runs`, "
              "possibly over several invocations)." if "--from-runs" in command else "")
    lines = [
        "# BYOL optimizer recipes: is the baseline healthy on every student?", "",
        f"`{command}`{stored}", "",
        f"The benchmark's BYOL row (same data, augmentations, batch {s['batch_size']}, "
        f"{s['epochs']} epochs, probe), seed {s['seed']}, {s['num_train']:,} training images, "
        f"probe on {s['num_train']:,} labeled train / {s['num_test']:,} test features; only the "
        "optimizer recipe changes. Healthy: the final full probe beats the random-init "
        "student's. Accuracies in %.", "",
        "| student | random init (full) | recipe | probe per epoch | final (full probe) | peak (epoch) "
        "| healthy | above init every epoch | validation: final (init) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, one in results["students"].items():
        init = one["random_init"]
        for recipe, run in one["recipes"].items():
            curve = " ".join(f"{100 * a:.1f}" for a in run["probe_acc"])
            val = (f"{100 * run['full_val_probe_acc']:.1f} ({100 * init['full_val_acc']:.1f})"
                   if "full_val_probe_acc" in run and "full_val_acc" in init else "-")
            chosen = " (chosen)" if recipe == one.get("chosen_on_validation") else ""
            lines.append(
                f"| {arch} | {100 * init['acc']:.1f} ({100 * init['full_acc']:.1f}) | {recipe}{chosen} | {curve} | {100 * run['full_probe_acc']:.1f} "
                f"| {100 * run['peak']:.1f} ({run['peak_epoch']}) | {'yes' if run['healthy'] else 'no'} "
                f"| {'yes' if run['above_init_every_epoch'] else 'no'} | {val} |")
    lines += ["", "Chosen on the validation split (the highest final validation probe among the recipes "
              "healthy on it; the test columns choose nothing): "
              + "; ".join(f"{arch}: {one.get('chosen_on_validation') or 'none (no validation run or none healthy)'}"
                          for arch, one in results["students"].items())]
    lines += ["", "Recipes (`coopt_flower.byol.BYOL_RECIPES`; `lr_per_256` scales linearly to "
              "the batch size):", ""]
    lines += [f"- `{name}`: {json.dumps(r) if r else 'the AdamW every row shares (lr %g, weight decay %g, constant)' % (s['lr'], s['weight_decay'])}"
              for name, r in results["recipes"].items()]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = list(results["students"])
    if not archs:
        return  # nothing stored to draw
    # One colour per recipe across every panel, so a recipe reads the same from student to student.
    recipes = list(dict.fromkeys(r for one in results["students"].values() for r in one["recipes"]))
    colour = {recipe: f"C{i % 10}" for i, recipe in enumerate(recipes)}
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 3.6), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        one = results["students"][arch]
        for recipe, run in one["recipes"].items():
            ax.plot(range(1, len(run["probe_acc"]) + 1), [100 * a for a in run["probe_acc"]],
                    marker="o", label=recipe, color=colour[recipe])
        ax.axhline(100 * one["random_init"]["acc"], color="gray", ls="--", label="random init")
        ax.set(title=arch, xlabel="epoch", ylabel="linear probe accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    from simulations.benchmark.config import DEFAULT_CONFIG
    from simulations.study_args import add_key_overrides, reproducing_command

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="the benchmark config to start from")
    p.add_argument("--students", default="small-cnn,torchvision:resnet18,"
                   "torchvision:mobilenet_v3_small,vit-tiny-4x4", help="comma list")
    p.add_argument("--recipes", default="shared,adamw-cosine,sgd-cosine,lars-cosine", help="comma list")
    p.add_argument("--seed", type=int, default=0)
    add_key_overrides(p, {"epochs": int, "num_train": int, "num_test": int, "threads": int, "device": str},
                      what="the benchmark config's key")
    p.add_argument("--workdir", default="/tmp/coopt-byol-recipes")
    p.add_argument("--out", default="simulations/results/byol-recipes")
    p.add_argument("--from-runs", action="store_true",
                   help="train nothing: tabulate the runs of these students and recipes that are "
                        "stored in --workdir (the others are left out of the table)")
    args = p.parse_args(argv)
    from coopt_flower.byol import BYOL_RECIPES

    unknown = [r for r in args.recipes.split(",") if r not in BYOL_RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {', '.join(unknown)}; known: {', '.join(BYOL_RECIPES)}")
    command = reproducing_command("simulations.byol_recipes", argv)
    results = run_study(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{RESULTS}.json").write_text(json.dumps({"command": command, **results}, indent=2))
    (out / f"{RESULTS}.md").write_text(render(results, command))
    plot(results, out / f"{RESULTS}.png")
    print(render(results, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
