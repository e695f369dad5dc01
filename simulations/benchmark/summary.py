"""The benchmark's summary: means over seeds, equal-wall-clock accuracies, speedups, goal checks.

Copes with a partial run: every row is the mean over the seeds that ran it (``seeds`` in the
row), rows nobody ran are listed in ``not_run``, and a goal that needs a missing row is
reported as not run (``not_run: true``, never met). The summary is stored in
``benchmark.json`` (key order included), so every piece here keeps the order it adds keys in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coopt_flower.probing import mean_std
from simulations.benchmark.config import ALIGNED, BYOL, BYOL_CONVERGED, BYOL_LONG, RANDOM, Config
from simulations.benchmark.curves import acc_at_time, curve_points, speedup
from simulations.benchmark.goals import check_goals
from simulations.benchmark.statistics import difference_interval

# One student's mean curves by row: cumulative training seconds ("times", "cpu_times") and the
# probe accuracy ("accs") after every epoch, epoch 0 = the random-init student.
Curves = dict[str, dict[str, np.ndarray]]


def _done_seeds(cfg: Config, results: dict[str, Any]) -> list[str]:
    """The seeds with results so far (all of ``cfg.seeds`` once a run has finished)."""
    return [str(s) for s in cfg.seeds if str(s) in results["seeds"]]


def expected_rows(cfg: Config, results: dict[str, Any], seed: str, arch: str) -> list[str]:
    """Every row the config asks for on one seed and student (random init included)."""
    singles = results["seeds"].get(seed, {}).get("single_rows", {}).get("prototypes")
    if singles is None:  # a seed not started yet (or results from before single_rows)
        singles = list(cfg.prototypes) if cfg.single_rows == "all" else ["<best prototype>"]
    return [RANDOM] + cfg.arch_rows(arch, singles, int(seed))


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
    """Means over seeds, equal-wall-clock accuracies, speedups and the goal checks.

    Parameters
    ----------
    cfg : Config
        The run's config.
    results : dict
        ``benchmark.json`` as a run writes it (also a partial or a combined one).

    Returns
    -------
    dict
        ``rows``, ``floors``, ``speedup``, ``equal_wall_clock``, ``seeds_done``, ``not_run``,
        then ``encoding`` and ``speedup_vs_longer_byol`` where there is one, and ``targets``
        (the goals, :func:`simulations.benchmark.goals.check_goals`).
    """
    seeds = _done_seeds(cfg, results)
    summary: dict[str, Any] = {"rows": [], "floors": _floor_rows(cfg, results, seeds), "speedup": {},
                               "equal_wall_clock": {}, "seeds_done": [int(s) for s in seeds],
                               "not_run": not_run(cfg, results)}
    curves: dict[str, Curves] = {}
    for arch in cfg.archs():
        rows, curves[arch] = _student_rows(results, seeds, arch)
        summary["rows"] += rows
    summary["load"] = machine_load(results)
    summary["intervals"] = {arch: student_intervals(results, seeds, arch) for arch in cfg.archs()}

    enc_costs = None
    if seeds:
        summary["encoding"], enc_costs = _encoding(cfg, results, seeds)

    longer, converged = {}, {}
    for arch, student in curves.items():
        coopt = student.get(ALIGNED)
        if coopt is None:
            continue
        summary["equal_wall_clock"][arch] = _equal_wall_clock(student, float(coopt["times"][-1]))
        if BYOL in student:
            summary["speedup"][arch] = speedup(student[BYOL], coopt, enc_costs)
            summary["speedup"][arch]["per_seed"] = per_seed_speedups(results, seeds, arch, BYOL)
        if BYOL_LONG in student:
            longer[arch] = speedup(student[BYOL_LONG], coopt, enc_costs)
        if BYOL_CONVERGED in student:  # time to converged BYOL's accuracy, or never
            converged[arch] = speedup(student[BYOL_CONVERGED], coopt, enc_costs)
            converged[arch]["per_seed"] = per_seed_speedups(results, seeds, arch, BYOL_CONVERGED)
    if longer:
        summary["speedup_vs_longer_byol"] = longer
    if converged:
        summary["speedup_vs_converged_byol"] = converged

    summary["targets"] = check_goals(cfg, summary)
    return summary


#: The speedups a per-seed table reports, the headline first: BYOL's time to its final
#: accuracy over CoOpt's time to it plus the encoding summed over participants (every
#: participant's encode counted, as BYOL's one process is).
PER_SEED_SPEEDUPS = ("with_encoding_sum", "training_only", "with_encoding_max")


def per_seed_speedups(results: dict[str, Any], seeds: list[str], arch: str, byol_row: str) -> dict[str, Any]:
    """The speedup of every seed that ran both rows, from that seed's own curves and encoding,
    and their mean and sample std (``mean_std``; None where a seed's ratio is undefined)."""
    out: dict[str, Any] = {"seeds": {}}
    for s in seeds:
        runs = results["seeds"][s]["runs"].get(arch, {})
        if not all(r in runs for r in (RANDOM, ALIGNED, byol_row)):
            continue
        init = runs[RANDOM]["acc"]
        enc = results["seeds"][s]["encoding"]
        costs = (enc["collaborative_max_seconds"], enc["collaborative_sum_seconds"],
                 enc["collaborative_max_cpu_seconds"], enc["collaborative_sum_cpu_seconds"])
        one = speedup(_mean_curve([runs[byol_row]], [init]), _mean_curve([runs[ALIGNED]], [init]), costs)
        out["seeds"][s] = {k: one[k] for k in PER_SEED_SPEEDUPS + ("byol_final_acc", "reached")}
    for key in PER_SEED_SPEEDUPS:
        values = [v[key] for v in out["seeds"].values()]
        out[key] = None if not values or None in values else dict(zip(("mean", "std"), mean_std(values)))
    return out


#: The differences every student's intervals are given for: (row A, row B) of A - B.
INTERVALS = ((ALIGNED, BYOL), (ALIGNED, BYOL_CONVERGED), (ALIGNED, RANDOM))


def student_intervals(results: dict[str, Any], seeds: list[str], arch: str) -> dict[str, Any]:
    """95 % intervals of one student's differences (:data:`INTERVALS`, final full probe, in
    points; :func:`simulations.benchmark.statistics.difference_interval`)."""
    out = {}
    for a, b in INTERVALS:
        runs = {s: results["seeds"][s]["runs"].get(arch, {}) for s in seeds}
        interval = difference_interval({s: r[a] for s, r in runs.items() if a in r},
                                       {s: r[b] for s, r in runs.items() if b in r})
        if interval is not None:
            out[f"{a} - {b}"] = interval
    return out


def machine_load(results: dict[str, Any]) -> dict[str, Any]:
    """The machine's load when the run started and ended (1-minute load average) against its
    core count: a run on a machine busier than its cores is flagged (its timings are not
    those of an idle machine)."""
    env = results.get("environment", {})
    cores = env.get("cpu_count") or 0
    loads = [env[k][0] for k in ("loadavg_start", "loadavg_end") if env.get(k)]
    return {"cpu_count": cores, "loadavg_1min": loads,
            "flagged": bool(cores) and any(load > cores for load in loads)}


def _floor_rows(cfg: Config, results: dict[str, Any], seeds: list[str]) -> list[dict[str, Any]]:
    """The floors (features probed directly: raw pixels, each prototype's), means over seeds."""
    floors = []
    for name in ["raw pixels"] + [f"features:{s}" for s in cfg.prototypes]:
        vals = [results["seeds"][s]["floors"][name] for s in seeds]
        if not vals:
            continue
        m, sd = mean_std([v["acc"] for v in vals])
        fm, fsd = mean_std([v["full_acc"] for v in vals])
        floors.append({"name": name, "dim": vals[0].get("dim"), "acc_mean": m,
                       "acc_std": sd, "full_acc_mean": fm, "full_acc_std": fsd,
                       "seeds": len(vals)})
    return floors


def _student_rows(results: dict[str, Any], seeds: list[str], arch: str) -> tuple[list[dict[str, Any]], Curves]:
    """One student's summary rows (random init first, then each trained row in the order
    the seeds ran them) and its trained rows' mean curves.

    Only seeds whose random-init student was probed count: every curve starts there.
    """
    with_init = [s for s in seeds if RANDOM in results["seeds"][s]["runs"].get(arch, {})]
    if not with_init:
        return [], {}
    runs_of = {s: results["seeds"][s]["runs"][arch] for s in with_init}
    rows = [_random_init_row(arch, {s: runs_of[s][RANDOM] for s in with_init})]
    names: list[str] = []
    for s in with_init:
        names += [r for r in runs_of[s] if r != RANDOM and r not in names]
    curves: Curves = {}
    for row in names:
        have = [s for s in with_init if row in runs_of[s]]
        curves[row] = _mean_curve([runs_of[s][row] for s in have], [runs_of[s][RANDOM]["acc"] for s in have])
        rows.append(_trained_row(row, arch, {s: runs_of[s][row] for s in have}, curves[row]))
    return rows, curves


def _random_init_row(arch: str, init: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The summary row of the untrained student (``init``: its probes by seed)."""
    m, sd = mean_std([r["acc"] for r in init.values()])
    fm, fsd = mean_std([r["full_acc"] for r in init.values()])
    return {"row": RANDOM, "arch": arch, "acc_mean": m, "acc_std": sd,
            "full_acc_mean": fm, "full_acc_std": fsd, "train_seconds": 0.0,
            "epoch_seconds": 0.0, "seeds": [int(s) for s in init],
            "per_seed": {s: {"acc": r["acc"], "full_acc": r["full_acc"]} for s, r in init.items()}}


def _mean_curve(runs: list[dict[str, Any]], init_accs: list[float]) -> dict[str, np.ndarray]:
    """The mean over seeds of one row's curves (each starting at its seed's random init).

    ``accs_std`` is the std over seeds of the probe accuracy after every epoch. Runs that
    stopped at different epochs (a converged row) are averaged over the epochs all of them ran.
    """
    pts = [curve_points(r, a) for r, a in zip(runs, init_accs)]
    cpu = [curve_points(r, a, "epoch_cpu_times")[0] for r, a in zip(runs, init_accs)]
    n = min(len(p[0]) for p in pts)
    return {"times": np.mean([p[0][:n] for p in pts], axis=0),
            "accs": np.mean([p[1][:n] for p in pts], axis=0),
            "accs_std": np.std([p[1][:n] for p in pts], axis=0),
            "cpu_times": np.mean([c[:n] for c in cpu], axis=0)}


def _trained_row(row: str, arch: str, runs: dict[str, dict[str, Any]], curve: dict[str, np.ndarray]) -> dict[str, Any]:
    """The summary row of one trained method (``runs``: its stored training runs by seed)."""
    m, sd = mean_std([r["probe_acc"][-1] for r in runs.values()])
    fm, fsd = mean_std([r["full_probe_acc"] for r in runs.values()])
    times, cpu_times = curve["times"], curve["cpu_times"]
    epochs = len(times) - 1  # the epochs every seed ran (a converged row may stop early)
    return {
        "row": row, "arch": arch, "acc_mean": m, "acc_std": sd,
        "full_acc_mean": fm, "full_acc_std": fsd,
        "train_seconds": float(times[-1]),
        "epochs": epochs,
        "epoch_seconds": float(times[-1] / epochs),
        "train_cpu_seconds": float(cpu_times[-1]),
        "curve_cpu_seconds": cpu_times.tolist(),
        "curve_epochs": list(range(len(times))),
        "curve_seconds": times.tolist(), "curve_acc_mean": curve["accs"].tolist(),
        "curve_acc_std": curve["accs_std"].tolist(), "seeds": [int(s) for s in runs],
        "per_seed": {s: {"acc": r["probe_acc"][-1], "full_acc": r["full_probe_acc"],
                         **({"epochs": len(r["epoch_times"]), "plateau_reached": r["plateau"]["reached"]}
                            if "plateau" in r else {})}
                     for s, r in runs.items()},
    }


def _encoding(cfg: Config, results: dict[str, Any],
              seeds: list[str]) -> tuple[dict[str, Any], tuple[float, float, float, float]]:
    """CoOpt's one-off encoding cost, means over seeds, and the four costs a speedup adds
    (max and sum over participants, wall clock and CPU)."""
    enc = [results["seeds"][s]["encoding"] for s in seeds]
    enc_max = float(np.mean([e["collaborative_max_seconds"] for e in enc]))
    enc_sum = float(np.mean([e["collaborative_sum_seconds"] for e in enc]))
    enc_max_cpu = float(np.mean([e["collaborative_max_cpu_seconds"] for e in enc]))
    enc_sum_cpu = float(np.mean([e["collaborative_sum_cpu_seconds"] for e in enc]))
    encoding = {
        "collaborative_max_seconds": enc_max, "collaborative_sum_seconds": enc_sum,
        "collaborative_max_cpu_seconds": enc_max_cpu, "collaborative_sum_cpu_seconds": enc_sum_cpu,
        "centralized_seconds": {spec: float(np.mean([e["centralized_seconds"][spec] for e in enc]))
                                for spec in cfg.prototypes},
        "images_per_second": results["encoding_rates"],
        "images_per_cpu_second": {spec: results["encoding_meta"][spec]["images_per_cpu_second"]
                                  for spec in cfg.prototypes},
    }
    return encoding, (enc_max, enc_sum, enc_max_cpu, enc_sum_cpu)


def _equal_wall_clock(student: Curves, budget: float) -> dict[str, Any]:
    """Every row's probe accuracy within ``budget`` seconds of training (CoOpt (aligned)'s)."""
    rows: dict[str, Any] = {}
    for row, c in student.items():
        acc, running = acc_at_time(c["times"], c["accs"], budget)
        rows[row] = {"acc": acc, "finished_before_budget": not running,
                     "train_seconds": float(c["times"][-1])}
    return {"budget_seconds": budget, "rows": rows}
