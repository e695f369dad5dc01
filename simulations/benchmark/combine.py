"""One report from several benchmark invocations (``--report-only --add-results``).

At the real budget the benchmark is hours of CPU work per seed, so seeds and students are run
by separate invocations, in parallel on two cores or on different days and machines. Each
writes its own ``benchmark.json``; combining them gives the report a single run would have
written. Only runs of the same settings combine: every config key that changes what one
training run trains on must be equal (the keys a stored run is reused across may differ:
which seeds, which further students, which optional rows). Nothing is averaged here; the
seeds are put side by side and :func:`simulations.benchmark.summary.summarize` does the rest.

(The results keep the word "merged" where a file already stores it, ``merged_from``, and in
the messages and the report's text, which predate this module's name.)
"""

from __future__ import annotations

import copy
from typing import Any

# Config keys that may differ between combined runs (they choose which runs exist, not what a
# run trains on); the same list as the stored-run reuse of ``--resume``.
COMBINABLE_KEYS = ("byol_long_epochs", "seeds", "arch2", "single_rows", "extra_merges", "converged_seeds")

# Keys added after results files were first written, with the value such a file implies.
LATER_KEYS = {"byol_recipe": "shared", "num_val": 0, "val_seed": 0, "byol_views": "shared",
              "byol_converged_epochs": 0}


def results_config(config: dict[str, Any], *, where: str = "config"):
    """The :class:`~simulations.benchmark.config.Config` of a results file's ``config``
    (a key added after the file was written takes the value the file implies)."""
    from simulations.benchmark.config import Config

    return Config.from_dict({**LATER_KEYS, **config}, where=where)


def _archs(config: dict[str, Any]) -> list[str]:
    """The further students (``arch2``) of a results file's config, parsed as the run did."""
    return results_config(config).archs()[1:]


def _student_byol_recipes(config: dict[str, Any]) -> dict[str, str]:
    """``{student: its BYOL recipe}`` for the students a results file trained."""
    cfg = results_config(config)
    return {arch: cfg.byol_recipe_for(arch) for arch in cfg.archs()}


def _byol_recipe_clash(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The students both files trained with different BYOL recipes.

    A student's recipe changes only its own BYOL rows, so files whose ``byol_recipe`` differs
    only for students one of them did not train combine (e.g. seed 0 of small-cnn alone and
    seed 1 with a per-student recipe for ResNet-18).
    """
    a, b = _student_byol_recipes(mine), _student_byol_recipes(theirs)
    return sorted(s for s in a.keys() & b.keys() if a[s] != b[s])


def _combined_byol_recipe(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    """One ``byol_recipe`` that gives every student of either file the recipe it was run with."""
    recipes = {**_student_byol_recipes(mine), **_student_byol_recipes(theirs)}
    default = recipes[mine["arch"]]  # ``arch`` is equal in both (checked before)
    return ",".join([default] + [f"{s}={r}" for s, r in recipes.items() if r != default])


def combine_results(base: dict[str, Any], other: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``base`` with the seeds of ``other`` added (a new dict; neither input is changed).

    Raises
    ------
    ValueError
        When a key that changes a training run differs (named, with both values), when a seed
        is in both with different results, or when ``other`` did not finish.
    """
    mine, theirs = ({**LATER_KEYS, **base["config"]}, {**LATER_KEYS, **other["config"]})
    differ = sorted(k for k in set(mine) | set(theirs)
                    if k not in COMBINABLE_KEYS + ("byol_recipe",) and mine.get(k) != theirs.get(k))
    if _byol_recipe_clash(mine, theirs):
        differ = sorted(differ + ["byol_recipe"])
    if differ:
        raise ValueError(f"{where}: cannot merge runs of different settings: " + "; ".join(
            f"{k} = {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ))
    if not other.get("finished", False):
        raise ValueError(f"{where}: that run did not finish (finished: false); merge a finished "
                         "run, or re-run it with --resume")
    combined = copy.deepcopy(base)
    for seed, result in other["seeds"].items():
        if seed in combined["seeds"]:
            if combined["seeds"][seed] == result:
                continue  # combined before: combining is idempotent
            raise ValueError(f"{where}: seed {seed} is in both runs with different results; "
                             "a seed comes from one invocation")
        combined["seeds"][seed] = copy.deepcopy(result)
    combined["seeds"] = dict(sorted(combined["seeds"].items(), key=lambda kv: int(kv[0])))
    cfg = combined["config"]
    cfg["seeds"] = sorted(int(s) for s in combined["seeds"])
    cfg["arch2"] = ",".join(dict.fromkeys(_archs(mine) + _archs(theirs)))
    cfg["single_rows"] = "all" if "all" in (mine["single_rows"], theirs["single_rows"]) else "best"
    cfg["extra_merges"] = bool(mine["extra_merges"] or theirs["extra_merges"])
    cfg["byol_long_epochs"] = max(mine["byol_long_epochs"], theirs["byol_long_epochs"])
    cfg["byol_recipe"] = _combined_byol_recipe(mine, theirs)
    parts = combined.setdefault("merged_from", [_part(base)])
    if not any(p == _part(other) for p in parts):
        parts.append(_part(other))
    combined["reused_runs"] = list(dict.fromkeys(base.get("reused_runs", []) + other.get("reused_runs", [])))
    combined["wall_seconds"] = sum(p["wall_seconds"] for p in parts)
    combined["finished"] = bool(base.get("finished", False))
    return combined


def _part(results: dict[str, Any]) -> dict[str, Any]:
    """What the combined report says about one invocation (an entry of ``merged_from``)."""
    return {"command": results.get("command", ""), "seeds": sorted(int(s) for s in results["seeds"]),
            "students": [results["config"]["arch"]] + _archs(results["config"]),
            "wall_seconds": float(results.get("wall_seconds", 0.0)),
            "encoding_rates": results.get("encoding_rates", {}),
            "loadavg": [results.get("environment", {}).get("loadavg_start"),
                        results.get("environment", {}).get("loadavg_end")]}
