"""Comparisons between rows of the benchmark's summary, shared by its goals and its report.

A summary row (see :func:`simulations.benchmark.summary.summarize`) is one method on one
student: means and stds over the seeds that ran it, and its accuracies per seed. The helpers
here find rows, pair two rows on the seeds both ran, and judge whether a baseline is healthy.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from coopt_flower.probing import mean_std
from simulations.benchmark.config import ALIGNED, BYOL, BYOL_CONVERGED, BYOL_LONG, RANDOM, Config


def find_row(summary: dict[str, Any], row: str, arch: str) -> Optional[dict[str, Any]]:
    """The summary row of method ``row`` on student ``arch``, or None when nobody ran it."""
    return next((r for r in summary["rows"] if r["row"] == row and r["arch"] == arch), None)


def per_seed(row: dict[str, Any]) -> dict[int, dict[str, float]]:
    """A summary row's per-seed accuracies by integer seed (JSON turns the keys into strings)."""
    return {int(k): v for k, v in row["per_seed"].items()}


def on_common_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows' means and stds over the seeds all of them ran (a comparison is paired).

    Rows of a report merged from several invocations may cover different seeds (e.g. an
    optional row run on seed 0 only); comparing a 3-seed mean with a 1-seed value would mix
    seed noise into the difference. Rows that already share their seeds come back unchanged.

    Parameters
    ----------
    rows : list of dict
        Summary rows (each with ``seeds`` and ``per_seed``).

    Returns
    -------
    list of dict
        The same rows, or copies restricted to the common seeds (``restricted: True``).
    """
    common = sorted(set.intersection(*(set(map(int, r["seeds"])) for r in rows)))
    if not common or all(sorted(map(int, r["seeds"])) == common for r in rows):
        return rows
    out = []
    for r in rows:
        per = per_seed(r)
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
    mine, base = per_seed(row), per_seed(init)
    shared = [s for s in mine if s in base]
    return bool(shared) and all(mine[s]["acc"] > base[s]["acc"] and mine[s]["full_acc"] > base[s]["full_acc"]
                                for s in shared)


def cross_architecture(cfg: Config, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One merged dataset, many students: CoOpt (aligned) vs BYOL at equal epochs per student.

    A student counts only where BYOL is healthy (rises above its own random init on both
    probes); where it does not, the comparison is against a collapsed baseline and says so.
    """
    out = []
    for arch in cfg.archs():
        init, al, by = (find_row(summary, r, arch) for r in (RANDOM, ALIGNED, BYOL))
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


def healthy_baseline(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Does BYOL rise above the random-init student? (before any CoOpt-vs-BYOL number counts)"""
    out = []
    for init in [r for r in summary["rows"] if r["row"] == RANDOM]:
        for row in (BYOL, BYOL_LONG, BYOL_CONVERGED):
            r = find_row(summary, row, init["arch"])
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
