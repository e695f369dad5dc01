"""The benchmark's report, ``benchmark.md``: tables of the results and their summary.

The numbers come from :func:`simulations.benchmark.summary.summarize`; this module only
words and lays them out, one function per section in the order the report shows them.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from coopt_flower.probing import default_probe_epochs, probe_steps_per_epoch
from simulations.benchmark.comparisons import cross_architecture, healthy_baseline
from simulations.benchmark.config import ALIGNED, PLOT_NAME, RANDOM, Config

# The per-epoch probe's batch size (the protocol's, :func:`coopt_flower.probing.linear_probe`).
PROBE_BATCH_SIZE = 256


def render_markdown(cfg: Config, results: dict[str, Any], summary: dict[str, Any]) -> str:
    """``benchmark.md`` of ``results`` (also a partial or combined run) and their summary.

    Parameters
    ----------
    cfg : Config
        The run's config.
    results : dict
        ``benchmark.json`` as a run writes it.
    summary : dict
        :func:`simulations.benchmark.summary.summarize` of ``results``.

    Returns
    -------
    str
        The Markdown; without an encoding summary (no seed finished its floors yet) it stops
        after the speedups.
    """
    done = summary.get("seeds_done", list(cfg.seeds))
    lines = [
        "# Benchmark: CoOpt vs BYOL at an equal training budget",
        "",
        _command_line(results),
        "",
        *([results["notes"].rstrip(), ""] if results.get("notes") else []),
        *_status(cfg, results, summary, done),
        *_vs_default(cfg),
        _setup_paragraph(cfg, results, done),
        *_load_line(summary),
        "",
        _probe_paragraph(cfg, len(done)),
        "",
        *_merged_parts(results),
        *_equal_epochs_table(summary, len(done)),
        *_floors_table(summary, len(done)),
        *_equal_wall_clock_tables(summary),
        *_cross_architecture_table(cfg, summary),
        *_interval_table(summary),
        *_curve_table(summary),
        *_speedup_section(cfg, summary),
    ]
    if summary.get("encoding") is None:
        return "\n".join(lines + ["", "(no seed has finished its floors yet)", ""])
    lines += ["", "Curves are means over seeds (cumulative training seconds, probe accuracy per "
                  "epoch, epoch 0 = the random-init student), interpolated linearly."]
    lines += _encoding_table(cfg, results, summary["encoding"], done)
    lines += _alignment_table(results, done)
    lines += _goals_table(summary)
    lines += ["", f"![probe curves]({PLOT_NAME})", ""]
    return "\n".join(lines)


def _load_line(summary: dict[str, Any]) -> list[str]:
    """The machine's load as the run recorded it (nothing for results written before)."""
    load = summary.get("load")
    if not load or not load["loadavg_1min"]:
        return []
    flag = (" **Flagged: the machine was busier than its cores; its timings are not those of an "
            "idle machine.**" if load["flagged"] else "")
    return ["", f"Machine load (1-minute average) at the start / end: "
                f"{' / '.join(f'{x:.2f}' for x in load['loadavg_1min'])} on {load['cpu_count']} cores.{flag}"]


def _pct(m: float, s: Optional[float] = None) -> str:
    """An accuracy in percent, with its std when there is one."""
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


# --------------------------------------------------------------------------- the header


def _command_line(results: dict[str, Any]) -> str:
    """The command that reproduces the run (without ``--resume`` / ``--report-only``)."""
    return (f"Command: `{results['command'].replace(' --resume', '').replace(' --report-only', '')}`"
            + (f" (config `{results['config_file']}`)" if results.get("config_file") else ""))


def _status(cfg: Config, results: dict[str, Any], summary: dict[str, Any], done: list[int]) -> list[str]:
    """The status section of a partial run or of a reduced row list (nothing for a full run)."""
    missing = summary.get("not_run", [])
    finished = results.get("finished", True)
    if finished and not missing and len(cfg.archs()) >= 2 and cfg.single_rows == "all" and cfg.extra_merges:
        return []
    status = ["## Status: " + ("PARTIAL (the run was stopped or is still running; this report "
                               "covers the rows that finished)" if not finished else
                               "finished, with a reduced row list"), ""]
    skipped = _left_out_by_config(cfg)
    if skipped:
        status += ["Left out by the config:", ""] + [f"- {x}" for x in skipped] + [""]
    status += _single_row_picks(results, done)
    if missing:
        status += ["Asked for by the config but not run (no result below uses them):", ""]
        status += [f"- {x}" for x in missing] + [""]
    return status


def _left_out_by_config(cfg: Config) -> list[str]:
    """The rows the config's time-saving keys leave out, one line each."""
    skipped = []
    if len(cfg.archs()) < 2:
        skipped.append("no further student (`arch2` empty): every other architecture's rows")
    if cfg.single_rows != "all":
        skipped.append("`single_rows: best`: one single-prototype row, the prototype whose own "
                       "features probe highest (floors), instead of one per prototype")
    if not cfg.extra_merges:
        skipped.append("`extra_merges: false`: no CoOpt (procrustes) / CoOpt (cca) rows")
    return skipped


def _single_row_picks(results: dict[str, Any], done: list[int]) -> list[str]:
    """With ``single_rows: best``: which prototype each seed picked, and by what."""
    lines = []
    for s in done:
        pick = results["seeds"][str(s)].get("single_rows", {})
        if pick.get("mode") == "best":
            spec = pick["prototypes"][0]
            f = results["seeds"][str(s)]["floors"][f"features:{spec}"]
            lines.append(f"Seed {s}: single-prototype row = `{spec}`, picked as "
                         f"{pick['picked_by']}: {_pct(f['full_acc'])} full probe, "
                         f"{_pct(f['acc'])} probe.")
    if any(results["seeds"][str(s)].get("single_rows", {}).get("mode") == "best" for s in done):
        lines.append("")
    return lines


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


def _setup_paragraph(cfg: Config, results: dict[str, Any], done: list[int]) -> str:
    """The data, students, optimizer, prototypes and machine of the run, and its wall clock."""
    return (
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
           if results.get("reused_runs") else "."))


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


def _probe_paragraph(cfg: Config, n_seeds: int) -> str:
    """How every row is probed, and what the table's numbers are."""
    return (
        f"Probe: after every epoch, features of the {cfg.num_train} training images (labels) "
        f"and {cfg.num_test} test images; `nn.Linear`, Adam lr 3e-4, batch {PROBE_BATCH_SIZE}, "
        f"{cfg.probe_epochs} epochs, mean test accuracy of the last 3 epochs (\"probe\"). The "
        f"final epoch is also probed with >= {cfg.full_probe_steps} steps (\"full probe\", the "
        "protocol's default)" + _same_probe_note(cfg) + ". Accuracies in %, "
        + (f"mean ± std over {n_seeds} seeds." if n_seeds > 1 else "one seed (no std).")
        + " Training time excludes probing.")


def _same_probe_note(cfg: Config) -> str:
    """Whether the full probe is the per-epoch probe again (both run the same steps)."""
    steps_per_epoch = probe_steps_per_epoch(cfg.num_train, PROBE_BATCH_SIZE)
    full_epochs = default_probe_epochs(cfg.num_train, PROBE_BATCH_SIZE, cfg.full_probe_steps)
    if full_epochs != cfg.probe_epochs:
        return ""
    return (f"; at {cfg.num_train} training images the per-epoch probe already runs "
            f"{cfg.probe_epochs * steps_per_epoch} steps, so the full probe is the same computation "
            "and equals it")


def _merged_parts(results: dict[str, Any]) -> list[str]:
    """The invocations a combined report is made of (``--add-results``), one line each."""
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


# --------------------------------------------------------------------------- the tables


def _std_shown(std: float, n_seeds: int) -> Optional[float]:
    """``std`` where the report has several seeds (one seed has no std)."""
    return std if n_seeds > 1 else None


def _equal_epochs_table(summary: dict[str, Any], n_seeds: int) -> list[str]:
    """(a): every row at the same epoch budget, with its training time."""
    lines = ["## (a) Equal epochs",
             "",
             "| method | student | seeds | epochs | probe | full probe | train time (s) | s/epoch | "
             "train CPU (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        several = len(r["seeds"]) > 1
        lines.append(f"| {r['row']} | {r['arch']} | {', '.join(map(str, r['seeds']))} | "
                     f"{r.get('epochs', 0)} | "
                     f"{_pct(r['acc_mean'], _std_shown(r['acc_std'], n_seeds) if several else None)} | "
                     f"{_pct(r['full_acc_mean'], _std_shown(r['full_acc_std'], n_seeds) if several else None)} | "
                     f"{r['train_seconds']:.0f} | {r['epoch_seconds']:.1f} | "
                     f"{r.get('train_cpu_seconds', 0.0):.0f} |")
    return lines


def _floors_table(summary: dict[str, Any], n_seeds: int) -> list[str]:
    """The floors: features probed directly, no student."""
    lines = ["", "Floors (features probed directly, no student):", "",
             "| features | dim | probe | full probe |", "|---|---:|---:|---:|"]
    for f in summary["floors"]:
        dim = f["dim"] if f["dim"] is not None else "784"
        lines.append(f"| {f['name']} | {dim} | {_pct(f['acc_mean'], _std_shown(f['acc_std'], n_seeds))} | "
                     f"{_pct(f['full_acc_mean'], _std_shown(f['full_acc_std'], n_seeds))} |")
    return lines


def _equal_wall_clock_tables(summary: dict[str, Any]) -> list[str]:
    """(b), per student: every row's probe within CoOpt (aligned)'s training time."""
    lines = []
    for arch, eq in summary["equal_wall_clock"].items():
        lines += ["", f"## (b) Equal wall clock ({arch}): accuracy within CoOpt (aligned)'s "
                      f"{eq['budget_seconds']:.0f} s of training", "",
                  "| method | probe at budget | its own training time (s) |", "|---|---:|---:|"]
        for row, v in eq["rows"].items():
            note = " (finished earlier)" if v["finished_before_budget"] and row != ALIGNED else ""
            lines.append(f"| {row} | {_pct(v['acc'])}{note} | {v['train_seconds']:.0f} |")
    return lines


def _cross_architecture_table(cfg: Config, summary: dict[str, Any]) -> list[str]:
    """(d): one optimized dataset, many students (only with more than one student)."""
    cross = cross_architecture(cfg, summary)
    if len(cross) <= 1:
        return []
    lines = ["", "## (d) One optimized dataset, many students (CoOpt (aligned) vs BYOL, "
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
    return lines


def _interval_table(summary: dict[str, Any]) -> list[str]:
    """Every student's differences with their 95 % intervals (nothing before any seed ran)."""
    rows = [(arch, name, one) for arch, diffs in summary.get("intervals", {}).items() for name, one in diffs.items()]
    if not rows:
        return []
    lines = ["", "Differences at the final full probe, in points, with 95 % intervals (paired on the "
                 "seeds both rows ran):", "",
             "| student | difference | seeds | per seed | 95 % interval | how |", "|---|---|---|---|---|---|"]
    for arch, name, one in rows:
        interval = "-" if one.get("low") is None else f"[{one['low']:+.1f}, {one['high']:+.1f}]"
        lines.append(f"| {arch} | {name} | {', '.join(map(str, one['seeds']))} | "
                     f"{' / '.join(f'{d:+.1f}' for d in one['per_seed'])} | {interval} | {one['how']} |")
    return lines


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
    return lines + _healthy_baseline_table(summary)


def _healthy_baseline_table(summary: dict[str, Any]) -> list[str]:
    """Whether each BYOL row rises above its random-init student (nothing without BYOL)."""
    health = healthy_baseline(summary)
    if not health:
        return []
    lines = ["", "Healthy-baseline check (BYOL must rise above the random-init student before "
                 "any CoOpt-vs-BYOL number counts):", "",
             "| student | row | epochs | random init probe / full | final probe / full | "
             "best per-epoch probe (epoch) | above random init |", "|---|---|---:|---|---|---|---|"]
    for h in health:
        lines.append(f"| {h['arch']} | {h['row']} | {h['epochs']} | {_pct(h['init_acc'])} / "
                     f"{_pct(h['init_full_acc'])} | {_pct(h['final_acc'])} / "
                     f"{_pct(h['final_full_acc'])} | {_pct(h['best_acc'])} ({h['best_epoch']}) | "
                     f"{'yes' if h['above_init'] else 'no'} |")
    return lines


def _speedup_section(cfg: Config, summary: dict[str, Any]) -> list[str]:
    """(c): the speedups, and the supplementary ones against a longer-trained BYOL."""
    lines = ["", "## (c) Speedup: BYOL's training time to its final accuracy / CoOpt (aligned)'s "
                 "time to the same accuracy", ""]
    lines += _speedup_table(summary["speedup"]) if summary["speedup"] else ["Not run (needs CoOpt "
                                                                           "(aligned) and BYOL)."]
    lines += _per_seed_table(summary["speedup"])
    if summary.get("speedup_vs_longer_byol"):
        lines += ["", f"Supplementary: the same against BYOL trained {cfg.byol_long_epochs} epochs "
                      f"(first student only; CoOpt still trained {cfg.epochs} epochs):", ""]
        lines += _speedup_table(summary["speedup_vs_longer_byol"])
    if summary.get("speedup_vs_converged_byol"):
        lines += ["", f"Against BYOL trained to convergence (its validation probe gained less than "
                      f"{100 * cfg.plateau_min_gain:g} points over {cfg.plateau_window} epochs, or "
                      f"{cfg.byol_converged_epochs} epochs; seeds {', '.join(map(str, cfg.converged_seeds))}; "
                      f"CoOpt still trained {cfg.epochs} epochs; \"never\": CoOpt does not reach converged "
                      "BYOL's accuracy):", ""]
        lines += _speedup_table(summary["speedup_vs_converged_byol"])
        lines += _per_seed_table(summary["speedup_vs_converged_byol"])
    return lines


def _per_seed_table(speedups: dict[str, dict[str, Any]]) -> list[str]:
    """Each seed's speedup from its own curves (wall clock), the summed encoding first, and
    their mean ± sample std (nothing for results written before per-seed speedups)."""
    rows = [(arch, sp["per_seed"]) for arch, sp in speedups.items() if sp.get("per_seed", {}).get("seeds")]
    if not rows:
        return []

    def ratio(v):
        return "never" if v is None else f"{v:.2f}x"

    def spread(v):
        return "-" if v is None else f"{v['mean']:.2f} ± {v['std']:.2f}x"

    lines = ["", "Per seed, each from its own curves and its own encoding (wall clock; mean ± sample std "
                 "over seeds below each student):", "",
             "| student | seed | + encoding (sum over participants) | training only | + encoding (parallel, max) |",
             "|---|---|---:|---:|---:|"]
    for arch, per in rows:
        for seed, one in per["seeds"].items():
            lines.append(f"| {arch} | {seed} | {ratio(one['with_encoding_sum'])} | {ratio(one['training_only'])} "
                         f"| {ratio(one['with_encoding_max'])} |")
        lines.append(f"| {arch} | mean ± std | {spread(per['with_encoding_sum'])} | "
                     f"{spread(per['training_only'])} | {spread(per['with_encoding_max'])} |")
    return lines


def _speedup_table(speedups: dict[str, dict[str, Any]]) -> list[str]:
    """One speedup per student and clock (wall, CPU), with and without the encoding cost."""
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


def _encoding_table(cfg: Config, results: dict[str, Any], enc: dict[str, Any], done: list[int]) -> list[str]:
    """CoOpt's one-off encoding cost per prototype, centralized and collaborative."""
    lines = ["", "## Encoding cost (one-off, CoOpt's side)", "",
             "| prototype | img/s (wall) | img/CPU-s | centralized: all images (s) | "
             "collaborative: shard + S (s) |",
             "|---|---:|---:|---:|---:|"]
    collab = {spec: float(np.mean([results["seeds"][str(s)]["encoding"]["collaborative_seconds"][spec]
                                   for s in done])) for spec in cfg.prototypes}
    for spec in cfg.prototypes:
        lines.append(f"| `{spec}` | {enc['images_per_second'][spec]:.1f} | "
                     f"{enc['images_per_cpu_second'][spec]:.1f} | "
                     f"{enc['centralized_seconds'][spec]:.1f} | {collab[spec]:.1f} |")
    return lines + [f"| collaborative, max over participants (wall clock) | | | | "
                    f"{enc['collaborative_max_seconds']:.1f} |",
                    f"| collaborative, sum over participants (compute) | | | | "
                    f"{enc['collaborative_sum_seconds']:.1f} |"]


def _alignment_table(results: dict[str, Any], done: list[int]) -> list[str]:
    """Each seed's reference and every participant's uniform value and residuals."""
    lines = ["", "## Alignment per seed", "",
             "| seed | reference (lowest uniform value) | participant | prototype | uniform value | "
             "residual on S | held-out residual |", "|---|---|---|---|---:|---:|---:|"]
    for s in done:
        a = results["seeds"][str(s)]["alignment"]
        for p in a["participants"]:
            lines.append(f"| {s} | {a['reference']} (`{a['reference_prototype']}`) | {p['name']} | "
                         f"`{p['prototype']}` | {p['uniform_value']:.4f} | "
                         f"{p['fit_residual']:.3f} | {p['holdout_residual']:.3f} |")
    return lines


def _goals_table(summary: dict[str, Any]) -> list[str]:
    """The goals (the summary's ``targets``): measured value and met / no / not run."""
    lines = ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for c in summary["targets"]:
        met = "not run" if c.get("not_run") else ("yes" if c["met"] else "no")
        lines.append(f"| {c['target']} | {c['value']} | {met} |")
    return lines
