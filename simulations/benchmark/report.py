"""The benchmark's summary (means over seeds, speedups, target checks), Markdown and plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from coopt_flower.probing import mean_std
from simulations.benchmark.config import (ALIGNED, BYOL, BYOL_LONG, HEADS, PLOT_NAME, RANDOM, SINGLE,
                                          SUPERVISED, UNALIGNED, Config)
from simulations.benchmark.curves import acc_at_time, curve_points, speedup


def summarize(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    """Means over seeds, equal-wall-clock accuracies, speedups and the target checks."""
    seeds = [str(s) for s in cfg.seeds]
    archs = [cfg.arch, cfg.arch2]
    summary: dict[str, Any] = {"rows": [], "floors": [], "speedup": {}, "equal_wall_clock": {}}

    # Floors (features probed directly).
    for name in ["raw pixels"] + [f"features:{s}" for s in cfg.prototypes]:
        vals = [results["seeds"][s]["floors"][name] for s in seeds]
        m, sd = mean_std([v["acc"] for v in vals])
        fm, fsd = mean_std([v["full_acc"] for v in vals])
        summary["floors"].append({"name": name, "dim": vals[0].get("dim"), "acc_mean": m,
                                  "acc_std": sd, "full_acc_mean": fm, "full_acc_std": fsd})

    mean_curves: dict[str, dict[str, Any]] = {}
    for arch in archs:
        init = [results["seeds"][s]["runs"][arch][RANDOM] for s in seeds]
        m, sd = mean_std([r["acc"] for r in init])
        fm, fsd = mean_std([r["full_acc"] for r in init])
        summary["rows"].append({"row": RANDOM, "arch": arch, "acc_mean": m, "acc_std": sd,
                                "full_acc_mean": fm, "full_acc_std": fsd, "train_seconds": 0.0,
                                "epoch_seconds": 0.0})
        for row in results["seeds"][seeds[0]]["runs"][arch]:
            if row == RANDOM:
                continue
            runs = [results["seeds"][s]["runs"][arch][row] for s in seeds]
            inits = [results["seeds"][s]["runs"][arch][RANDOM]["acc"] for s in seeds]
            pts = [curve_points(r, a) for r, a in zip(runs, inits)]
            times = np.mean([p[0] for p in pts], axis=0)
            accs = np.mean([p[1] for p in pts], axis=0)
            accs_std = np.std([p[1] for p in pts], axis=0)
            cpu_times = np.mean([curve_points(r, a, "epoch_cpu_times")[0]
                                 for r, a in zip(runs, inits)], axis=0)
            mean_curves[f"{arch}|{row}"] = {"times": times, "accs": accs, "cpu_times": cpu_times}
            m, sd = mean_std([r["probe_acc"][-1] for r in runs])
            fm, fsd = mean_std([r["full_probe_acc"] for r in runs])
            summary["rows"].append({
                "row": row, "arch": arch, "acc_mean": m, "acc_std": sd,
                "full_acc_mean": fm, "full_acc_std": fsd,
                "train_seconds": float(times[-1]),
                "epochs": len(runs[0]["epoch_times"]),
                "epoch_seconds": float(times[-1] / len(runs[0]["epoch_times"])),
                "train_cpu_seconds": float(cpu_times[-1]),
                "curve_cpu_seconds": cpu_times.tolist(),
                "curve_epochs": list(range(len(times))),
                "curve_seconds": times.tolist(), "curve_acc_mean": accs.tolist(),
                "curve_acc_std": accs_std.tolist(),
            })

    enc = [results["seeds"][s]["encoding"] for s in seeds]
    enc_max = float(np.mean([e["collaborative_max_seconds"] for e in enc]))
    enc_sum = float(np.mean([e["collaborative_sum_seconds"] for e in enc]))
    enc_max_cpu = float(np.mean([e["collaborative_max_cpu_seconds"] for e in enc]))
    enc_sum_cpu = float(np.mean([e["collaborative_sum_cpu_seconds"] for e in enc]))
    summary["encoding"] = {
        "collaborative_max_seconds": enc_max, "collaborative_sum_seconds": enc_sum,
        "collaborative_max_cpu_seconds": enc_max_cpu, "collaborative_sum_cpu_seconds": enc_sum_cpu,
        "centralized_seconds": {spec: float(np.mean([e["centralized_seconds"][spec] for e in enc]))
                                for spec in cfg.prototypes},
        "images_per_second": results["encoding_rates"],
        "images_per_cpu_second": {spec: results["encoding_meta"][spec]["images_per_cpu_second"]
                                  for spec in cfg.prototypes},
    }

    for arch in archs:
        coopt = mean_curves[f"{arch}|{ALIGNED}"]
        byol = mean_curves[f"{arch}|{BYOL}"]
        budget = float(coopt["times"][-1])
        summary["equal_wall_clock"][arch] = {"budget_seconds": budget, "rows": {}}
        for key, c in mean_curves.items():
            a, row = key.split("|", 1)
            if a != arch:
                continue
            acc, running = acc_at_time(c["times"], c["accs"], budget)
            summary["equal_wall_clock"][arch]["rows"][row] = {
                "acc": acc, "finished_before_budget": not running,
                "train_seconds": float(c["times"][-1])}
        enc_costs = (enc_max, enc_sum, enc_max_cpu, enc_sum_cpu)
        summary["speedup"][arch] = speedup(byol, coopt, enc_costs)
        long = mean_curves.get(f"{arch}|{BYOL_LONG}")
        if long is not None:
            summary.setdefault("speedup_vs_longer_byol", {})[arch] = speedup(long, coopt, enc_costs)

    summary["targets"] = check_targets(cfg, summary)
    return summary


def _row(summary: dict[str, Any], row: str, arch: str) -> dict[str, Any]:
    return next(r for r in summary["rows"] if r["row"] == row and r["arch"] == arch)


def check_targets(cfg: Config, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed."""
    checks = []
    for arch in (cfg.arch, cfg.arch2):
        al, by = _row(summary, ALIGNED, arch), _row(summary, BYOL, arch)
        gap = 100 * (al["acc_mean"] - by["acc_mean"])
        gap_full = 100 * (al["full_acc_mean"] - by["full_acc_mean"])
        checks.append({"target": f"{arch}: CoOpt (aligned) >= BYOL + 5 points at equal epochs",
                       "value": f"{gap:+.1f} points (full probe {gap_full:+.1f})",
                       "met": gap >= 5.0 and gap_full >= 5.0})
        sp = summary["speedup"][arch]
        why = ("undefined: BYOL ended at or below the random-init student"
               if sp["byol_not_above_init"] else "CoOpt never reached BYOL's final accuracy")
        for key, label in (("training_only", "training time"),
                           ("with_encoding_max", "with encoding, parallel participants")):
            val = sp[key]
            checks.append({"target": f"{arch}: speedup >= 1.9x ({label})",
                           "value": why if val is None else f"{val:.2f}x",
                           "met": val is not None and val >= 1.9})
    for arch, sp in summary.get("speedup_vs_longer_byol", {}).items():
        val = sp["training_only"]
        why = ("undefined: BYOL ended at or below the random-init student"
               if sp["byol_not_above_init"] else
               f"CoOpt ({cfg.epochs} epochs) never reached it")
        enc = sp["with_encoding_max"]
        checks.append({"target": f"{arch}: (supplementary) speedup >= 1.9x vs BYOL trained "
                                 f"{sp['byol_epochs']} epochs",
                       "value": why if val is None else
                       f"{val:.2f}x training, {enc:.2f}x with encoding (parallel)",
                       "met": val is not None and val >= 1.9})
    al, un = _row(summary, ALIGNED, cfg.arch), _row(summary, UNALIGNED, cfg.arch)
    diff = 100 * (al["acc_mean"] - un["acc_mean"])
    diff_full = 100 * (al["full_acc_mean"] - un["full_acc_mean"])
    noise = 100 * 2 * math.sqrt((al["acc_std"] ** 2 + un["acc_std"] ** 2) / 2)
    checks.append({"target": f"{cfg.arch}: aligned clearly above unaligned "
                             "(> 1 point and > 2 pooled std)",
                   "value": f"{diff:+.1f} points (2 pooled std = {noise:.1f}; "
                            f"full probe {diff_full:+.1f})",
                   "met": diff > max(1.0, noise) and diff_full > 1.0})
    singles = [r for r in summary["rows"] if r["arch"] == cfg.arch and r["row"].startswith(SINGLE)]
    best = max(singles, key=lambda r: r["acc_mean"])
    best_full = max(singles, key=lambda r: r["full_acc_mean"])
    diff = 100 * (al["acc_mean"] - best["acc_mean"])
    diff_full = 100 * (al["full_acc_mean"] - best_full["full_acc_mean"])
    checks.append({"target": f"{cfg.arch}: aligned not more than 1 point below the best single "
                             "prototype",
                   "value": f"{diff:+.1f} points vs {best['row'][len(SINGLE):]} (full probe "
                            f"{diff_full:+.1f} vs {best_full['row'][len(SINGLE):]})",
                   "met": diff >= -1.0 and diff_full >= -1.0})
    if any(r["row"] == HEADS for r in summary["rows"]):  # results from before the heads row lack it
        checks += _heads_targets(cfg, summary, best, best_full)
    return checks


def _heads_targets(cfg: Config, summary: dict[str, Any], best: dict[str, Any],
                   best_full: dict[str, Any]) -> list[dict[str, Any]]:
    """merge=heads: >= the best single prototype, and >= unaligned + 2 points."""
    he, un = _row(summary, HEADS, cfg.arch), _row(summary, UNALIGNED, cfg.arch)
    vs_best = 100 * (he["acc_mean"] - best["acc_mean"])
    vs_best_full = 100 * (he["full_acc_mean"] - best_full["full_acc_mean"])
    vs_un = 100 * (he["acc_mean"] - un["acc_mean"])
    vs_un_full = 100 * (he["full_acc_mean"] - un["full_acc_mean"])
    return [
        {"target": f"{cfg.arch}: heads >= the best single prototype",
         "value": f"{vs_best:+.1f} points vs {best['row'][len(SINGLE):]} (full probe {vs_best_full:+.1f})",
         "met": vs_best >= 0.0 and vs_best_full >= 0.0},
        {"target": f"{cfg.arch}: heads >= unaligned + 2 points",
         "value": f"{vs_un:+.1f} points (full probe {vs_un_full:+.1f})",
         "met": vs_un >= 2.0 and vs_un_full >= 2.0},
    ]


# --------------------------------------------------------------------------- report


def _pct(m: float, s: Optional[float] = None) -> str:
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def _speedup_table(speedups: dict[str, dict[str, Any]]) -> list[str]:
    def ratio(v):
        return "-" if v is None else f"{v:.2f}x"

    def secs(v):
        return "never" if v is None else f"{v:.0f}"

    lines = ["| student | BYOL epochs | BYOL final probe | clock | BYOL time to it (s) | "
             "CoOpt time to it (s) | speedup, training | + encoding (parallel, max) | "
             "+ encoding (sum) |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for arch, sp in speedups.items():
        for clock, suffix in (("wall", ""), ("CPU", "_cpu")):
            note = ""
            if sp["byol_not_above_init"]:
                note = f" (random init: {_pct(sp['random_init_acc'])}; ratio undefined)"
            lines.append(
                f"| {arch} | {sp['byol_epochs']} | {_pct(sp['byol_final_acc'])}{note} | {clock} | "
                f"{secs(sp[f'byol{suffix}_seconds_to_final'])} | "
                f"{secs(sp[f'coopt{suffix}_seconds_to_reach'])} | "
                f"{ratio(sp[f'training_only{suffix}'])} | {ratio(sp[f'with_encoding_max{suffix}'])} | "
                f"{ratio(sp[f'with_encoding_sum{suffix}'])} |")
    lines += ["", "Wall: training wall clock (other users shared this machine); CPU: process CPU "
                  "seconds with one torch thread, i.e. the compute each method needed. Encoding "
                  "costs are added on the same clock."]
    return lines


def render_markdown(cfg: Config, results: dict[str, Any], summary: dict[str, Any]) -> str:
    n_seeds = len(cfg.seeds)
    lines = [
        "# Benchmark: CoOpt vs BYOL at an equal training budget",
        "",
        f"Command: `{results['command'].replace(' --resume', '').replace(' --report-only', '')}`"
        + (f" (config `{results['config_file']}`)" if results.get("config_file") else ""),
        "",
        f"Fashion-MNIST subset: {cfg.num_train} training images per seed "
        f"(`select_samples(60000, {cfg.num_train}, seed)`), {cfg.num_test} test images "
        f"(fixed, seed {cfg.test_seed}); students at {cfg.image_size} px (from 28 px), "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} wd "
        f"{cfg.weight_decay:g}, two augmented views per step for every method; seeds "
        f"{', '.join(map(str, cfg.seeds))}. Prototypes at {cfg.proto_image_size} px, "
        f"targets {cfg.target_dim}-d ({cfg.target_dtype}), {len(cfg.prototypes)} participants "
        f"(IID shards), shared subset {cfg.shared_size}. {cfg.threads} torch thread(s) on "
        f"{results['environment']['cpu_count']} CPU cores; wall clock of this invocation "
        f"{results['wall_seconds'] / 60:.1f} min"
        + (f" ({len(results['reused_runs'])} training runs reused from an earlier invocation "
           f"with `--resume`; each run's own wall clock is in the JSON)."
           if results.get("reused_runs") else "."),
        "",
        f"Probe: after every epoch, features of the {cfg.num_train} training images (labels) "
        f"and {cfg.num_test} test images; `nn.Linear`, Adam lr 3e-4, batch 256, "
        f"{cfg.probe_epochs} epochs, mean test accuracy of the last 3 epochs (\"probe\"). The "
        f"final epoch is also probed with >= {cfg.full_probe_steps} steps (\"full probe\", the "
        "protocol's default). Accuracies in %, mean ± std over "
        f"{n_seeds} seed(s). Training time excludes probing.",
        "",
        "## (a) Equal epochs",
        "",
        "| method | student | epochs | probe | full probe | train time (s) | s/epoch | "
        "train CPU (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["rows"]:
        lines.append(f"| {r['row']} | {r['arch']} | {r.get('epochs', 0)} | "
                     f"{_pct(r['acc_mean'], r['acc_std'])} | "
                     f"{_pct(r['full_acc_mean'], r['full_acc_std'])} | "
                     f"{r['train_seconds']:.0f} | {r['epoch_seconds']:.1f} | "
                     f"{r.get('train_cpu_seconds', 0.0):.0f} |")
    lines += ["", "Floors (features probed directly, no student):", "",
              "| features | dim | probe | full probe |", "|---|---:|---:|---:|"]
    for f in summary["floors"]:
        dim = f["dim"] if f["dim"] is not None else "784"
        lines.append(f"| {f['name']} | {dim} | {_pct(f['acc_mean'], f['acc_std'])} | "
                     f"{_pct(f['full_acc_mean'], f['full_acc_std'])} |")
    for arch, eq in summary["equal_wall_clock"].items():
        lines += ["", f"## (b) Equal wall clock ({arch}): accuracy within CoOpt (aligned)'s "
                      f"{eq['budget_seconds']:.0f} s of training", "",
                  "| method | probe at budget | its own training time (s) |", "|---|---:|---:|"]
        for row, v in eq["rows"].items():
            note = " (finished earlier)" if v["finished_before_budget"] and row != ALIGNED else ""
            lines.append(f"| {row} | {_pct(v['acc'])}{note} | {v['train_seconds']:.0f} |")
    lines += ["", "## (c) Speedup: BYOL's training time to its final accuracy / CoOpt (aligned)'s "
                  "time to the same accuracy", ""]
    lines += _speedup_table(summary["speedup"])
    if summary.get("speedup_vs_longer_byol"):
        lines += ["", f"Supplementary: the same against BYOL trained {cfg.byol_long_epochs} epochs "
                      f"(first student only; CoOpt still trained {cfg.epochs} epochs):", ""]
        lines += _speedup_table(summary["speedup_vs_longer_byol"])
    enc = summary["encoding"]
    lines += ["", "Curves are means over seeds (cumulative training seconds, probe accuracy per "
                  "epoch, epoch 0 = the random-init student), interpolated linearly.", "",
              "## Encoding cost (one-off, CoOpt's side)", "",
              "| prototype | img/s (wall) | img/CPU-s | centralized: all images (s) | "
              "collaborative: shard + S (s) |",
              "|---|---:|---:|---:|---:|"]
    collab = {spec: float(np.mean([results["seeds"][str(s)]["encoding"]["collaborative_seconds"][spec]
                                   for s in cfg.seeds])) for spec in cfg.prototypes}
    for spec in cfg.prototypes:
        lines.append(f"| `{spec}` | {enc['images_per_second'][spec]:.1f} | "
                     f"{enc['images_per_cpu_second'][spec]:.1f} | "
                     f"{enc['centralized_seconds'][spec]:.1f} | {collab[spec]:.1f} |")
    lines += [f"| collaborative, max over participants (wall clock) | | | | "
              f"{enc['collaborative_max_seconds']:.1f} |",
              f"| collaborative, sum over participants (compute) | | | | "
              f"{enc['collaborative_sum_seconds']:.1f} |",
              "", "## Alignment per seed", "",
              "| seed | reference (lowest uniform value) | participant | prototype | uniform value | "
              "residual on S | held-out residual |", "|---|---|---|---|---:|---:|---:|"]
    for s in cfg.seeds:
        a = results["seeds"][str(s)]["alignment"]
        for p in a["participants"]:
            lines.append(f"| {s} | {a['reference']} (`{a['reference_prototype']}`) | {p['name']} | "
                         f"`{p['prototype']}` | {p['uniform_value']:.4f} | "
                         f"{p['fit_residual']:.3f} | {p['holdout_residual']:.3f} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for c in summary["targets"]:
        lines.append(f"| {c['target']} | {c['value']} | {'yes' if c['met'] else 'no'} |")
    lines += ["", f"![probe curves]({PLOT_NAME})", ""]
    return "\n".join(lines)


def plot(cfg: Config, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), squeeze=False)
    styles = {SUPERVISED: ("black", "-"), BYOL: ("tab:red", "-"), BYOL_LONG: ("tab:red", ":"),
              UNALIGNED: ("tab:orange", "-"),
              ALIGNED: ("tab:blue", "-"), HEADS: ("magenta", "-")}
    single_colors = ["tab:green", "tab:olive", "tab:cyan", "tab:purple", "tab:brown", "tab:pink"]
    floors = {f["name"]: f["acc_mean"] for f in summary["floors"]}
    for i, arch in enumerate((cfg.arch, cfg.arch2)):
        rows = [r for r in summary["rows"] if r["arch"] == arch and r["row"] != RANDOM]
        for j, xkey in enumerate(("curve_epochs", "curve_seconds")):
            ax = axes[i][j]
            k = 0
            for r in rows:
                if r["row"].startswith(SINGLE):
                    color, ls = single_colors[k % len(single_colors)], "--"
                    k += 1
                else:
                    color, ls = styles.get(r["row"], ("gray", "-"))
                ax.plot(r[xkey], 100 * np.asarray(r["curve_acc_mean"]), ls, color=color,
                        marker="o", ms=3, lw=2 if r["row"] in (ALIGNED, BYOL) else 1.2,
                        label=r["row"].replace(SINGLE, "single "))
            ax.axhline(100 * floors["raw pixels"], color="gray", ls=":", lw=1,
                       label="raw pixels (floor)")
            best = max((v, n) for n, v in floors.items() if n.startswith("features:"))
            ax.axhline(100 * best[0], color="tab:green", ls=":", lw=1,
                       label=f"best prototype features ({best[1][len('features:'):]})")
            ax.set_xlabel("epoch" if j == 0 else "training wall clock (s, probe excluded)")
            ax.set_ylabel("linear probe accuracy (%)")
            ax.set_title(f"{arch}: probe accuracy vs {'epoch' if j == 0 else 'wall clock'} "
                         f"(mean of {len(cfg.seeds)} seed(s))")
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
