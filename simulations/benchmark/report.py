"""The benchmark's summary (means over seeds, speedups, target checks), Markdown and plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from coopt_flower.probing import mean_std
from simulations.benchmark.config import (ALIGNED, BYOL, BYOL_LONG, CCA, HEADS, PLOT_NAME, PROCRUSTES, RANDOM,
                                          SINGLE, SUPERVISED, UNALIGNED, Config)
from simulations.benchmark.curves import acc_at_time, curve_points, speedup


def _done_seeds(cfg: Config, results: dict[str, Any]) -> list[str]:
    """The seeds with results so far (all of ``cfg.seeds`` once a run has finished)."""
    return [str(s) for s in cfg.seeds if str(s) in results["seeds"]]


def expected_rows(cfg: Config, results: dict[str, Any], seed: str, arch: str) -> list[str]:
    """Every row the config asks for on one seed and student (random init included)."""
    singles = results["seeds"].get(seed, {}).get("single_rows", {}).get("prototypes")
    if singles is None:  # a seed not started yet (or results from before single_rows)
        singles = list(cfg.prototypes) if cfg.single_rows == "all" else ["<best prototype>"]
    return [RANDOM] + cfg.arch_rows(arch, singles)


def not_run(cfg: Config, results: dict[str, Any]) -> list[str]:
    """What the config asks for and the results lack, one line each (empty when complete)."""
    lines = []
    for seed in [str(s) for s in cfg.seeds]:
        if seed not in results["seeds"]:
            lines.append(f"seed {seed}: not started (no row of it ran)")
            continue
        runs = results["seeds"][seed]["runs"]
        for arch in cfg.archs():
            missing = [r for r in expected_rows(cfg, results, seed, arch) if r not in runs.get(arch, {})]
            if missing:
                lines.append(f"seed {seed}, {arch}: " + "; ".join(missing))
    return lines


def summarize(cfg: Config, results: dict[str, Any]) -> dict[str, Any]:
    """Means over seeds, equal-wall-clock accuracies, speedups and the target checks.

    Copes with a partial run: every row is the mean over the seeds that ran it (``seeds`` in
    the row), rows nobody ran are listed in ``not_run``, and a target that needs a missing
    row is reported as not run (``not_run: true``, never met).
    """
    seeds = _done_seeds(cfg, results)
    summary: dict[str, Any] = {"rows": [], "floors": [], "speedup": {}, "equal_wall_clock": {},
                               "seeds_done": [int(s) for s in seeds],
                               "not_run": not_run(cfg, results)}

    # Floors (features probed directly).
    for name in ["raw pixels"] + [f"features:{s}" for s in cfg.prototypes]:
        vals = [results["seeds"][s]["floors"][name] for s in seeds]
        if not vals:
            continue
        m, sd = mean_std([v["acc"] for v in vals])
        fm, fsd = mean_std([v["full_acc"] for v in vals])
        summary["floors"].append({"name": name, "dim": vals[0].get("dim"), "acc_mean": m,
                                  "acc_std": sd, "full_acc_mean": fm, "full_acc_std": fsd,
                                  "seeds": len(vals)})

    mean_curves: dict[str, dict[str, Any]] = {}
    for arch in cfg.archs():
        with_init = [s for s in seeds if RANDOM in results["seeds"][s]["runs"].get(arch, {})]
        if not with_init:
            continue
        init = [results["seeds"][s]["runs"][arch][RANDOM] for s in with_init]
        m, sd = mean_std([r["acc"] for r in init])
        fm, fsd = mean_std([r["full_acc"] for r in init])
        summary["rows"].append({"row": RANDOM, "arch": arch, "acc_mean": m, "acc_std": sd,
                                "full_acc_mean": fm, "full_acc_std": fsd, "train_seconds": 0.0,
                                "epoch_seconds": 0.0, "seeds": [int(s) for s in with_init],
                                "per_seed": {s: {"acc": r["acc"], "full_acc": r["full_acc"]}
                                             for s, r in zip(with_init, init)}})
        names: list[str] = []
        for s in with_init:
            names += [r for r in results["seeds"][s]["runs"][arch] if r != RANDOM and r not in names]
        for row in names:
            have = [s for s in with_init if row in results["seeds"][s]["runs"][arch]]
            runs = [results["seeds"][s]["runs"][arch][row] for s in have]
            inits = [results["seeds"][s]["runs"][arch][RANDOM]["acc"] for s in have]
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
                "curve_acc_std": accs_std.tolist(), "seeds": [int(s) for s in have],
                "per_seed": {s: {"acc": r["probe_acc"][-1], "full_acc": r["full_probe_acc"]}
                             for s, r in zip(have, runs)},
            })

    enc = [results["seeds"][s]["encoding"] for s in seeds]
    if enc:
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
        enc_costs = (enc_max, enc_sum, enc_max_cpu, enc_sum_cpu)

    for arch in cfg.archs():
        coopt = mean_curves.get(f"{arch}|{ALIGNED}")
        if coopt is None:
            continue
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
        byol = mean_curves.get(f"{arch}|{BYOL}")
        if byol is not None:
            summary["speedup"][arch] = speedup(byol, coopt, enc_costs)
        long = mean_curves.get(f"{arch}|{BYOL_LONG}")
        if long is not None:
            summary.setdefault("speedup_vs_longer_byol", {})[arch] = speedup(long, coopt, enc_costs)

    summary["targets"] = check_targets(cfg, summary)
    return summary


def on_common_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows' means and stds over the seeds all of them ran (a comparison is paired).

    Rows of a report merged from several invocations may cover different seeds (e.g. an
    optional row run on seed 0 only); comparing a 3-seed mean with a 1-seed value would mix
    seed noise into the difference. Rows that already share their seeds come back unchanged.
    """
    common = sorted(set.intersection(*(set(map(int, r["seeds"])) for r in rows)))
    if not common or all(sorted(map(int, r["seeds"])) == common for r in rows):
        return rows
    out = []
    for r in rows:
        per = _per_seed(r)
        m, sd = mean_std([per[s]["acc"] for s in common])
        fm, fsd = mean_std([per[s]["full_acc"] for s in common])
        out.append(dict(r, acc_mean=m, acc_std=sd, full_acc_mean=fm, full_acc_std=fsd,
                        seeds=common, restricted=True))
    return out


def above_init_on_every_seed(row: dict[str, Any], init: dict[str, Any]) -> bool:
    """``row`` ends above the random-init student on both probes on every seed both ran.

    Judged per seed, not on the means: a baseline that collapses on one seed of three can
    still have a mean above the init's.
    """
    mine, base = _per_seed(row), _per_seed(init)
    shared = [s for s in mine if s in base]
    return bool(shared) and all(mine[s]["acc"] > base[s]["acc"] and mine[s]["full_acc"] > base[s]["full_acc"]
                                for s in shared)


def _per_seed(row: dict[str, Any]) -> dict[int, dict[str, float]]:
    """A summary row's per-seed accuracies by integer seed (JSON turns the keys into strings)."""
    return {int(k): v for k, v in row["per_seed"].items()}


def _best_single_per_seed(singles: list[dict[str, Any]]) -> dict[str, Any]:
    """A row made of, per seed, the best single-prototype row that seed ran."""
    seeds = sorted({int(s) for r in singles for s in r["seeds"]})
    per, names = {}, []
    for seed in seeds:
        ran = [r for r in singles if seed in map(int, r["seeds"])]
        pick = max(ran, key=lambda r: _per_seed(r)[seed]["acc"])
        per[seed] = _per_seed(pick)[seed]
        names.append(pick["row"][len(SINGLE):])
    m, sd = mean_std([v["acc"] for v in per.values()])
    fm, fsd = mean_std([v["full_acc"] for v in per.values()])
    label = "; ".join(f"{n} on seed {s}" for s, n in zip(seeds, names))
    return {"row": f"{SINGLE}per seed: {label}", "arch": singles[0]["arch"], "seeds": seeds,
            "per_seed": per, "acc_mean": m, "acc_std": sd, "full_acc_mean": fm, "full_acc_std": fsd}


def _seeds_note(rows: list[dict[str, Any]]) -> str:
    """" (on seeds ...)" where a comparison had to drop seeds one of its rows lacks."""
    r = next((r for r in rows if r.get("restricted")), None)
    return f" (on seed{'s' if len(r['seeds']) > 1 else ''} {', '.join(map(str, r['seeds']))}, the ones both rows ran)" if r else ""


def _row(summary: dict[str, Any], row: str, arch: str) -> Optional[dict[str, Any]]:
    return next((r for r in summary["rows"] if r["row"] == row and r["arch"] == arch), None)


def _not_run(target: str, missing: list[str]) -> dict[str, Any]:
    return {"target": target, "value": "not run (missing: " + ", ".join(missing) + ")",
            "met": False, "not_run": True}


# Speedup thresholds of the issue: on training time, and with CoOpt's encoding cost added.
SPEEDUP_TRAINING, SPEEDUP_WITH_ENCODING = 3.0, 2.0


def check_targets(cfg: Config, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed (or not run).

    Every comparison must hold on the per-epoch probe and on the full probe. A target that
    needs a row the results lack is reported as not run, never as met.
    """
    checks = []

    def rows(*names: str, arch: str = cfg.arch):
        found = [_row(summary, n, arch) for n in names]
        missing = [f"{n} ({arch})" for n, r in zip(names, found) if r is None]
        return (found if missing else on_common_seeds(found)), missing

    for arch in cfg.archs():
        (al, by), missing = rows(ALIGNED, BYOL, arch=arch)
        target = f"{arch}: CoOpt (aligned) >= BYOL + 5 points at equal epochs"
        if missing:
            checks.append(_not_run(target, missing))
        else:
            gap = 100 * (al["acc_mean"] - by["acc_mean"])
            gap_full = 100 * (al["full_acc_mean"] - by["full_acc_mean"])
            checks.append({"target": target, "value": f"{gap:+.1f} points (full probe {gap_full:+.1f})"
                                                      + _seeds_note([al, by]),
                           "met": gap >= 5.0 and gap_full >= 5.0})
        for key, label, need in (("training_only", "training time", SPEEDUP_TRAINING),
                                 ("with_encoding_max", "with encoding, parallel participants",
                                  SPEEDUP_WITH_ENCODING)):
            target = f"{arch}: speedup >= {need:g}x ({label})"
            sp = summary["speedup"].get(arch)
            if sp is None:
                checks.append(_not_run(target, missing))
                continue
            why = ("undefined: BYOL ended at or below the random-init student"
                   if sp["byol_not_above_init"] else "CoOpt never reached BYOL's final accuracy")
            val = sp[key]
            checks.append({"target": target, "value": why if val is None else f"{val:.2f}x",
                           "met": val is not None and val >= need})
    for arch, sp in summary.get("speedup_vs_longer_byol", {}).items():
        val, enc = sp["training_only"], sp["with_encoding_max"]
        why = ("undefined: BYOL ended at or below the random-init student"
               if sp["byol_not_above_init"] else
               f"CoOpt ({cfg.epochs} epochs) never reached it")
        checks.append({"target": f"{arch}: (supplementary) speedup >= {SPEEDUP_TRAINING:g}x training, "
                                 f">= {SPEEDUP_WITH_ENCODING:g}x with encoding, vs BYOL trained "
                                 f"{sp['byol_epochs']} epochs",
                       "value": why if val is None else
                       f"{val:.2f}x training, {enc:.2f}x with encoding (parallel)",
                       "met": val is not None and val >= SPEEDUP_TRAINING
                       and enc >= SPEEDUP_WITH_ENCODING})

    if len(cfg.archs()) > 1:
        checks.append(_every_student_target(cfg, summary))

    floors = {f["name"]: f for f in summary["floors"]}
    (al,), missing = rows(ALIGNED)
    target = f"{cfg.arch}: CoOpt (aligned) >= raw pixels"
    if missing or "raw pixels" not in floors:
        checks.append(_not_run(target, missing or ["raw pixels"]))
    else:
        raw = floors["raw pixels"]
        diff, diff_full = 100 * (al["acc_mean"] - raw["acc_mean"]), 100 * (al["full_acc_mean"] - raw["full_acc_mean"])
        checks.append({"target": target, "value": f"{diff:+.1f} points (full probe {diff_full:+.1f})",
                       "met": diff >= 0.0 and diff_full >= 0.0})

    (al, su), missing = rows(ALIGNED, SUPERVISED)
    target = f"{cfg.arch}: supervised - CoOpt (aligned) <= 1 point"
    if missing:
        checks.append(_not_run(target, missing))
    else:
        gap, gap_full = 100 * (su["acc_mean"] - al["acc_mean"]), 100 * (su["full_acc_mean"] - al["full_acc_mean"])
        checks.append({"target": target, "value": f"{gap:+.1f} points (full probe {gap_full:+.1f})"
                                                  + _seeds_note([al, su]),
                       "met": gap <= 1.0 and gap_full <= 1.0})

    (al, un), missing = rows(ALIGNED, UNALIGNED)
    target = f"{cfg.arch}: aligned clearly above unaligned (> 1 point and > 2 pooled std)"
    if missing:
        checks.append(_not_run(target, missing))
    else:
        diff = 100 * (al["acc_mean"] - un["acc_mean"])
        diff_full = 100 * (al["full_acc_mean"] - un["full_acc_mean"])
        noise = 100 * 2 * math.sqrt((al["acc_std"] ** 2 + un["acc_std"] ** 2) / 2)
        checks.append({"target": target,
                       "value": f"{diff:+.1f} points (2 pooled std = {noise:.1f}; full probe {diff_full:+.1f})"
                                + _seeds_note([al, un]),
                       "met": diff > max(1.0, noise) and diff_full > 1.0})

    # The best single prototype: over every single row the config asks for. With
    # single_rows = best that is the one whose own features probe highest (the floors).
    singles = [r for r in summary["rows"] if r["arch"] == cfg.arch and r["row"].startswith(SINGLE)]
    missing_singles = [line for line in summary.get("not_run", []) if SINGLE in line]
    if missing_singles or not singles:
        missing_singles = missing_singles or [f"single-prototype rows ({cfg.arch})"]
        best = best_full = None
    elif len({tuple(r["seeds"]) for r in singles}) > 1:
        # Single rows of different seeds (single_rows = best picks per seed): per seed, the
        # best single row that seed ran; compared with the other row on the seeds both have.
        best = best_full = _best_single_per_seed(singles)
    else:
        best = max(singles, key=lambda r: r["acc_mean"])
        best_full = max(singles, key=lambda r: r["full_acc_mean"])
    which = "" if cfg.single_rows == "all" else " (single_rows: best, picked by the floors)"
    # The default merge (align-ridge, the round's default) is the CoOpt (aligned) row.
    for row, label, tolerance in ((ALIGNED, "aligned not more than 1 point below", -1.0),
                                  (ALIGNED, "default merge (aligned, align-ridge) >=", 0.0),
                                  (HEADS, "heads >=", 0.0)):
        target = f"{cfg.arch}: {label} the best single prototype{which}"
        (r,), missing = rows(row)
        if missing or best is None:
            checks.append(_not_run(target, missing + (missing_singles if best is None else [])))
            continue
        r, b = on_common_seeds([r, best])
        _, bf = on_common_seeds([r, best_full])
        diff = 100 * (r["acc_mean"] - b["acc_mean"])
        diff_full = 100 * (r["full_acc_mean"] - bf["full_acc_mean"])
        checks.append({"target": target,
                       "value": f"{diff:+.2f} points vs {best['row'][len(SINGLE):]} (full probe "
                                f"{diff_full:+.2f}"
                                + ("" if best_full is best else f" vs {best_full['row'][len(SINGLE):]}")
                                + ")" + _seeds_note([r, b]),
                       "met": diff >= tolerance and diff_full >= tolerance})
    for row, label in ((ALIGNED, "default merge (aligned, align-ridge)"), (HEADS, "heads")):
        target = f"{cfg.arch}: {label} >= unaligned + 2 points"
        (r, un), missing = rows(row, UNALIGNED)
        if missing:
            checks.append(_not_run(target, missing))
            continue
        vs_un = 100 * (r["acc_mean"] - un["acc_mean"])
        vs_un_full = 100 * (r["full_acc_mean"] - un["full_acc_mean"])
        checks.append({"target": target, "value": f"{vs_un:+.1f} points (full probe {vs_un_full:+.1f})"
                                                  + _seeds_note([r, un]),
                       "met": vs_un >= 2.0 and vs_un_full >= 2.0})
    return checks


def cross_architecture(cfg: Config, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One merged dataset, many students: CoOpt (aligned) vs BYOL at equal epochs per student.

    A student counts only where BYOL is healthy (rises above its own random init on both
    probes); where it does not, the comparison is against a collapsed baseline and says so.
    """
    out = []
    for arch in cfg.archs():
        init, al, by = (_row(summary, r, arch) for r in (RANDOM, ALIGNED, BYOL))
        if al is None or by is None or init is None:
            continue
        out.append({"arch": arch, "seeds": sorted(set(al["seeds"]) & set(by["seeds"])),
                    "init": init["acc_mean"], "byol": by["acc_mean"], "coopt": al["acc_mean"],
                    "byol_full": by["full_acc_mean"], "coopt_full": al["full_acc_mean"],
                    "gap": 100 * (al["acc_mean"] - by["acc_mean"]),
                    "gap_full": 100 * (al["full_acc_mean"] - by["full_acc_mean"]),
                    "byol_healthy": above_init_on_every_seed(by, init),
                    "train_seconds": {"coopt": al["train_seconds"], "byol": by["train_seconds"]}})
    return out


def _every_student_target(cfg: Config, summary: dict[str, Any]) -> dict[str, Any]:
    target = "every student: CoOpt (aligned) > a healthy BYOL at equal epochs (one merged dataset)"
    table = {r["arch"]: r for r in cross_architecture(cfg, summary)}
    missing = [f"CoOpt (aligned) / BYOL ({a})" for a in cfg.archs() if a not in table]
    if missing:
        return _not_run(target, missing)
    parts = [f"{a} {r['gap']:+.1f}" + ("" if r["byol_healthy"] else " (BYOL not above init)")
             for a, r in table.items()]
    return {"target": target, "value": "; ".join(parts) + " points",
            "met": all(r["gap"] > 0 and r["gap_full"] > 0 and r["byol_healthy"] for r in table.values())}


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


def healthy_baseline(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Does BYOL rise above the random-init student? (before any CoOpt-vs-BYOL number counts)"""
    out = []
    for init in [r for r in summary["rows"] if r["row"] == RANDOM]:
        for row in (BYOL, BYOL_LONG):
            r = _row(summary, row, init["arch"])
            if r is None:
                continue
            curve = r["curve_acc_mean"]
            out.append({"arch": init["arch"], "row": row, "epochs": r["epochs"],
                        "init_acc": init["acc_mean"], "init_full_acc": init["full_acc_mean"],
                        "final_acc": r["acc_mean"], "final_full_acc": r["full_acc_mean"],
                        "best_acc": float(max(curve[1:])),
                        "best_epoch": int(np.argmax(curve[1:])) + 1,
                        "above_init": above_init_on_every_seed(r, init)})
    return out


def _curve_table(summary: dict[str, Any]) -> list[str]:
    """Probe accuracy after every epoch (epoch 0 = the random-init student), and BYOL's health."""
    trained = [r for r in summary["rows"] if r["row"] != RANDOM]
    if not trained:
        return []
    width = max(len(r["curve_acc_mean"]) for r in trained)
    lines = ["", "## Probe accuracy per epoch (mean over seeds; epoch 0 = random init)", "",
             "| method | student | " + " | ".join(str(e) for e in range(width)) + " |",
             "|---|---|" + "---:|" * width]
    for r in trained:
        cells = [f"{100 * a:.1f}" for a in r["curve_acc_mean"]] + [""] * (width - len(r["curve_acc_mean"]))
        lines.append(f"| {r['row']} | {r['arch']} | " + " | ".join(cells) + " |")
    health = healthy_baseline(summary)
    if health:
        lines += ["", "Healthy-baseline check (BYOL must rise above the random-init student before "
                      "any CoOpt-vs-BYOL number counts):", "",
                  "| student | row | epochs | random init probe / full | final probe / full | "
                  "best per-epoch probe (epoch) | above random init |", "|---|---|---:|---|---|---|---|"]
        for h in health:
            lines.append(f"| {h['arch']} | {h['row']} | {h['epochs']} | {_pct(h['init_acc'])} / "
                         f"{_pct(h['init_full_acc'])} | {_pct(h['final_acc'])} / "
                         f"{_pct(h['final_full_acc'])} | {_pct(h['best_acc'])} ({h['best_epoch']}) | "
                         f"{'yes' if h['above_init'] else 'no'} |")
    return lines


def _merged_parts(results: dict[str, Any]) -> list[str]:
    """The invocations a merged report is made of (``--add-results``), one line each."""
    parts = results.get("merged_from")
    if not parts:
        return []
    lines = ["Made of these invocations (each trained the seeds and students named; merged with "
             "`--report-only --add-results`):", ""]
    for p in parts:
        load = ", ".join("-" if v is None else f"{v[0]:.1f}" for v in p["loadavg"])
        lines.append(f"- `{p['command']}`: seeds {', '.join(map(str, p['seeds']))}; students "
                     f"{', '.join(p['students'])}; {p['wall_seconds'] / 60:.0f} min wall clock; "
                     f"1-min load average at start / end {load}")
    return lines + [""]


def _same_probe_note(cfg: Config) -> str:
    """Whether the full probe is the per-epoch probe again (both run the same steps)."""
    steps_per_epoch = math.ceil(cfg.num_train / 256)
    full_epochs = max(100, math.ceil(cfg.full_probe_steps / steps_per_epoch))
    if full_epochs != cfg.probe_epochs:
        return ""
    return (f"; at {cfg.num_train} training images the per-epoch probe already runs "
            f"{cfg.probe_epochs * steps_per_epoch} steps, so the full probe is the same computation "
            "and equals it")


def _vs_default(cfg: Config) -> list[str]:
    """How this run's config differs from the real-budget default (what it did not run)."""
    from simulations.benchmark.config import DEFAULT_CONFIG, load_config

    default = load_config(DEFAULT_CONFIG)
    mine, theirs = cfg.as_dict(), default.as_dict()
    diff = [k for k in theirs if mine[k] != theirs[k] and k != "tiny"]
    if not diff:
        return []
    lines = [f"Differences from the real-budget default (`simulations/configs/{DEFAULT_CONFIG.name}`):", ""]
    for k in diff:
        lines.append(f"- `{k}`: {theirs[k]!r} in the default, {mine[k]!r} here")
    skipped_seeds = [s for s in default.seeds if s not in cfg.seeds]
    if skipped_seeds:
        lines.append(f"- seeds not run: {', '.join(map(str, skipped_seeds))}")
    skipped_archs = [a for a in default.archs() if a not in cfg.archs()]
    if skipped_archs:
        lines.append(f"- students not run: {', '.join(skipped_archs)} (none of its rows)")
    return lines + [""]


def _byol_recipe_note(cfg: Config) -> str:
    """How BYOL's optimizer differs from the other rows' (nothing with the shared recipe)."""
    from coopt_flower.byol import BYOL_RECIPES

    used = {arch: cfg.byol_recipe_for(arch) for arch in cfg.archs()}
    if set(used.values()) == {"shared"}:
        return " (BYOL too)"
    per_student = "; ".join(f"{arch}: `{recipe}`" for arch, recipe in used.items())
    recipes = "; ".join(f"`{name}` = " + ", ".join(f"{k} {v}" for k, v in BYOL_RECIPES[name].items())
                        for name in dict.fromkeys(used.values()) if name != "shared")
    return (f"; BYOL's optimizer recipe per student ({per_student}; `shared` is the AdamW above; "
            f"{recipes}; lr_per_256 scaled to the batch size; chosen per student, the same on "
            "every seed), with the same students, data, augmentations, batch size, epochs and probe")


def render_markdown(cfg: Config, results: dict[str, Any], summary: dict[str, Any]) -> str:
    done = summary.get("seeds_done", list(cfg.seeds))
    n_seeds = len(done)
    missing = summary.get("not_run", [])
    finished = results.get("finished", True)
    status = []
    if not finished or missing or len(cfg.archs()) < 2 or cfg.single_rows != "all" or not cfg.extra_merges:
        status = ["## Status: " + ("PARTIAL (the run was stopped or is still running; this report "
                                   "covers the rows that finished)" if not finished else
                                   "finished, with a reduced row list"), ""]
        skipped = []
        if len(cfg.archs()) < 2:
            skipped.append("no further student (`arch2` empty): every other architecture's rows")
        if cfg.single_rows != "all":
            skipped.append("`single_rows: best`: one single-prototype row, the prototype whose own "
                           "features probe highest (floors), instead of one per prototype")
        if not cfg.extra_merges:
            skipped.append("`extra_merges: false`: no CoOpt (procrustes) / CoOpt (cca) rows")
        if skipped:
            status += ["Left out by the config:", ""] + [f"- {x}" for x in skipped] + [""]
        for s in done:
            pick = results["seeds"][str(s)].get("single_rows", {})
            if pick.get("mode") == "best":
                spec = pick["prototypes"][0]
                f = results["seeds"][str(s)]["floors"][f"features:{spec}"]
                status.append(f"Seed {s}: single-prototype row = `{spec}`, picked as "
                              f"{pick['picked_by']}: {_pct(f['full_acc'])} full probe, "
                              f"{_pct(f['acc'])} probe.")
        if any(results["seeds"][str(s)].get("single_rows", {}).get("mode") == "best" for s in done):
            status.append("")
        if missing:
            status += ["Asked for by the config but not run (no result below uses them):", ""]
            status += [f"- {x}" for x in missing] + [""]
    lines = [
        "# Benchmark: CoOpt vs BYOL at an equal training budget",
        "",
        f"Command: `{results['command'].replace(' --resume', '').replace(' --report-only', '')}`"
        + (f" (config `{results['config_file']}`)" if results.get("config_file") else ""),
        "",
        *([results["notes"].rstrip(), ""] if results.get("notes") else []),
        *status,
        *_vs_default(cfg),
        f"Fashion-MNIST subset: {cfg.num_train} training images per seed "
        f"(`select_samples(60000, {cfg.num_train}, seed)`), {cfg.num_test} test images "
        f"(fixed, seed {cfg.test_seed}); students at {cfg.image_size} px (from 28 px), "
        f"{cfg.epochs} epochs, batch {cfg.batch_size}, AdamW lr {cfg.lr:g} wd "
        f"{cfg.weight_decay:g}" + _byol_recipe_note(cfg) + ", two augmented views per step "
        "for every method; seeds "
        f"{', '.join(map(str, done))}. Prototypes at {cfg.proto_image_size} px, "
        f"targets {cfg.target_dim}-d ({cfg.target_dtype}), {len(cfg.prototypes)} participants "
        f"(IID shards), shared subset {cfg.shared_size}. {cfg.threads} torch thread(s) on "
        f"{results['environment']['cpu_count']} CPU cores; wall clock of "
        + (f"the {len(results['merged_from'])} invocations below (sum) "
           if results.get("merged_from") else "this invocation ")
        + f"{results['wall_seconds'] / 60:.1f} min"
        + (f" ({len(results['reused_runs'])} training runs reused from an earlier invocation "
           f"with `--resume`; each run's own wall clock is in the JSON)."
           if results.get("reused_runs") else "."),
        "",
        f"Probe: after every epoch, features of the {cfg.num_train} training images (labels) "
        f"and {cfg.num_test} test images; `nn.Linear`, Adam lr 3e-4, batch 256, "
        f"{cfg.probe_epochs} epochs, mean test accuracy of the last 3 epochs (\"probe\"). The "
        f"final epoch is also probed with >= {cfg.full_probe_steps} steps (\"full probe\", the "
        "protocol's default)" + _same_probe_note(cfg) + ". Accuracies in %, "
        + (f"mean ± std over {n_seeds} seeds." if n_seeds > 1 else "one seed (no std).")
        + " Training time excludes probing.",
        "",
        *_merged_parts(results),
        "## (a) Equal epochs",
        "",
        "| method | student | seeds | epochs | probe | full probe | train time (s) | s/epoch | "
        "train CPU (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    def sd(v):
        return v if n_seeds > 1 else None

    for r in summary["rows"]:
        lines.append(f"| {r['row']} | {r['arch']} | {', '.join(map(str, r['seeds']))} | "
                     f"{r.get('epochs', 0)} | "
                     f"{_pct(r['acc_mean'], sd(r['acc_std']) if len(r['seeds']) > 1 else None)} | "
                     f"{_pct(r['full_acc_mean'], sd(r['full_acc_std']) if len(r['seeds']) > 1 else None)} | "
                     f"{r['train_seconds']:.0f} | {r['epoch_seconds']:.1f} | "
                     f"{r.get('train_cpu_seconds', 0.0):.0f} |")
    lines += ["", "Floors (features probed directly, no student):", "",
              "| features | dim | probe | full probe |", "|---|---:|---:|---:|"]
    for f in summary["floors"]:
        dim = f["dim"] if f["dim"] is not None else "784"
        lines.append(f"| {f['name']} | {dim} | {_pct(f['acc_mean'], sd(f['acc_std']))} | "
                     f"{_pct(f['full_acc_mean'], sd(f['full_acc_std']))} |")
    for arch, eq in summary["equal_wall_clock"].items():
        lines += ["", f"## (b) Equal wall clock ({arch}): accuracy within CoOpt (aligned)'s "
                      f"{eq['budget_seconds']:.0f} s of training", "",
                  "| method | probe at budget | its own training time (s) |", "|---|---:|---:|"]
        for row, v in eq["rows"].items():
            note = " (finished earlier)" if v["finished_before_budget"] and row != ALIGNED else ""
            lines.append(f"| {row} | {_pct(v['acc'])}{note} | {v['train_seconds']:.0f} |")
    cross = cross_architecture(cfg, summary)
    if len(cross) > 1:
        lines += ["", "## (d) One optimized dataset, many students (CoOpt (aligned) vs BYOL, "
                      "equal epochs)", "",
                  "Every student trains on the same merged dataset of its seed; BYOL gets the "
                  "same images, augmentations, epochs and probe.", "",
                  "| student | seeds | random init | BYOL | CoOpt (aligned) | CoOpt - BYOL "
                  "(full probe) | BYOL above random init | train time CoOpt / BYOL (s) |",
                  "|---|---|---:|---:|---:|---|---|---|"]
        for r in cross:
            lines.append(f"| {r['arch']} | {', '.join(map(str, r['seeds']))} | {_pct(r['init'])} | "
                         f"{_pct(r['byol'])} | {_pct(r['coopt'])} | {r['gap']:+.1f} "
                         f"({r['gap_full']:+.1f}) | {'yes' if r['byol_healthy'] else 'no'} | "
                         f"{r['train_seconds']['coopt']:.0f} / {r['train_seconds']['byol']:.0f} |")
    lines += _curve_table(summary)
    lines += ["", "## (c) Speedup: BYOL's training time to its final accuracy / CoOpt (aligned)'s "
                  "time to the same accuracy", ""]
    lines += _speedup_table(summary["speedup"]) if summary["speedup"] else ["Not run (needs CoOpt "
                                                                           "(aligned) and BYOL)."]
    if summary.get("speedup_vs_longer_byol"):
        lines += ["", f"Supplementary: the same against BYOL trained {cfg.byol_long_epochs} epochs "
                      f"(first student only; CoOpt still trained {cfg.epochs} epochs):", ""]
        lines += _speedup_table(summary["speedup_vs_longer_byol"])
    enc = summary.get("encoding")
    if enc is None:
        return "\n".join(lines + ["", "(no seed has finished its floors yet)", ""])
    lines += ["", "Curves are means over seeds (cumulative training seconds, probe accuracy per "
                  "epoch, epoch 0 = the random-init student), interpolated linearly.", "",
              "## Encoding cost (one-off, CoOpt's side)", "",
              "| prototype | img/s (wall) | img/CPU-s | centralized: all images (s) | "
              "collaborative: shard + S (s) |",
              "|---|---:|---:|---:|---:|"]
    collab = {spec: float(np.mean([results["seeds"][str(s)]["encoding"]["collaborative_seconds"][spec]
                                   for s in done])) for spec in cfg.prototypes}
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
    for s in done:
        a = results["seeds"][str(s)]["alignment"]
        for p in a["participants"]:
            lines.append(f"| {s} | {a['reference']} (`{a['reference_prototype']}`) | {p['name']} | "
                         f"`{p['prototype']}` | {p['uniform_value']:.4f} | "
                         f"{p['fit_residual']:.3f} | {p['holdout_residual']:.3f} |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for c in summary["targets"]:
        met = "not run" if c.get("not_run") else ("yes" if c["met"] else "no")
        lines.append(f"| {c['target']} | {c['value']} | {met} |")
    lines += ["", f"![probe curves]({PLOT_NAME})", ""]
    return "\n".join(lines)


def plot(cfg: Config, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = [a for a in cfg.archs() if any(r["arch"] == a and r["row"] != RANDOM for r in summary["rows"])]
    if not archs:
        archs = cfg.archs()[:1]
    fig, axes = plt.subplots(len(archs), 2, figsize=(13, 4.5 * len(archs)), squeeze=False)
    styles = {SUPERVISED: ("black", "-"), BYOL: ("tab:red", "-"), BYOL_LONG: ("tab:red", ":"),
              UNALIGNED: ("tab:orange", "-"),
              ALIGNED: ("tab:blue", "-"), HEADS: ("magenta", "-"), PROCRUSTES: ("tab:blue", "--"),
              CCA: ("tab:blue", ":")}
    single_colors = ["tab:green", "tab:olive", "tab:cyan", "tab:purple", "tab:brown", "tab:pink"]
    floors = {f["name"]: f["acc_mean"] for f in summary["floors"]}
    for i, arch in enumerate(archs):
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
            if "raw pixels" in floors:
                ax.axhline(100 * floors["raw pixels"], color="gray", ls=":", lw=1,
                           label="raw pixels (floor)")
            feats = [(v, n) for n, v in floors.items() if n.startswith("features:")]
            if feats:
                best = max(feats)
                ax.axhline(100 * best[0], color="tab:green", ls=":", lw=1,
                           label=f"best prototype features ({best[1][len('features:'):]})")
            ax.set_xlabel("epoch" if j == 0 else "training wall clock (s, probe excluded)")
            ax.set_ylabel("linear probe accuracy (%)")
            seeds = sorted({int(x) for r in rows for x in r["seeds"]})
            # Two lines: a long student name with the seed note overran its panel on one line.
            ax.set_title(f"{arch}: probe accuracy vs {'epoch' if j == 0 else 'wall clock'}\n"
                         f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                         f"{'; each row: mean of the seeds it ran' if len(seeds) > 1 else ''})",
                         fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
