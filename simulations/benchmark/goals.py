"""The benchmark's acceptance goals, each checked against the summary: measured value, met or not.

Every comparison must hold on the per-epoch probe and on the full probe. A goal that needs a
row the results lack is reported as not run (``not_run: True``), never as met. The results
and the report call the goals "targets" (the ``targets`` key of the summary, the report's
"Targets" table); the wording of each goal is part of the results and stays as it is.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from coopt_flower.probing import mean_std
from simulations.benchmark.comparisons import cross_architecture, find_row, on_common_seeds, per_seed
from simulations.benchmark.config import ALIGNED, BYOL, HEADS, SINGLE, SUPERVISED, UNALIGNED, Config

# Speedup thresholds of the issue: on training time, and with CoOpt's encoding cost added.
SPEEDUP_TRAINING, SPEEDUP_WITH_ENCODING = 3.0, 2.0

Goal = dict[str, Any]


def check_goals(cfg: Config, summary: dict[str, Any]) -> list[Goal]:
    """The issue's goals, each with the measured value and met / missed (or not run).

    Parameters
    ----------
    cfg : Config
        The run's config (its students, the single-prototype rows it asked for).
    summary : dict
        The summary so far (:func:`simulations.benchmark.summary.summarize`, without
        ``targets``).

    Returns
    -------
    list of dict
        One ``{"target", "value", "met"}`` per goal (``not_run: True`` where a row is missing).
    """
    checks = []
    for arch in cfg.archs():
        checks += _student_goals(summary, arch)
    checks += _longer_byol_goals(cfg, summary)
    if len(cfg.archs()) > 1:
        checks.append(_every_student_goal(cfg, summary))
    checks.append(_above_raw_pixels_goal(cfg, summary))
    checks.append(_supervised_gap_goal(cfg, summary))
    checks.append(_aligned_above_unaligned_goal(cfg, summary))
    checks += _vs_best_single_goals(cfg, summary)
    checks += _vs_unaligned_goals(cfg, summary)
    return checks


def _rows(summary: dict[str, Any], *names: str, arch: str) -> tuple[list[Optional[dict[str, Any]]], list[str]]:
    """The rows ``names`` of ``arch`` paired on their common seeds, and those nobody ran.

    With a row missing, the found rows come back as they are (and None for the missing).
    """
    found = [find_row(summary, n, arch) for n in names]
    missing = [f"{n} ({arch})" for n, r in zip(names, found) if r is None]
    return (found if missing else on_common_seeds(found)), missing


def _not_run(goal: str, missing: list[str]) -> Goal:
    """A goal that needs rows the results lack."""
    return {"target": goal, "value": "not run (missing: " + ", ".join(missing) + ")",
            "met": False, "not_run": True}


def _seeds_note(rows: list[dict[str, Any]]) -> str:
    """" (on seeds ...)" where a comparison had to drop seeds one of its rows lacks."""
    r = next((r for r in rows if r.get("restricted")), None)
    return f" (on seed{'s' if len(r['seeds']) > 1 else ''} {', '.join(map(str, r['seeds']))}, the ones both rows ran)" if r else ""


def _gap_value(gap: float, gap_full: float, rows: list[dict[str, Any]]) -> str:
    """``+x.y points (full probe +x.y)``, with the seeds note of a paired comparison."""
    return f"{gap:+.1f} points (full probe {gap_full:+.1f})" + _seeds_note(rows)


def interval_text(interval: dict[str, Any] | None) -> str:
    """``; 95 % interval [low, high] (how)``, or what is missing for one."""
    if not interval:
        return ""
    if interval.get("low") is None:
        return f"; {interval['how']}"
    return f"; 95 % interval [{interval['low']:+.1f}, {interval['high']:+.1f}] ({interval['how']})"


def _student_goals(summary: dict[str, Any], arch: str) -> list[Goal]:
    """One student's goals against BYOL: +5 points at equal epochs, and both speedups."""
    checks = []
    (al, by), missing = _rows(summary, ALIGNED, BYOL, arch=arch)
    goal = f"{arch}: CoOpt (aligned) >= BYOL + 5 points at equal epochs"
    if missing:
        checks.append(_not_run(goal, missing))
    else:
        gap = 100 * (al["acc_mean"] - by["acc_mean"])
        gap_full = 100 * (al["full_acc_mean"] - by["full_acc_mean"])
        interval = summary.get("intervals", {}).get(arch, {}).get(f"{ALIGNED} - {BYOL}")
        # Met only with a 95 % interval of the difference that excludes 0 (seed and test noise).
        checks.append({"target": goal,
                       "value": _gap_value(gap, gap_full, [al, by]) + interval_text(interval),
                       "met": gap >= 5.0 and gap_full >= 5.0 and bool(interval and interval.get("excludes_zero"))})
    for key, label, need in (("training_only", "training time", SPEEDUP_TRAINING),
                             ("with_encoding_max", "with encoding, parallel participants",
                              SPEEDUP_WITH_ENCODING)):
        goal = f"{arch}: speedup >= {need:g}x ({label})"
        sp = summary["speedup"].get(arch)
        if sp is None:
            checks.append(_not_run(goal, missing))
            continue
        why = ("undefined: BYOL ended at or below the random-init student"
               if sp["byol_not_above_init"] else "CoOpt never reached BYOL's final accuracy")
        val = sp[key]
        checks.append({"target": goal, "value": why if val is None else f"{val:.2f}x",
                       "met": val is not None and val >= need})
    return checks


def _longer_byol_goals(cfg: Config, summary: dict[str, Any]) -> list[Goal]:
    """The supplementary speedups against BYOL trained longer than every other row."""
    checks = []
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
    return checks


def _every_student_goal(cfg: Config, summary: dict[str, Any]) -> Goal:
    """CoOpt (aligned) beats a healthy BYOL on every student trained on the one dataset."""
    goal = "every student: CoOpt (aligned) > a healthy BYOL at equal epochs (one merged dataset)"
    table = {r["arch"]: r for r in cross_architecture(cfg, summary)}
    missing = [f"CoOpt (aligned) / BYOL ({a})" for a in cfg.archs() if a not in table]
    if missing:
        return _not_run(goal, missing)
    parts = [f"{a} {r['gap']:+.1f}" + ("" if r["byol_healthy"] else " (BYOL not above init)")
             for a, r in table.items()]
    return {"target": goal, "value": "; ".join(parts) + " points",
            "met": all(r["gap"] > 0 and r["gap_full"] > 0 and r["byol_healthy"] for r in table.values())}


def _above_raw_pixels_goal(cfg: Config, summary: dict[str, Any]) -> Goal:
    """The first student on CoOpt's data probes at least as well as the raw pixels."""
    floors = {f["name"]: f for f in summary["floors"]}
    (al,), missing = _rows(summary, ALIGNED, arch=cfg.arch)
    goal = f"{cfg.arch}: CoOpt (aligned) >= raw pixels"
    if missing or "raw pixels" not in floors:
        return _not_run(goal, missing or ["raw pixels"])
    raw = floors["raw pixels"]
    diff, diff_full = 100 * (al["acc_mean"] - raw["acc_mean"]), 100 * (al["full_acc_mean"] - raw["full_acc_mean"])
    return {"target": goal, "value": f"{diff:+.1f} points (full probe {diff_full:+.1f})",
            "met": diff >= 0.0 and diff_full >= 0.0}


def _supervised_gap_goal(cfg: Config, summary: dict[str, Any]) -> Goal:
    """CoOpt (aligned) ends within 1 point of the supervised student."""
    (al, su), missing = _rows(summary, ALIGNED, SUPERVISED, arch=cfg.arch)
    goal = f"{cfg.arch}: supervised - CoOpt (aligned) <= 1 point"
    if missing:
        return _not_run(goal, missing)
    gap, gap_full = 100 * (su["acc_mean"] - al["acc_mean"]), 100 * (su["full_acc_mean"] - al["full_acc_mean"])
    return {"target": goal, "value": _gap_value(gap, gap_full, [al, su]),
            "met": gap <= 1.0 and gap_full <= 1.0}


def _aligned_above_unaligned_goal(cfg: Config, summary: dict[str, Any]) -> Goal:
    """Alignment helps by more than the seeds' noise (> 1 point and > 2 pooled std)."""
    (al, un), missing = _rows(summary, ALIGNED, UNALIGNED, arch=cfg.arch)
    goal = f"{cfg.arch}: aligned clearly above unaligned (> 1 point and > 2 pooled std)"
    if missing:
        return _not_run(goal, missing)
    diff = 100 * (al["acc_mean"] - un["acc_mean"])
    diff_full = 100 * (al["full_acc_mean"] - un["full_acc_mean"])
    noise = 100 * 2 * math.sqrt((al["acc_std"] ** 2 + un["acc_std"] ** 2) / 2)
    return {"target": goal,
            "value": f"{diff:+.1f} points (2 pooled std = {noise:.1f}; full probe {diff_full:+.1f})"
                     + _seeds_note([al, un]),
            "met": diff > max(1.0, noise) and diff_full > 1.0}


def _best_single_per_seed(singles: list[dict[str, Any]]) -> dict[str, Any]:
    """A row made of, per seed, the best single-prototype row that seed ran."""
    seeds = sorted({int(s) for r in singles for s in r["seeds"]})
    per, names = {}, []
    for seed in seeds:
        ran = [r for r in singles if seed in map(int, r["seeds"])]
        pick = max(ran, key=lambda r: per_seed(r)[seed]["acc"])
        per[seed] = per_seed(pick)[seed]
        names.append(pick["row"][len(SINGLE):])
    m, sd = mean_std([v["acc"] for v in per.values()])
    fm, fsd = mean_std([v["full_acc"] for v in per.values()])
    label = "; ".join(f"{n} on seed {s}" for s, n in zip(seeds, names))
    return {"row": f"{SINGLE}per seed: {label}", "arch": singles[0]["arch"], "seeds": seeds,
            "per_seed": per, "acc_mean": m, "acc_std": sd, "full_acc_mean": fm, "full_acc_std": fsd}


def _best_single(cfg: Config, summary: dict[str, Any]) -> tuple[Optional[dict], Optional[dict], list[str]]:
    """The best single prototype on the probe and on the full probe, or the rows it lacks.

    Over every single row the config asks for; with ``single_rows: best`` that is the one whose
    own features probe highest (the floors).

    Returns
    -------
    best, best_full : dict or None
        The best single row by the per-epoch probe and by the full probe (None when missing).
    missing : list of str
        What the results lack to name the best (empty when both are found).
    """
    singles = [r for r in summary["rows"] if r["arch"] == cfg.arch and r["row"].startswith(SINGLE)]
    missing = [line for line in summary.get("not_run", []) if SINGLE in line]
    if missing or not singles:
        return None, None, missing or [f"single-prototype rows ({cfg.arch})"]
    if len({tuple(r["seeds"]) for r in singles}) > 1:
        # Single rows of different seeds (single_rows = best picks per seed): per seed, the
        # best single row that seed ran; compared with the other row on the seeds both have.
        best = _best_single_per_seed(singles)
        return best, best, []
    return (max(singles, key=lambda r: r["acc_mean"]), max(singles, key=lambda r: r["full_acc_mean"]), [])


def _vs_best_single_goals(cfg: Config, summary: dict[str, Any]) -> list[Goal]:
    """The merges against the best single prototype: aligned within 1 point, the default
    merge and heads at least as good."""
    checks = []
    best, best_full, missing_singles = _best_single(cfg, summary)
    which = "" if cfg.single_rows == "all" else " (single_rows: best, picked by the floors)"
    # The default merge (align-ridge, the round's default) is the CoOpt (aligned) row.
    for row, label, tolerance in ((ALIGNED, "aligned not more than 1 point below", -1.0),
                                  (ALIGNED, "default merge (aligned, align-ridge) >=", 0.0),
                                  (HEADS, "heads >=", 0.0)):
        goal = f"{cfg.arch}: {label} the best single prototype{which}"
        (r,), missing = _rows(summary, row, arch=cfg.arch)
        if missing or best is None:
            checks.append(_not_run(goal, missing + (missing_singles if best is None else [])))
            continue
        r, b = on_common_seeds([r, best])
        _, bf = on_common_seeds([r, best_full])
        diff = 100 * (r["acc_mean"] - b["acc_mean"])
        diff_full = 100 * (r["full_acc_mean"] - bf["full_acc_mean"])
        checks.append({"target": goal,
                       "value": f"{diff:+.2f} points vs {best['row'][len(SINGLE):]} (full probe "
                                f"{diff_full:+.2f}"
                                + ("" if best_full is best else f" vs {best_full['row'][len(SINGLE):]}")
                                + ")" + _seeds_note([r, b]),
                       "met": diff >= tolerance and diff_full >= tolerance})
    return checks


def _vs_unaligned_goals(cfg: Config, summary: dict[str, Any]) -> list[Goal]:
    """The default merge and heads at least 2 points above no alignment."""
    checks = []
    for row, label in ((ALIGNED, "default merge (aligned, align-ridge)"), (HEADS, "heads")):
        goal = f"{cfg.arch}: {label} >= unaligned + 2 points"
        (r, un), missing = _rows(summary, row, UNALIGNED, arch=cfg.arch)
        if missing:
            checks.append(_not_run(goal, missing))
            continue
        vs_un = 100 * (r["acc_mean"] - un["acc_mean"])
        vs_un_full = 100 * (r["full_acc_mean"] - un["full_acc_mean"])
        checks.append({"target": goal, "value": _gap_value(vs_un, vs_un_full, [r, un]),
                       "met": vs_un >= 2.0 and vs_un_full >= 2.0})
    return checks
