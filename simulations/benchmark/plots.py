"""The benchmark's plot: probe accuracy vs epoch and vs wall clock, one pair of panels per student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from simulations.benchmark.config import (ALIGNED, BYOL, BYOL_CONVERGED, BYOL_LONG, CCA, HEADS, PROCRUSTES, RANDOM, SINGLE,
                                          SUPERVISED, UNALIGNED, Config)

# (colour, line style) of each named row; single-prototype rows take SINGLE_COLORS in turn.
ROW_STYLES = {SUPERVISED: ("black", "-"), BYOL: ("tab:red", "-"), BYOL_LONG: ("tab:red", ":"),
              BYOL_CONVERGED: ("darkred", "--"),
              UNALIGNED: ("tab:orange", "-"),
              ALIGNED: ("tab:blue", "-"), HEADS: ("magenta", "-"), PROCRUSTES: ("tab:blue", "--"),
              CCA: ("tab:blue", ":")}
SINGLE_COLORS = ["tab:green", "tab:olive", "tab:cyan", "tab:purple", "tab:brown", "tab:pink"]
# The panels' x axes: the summary rows' curve keys.
X_KEYS = ("curve_epochs", "curve_seconds")


def plot(cfg: Config, summary: dict[str, Any], path: Path) -> None:
    """Write the probe curves of every student with a trained row (else the first) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = [a for a in cfg.archs() if any(r["arch"] == a and r["row"] != RANDOM for r in summary["rows"])]
    if not archs:
        archs = cfg.archs()[:1]
    fig, axes = plt.subplots(len(archs), 2, figsize=(13, 4.5 * len(archs)), squeeze=False)
    floors = {f["name"]: f["acc_mean"] for f in summary["floors"]}
    for i, arch in enumerate(archs):
        rows = [r for r in summary["rows"] if r["arch"] == arch and r["row"] != RANDOM]
        for j, xkey in enumerate(X_KEYS):
            _draw_panel(axes[i][j], arch, rows, floors, xkey, by_epoch=j == 0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_panel(ax: Any, arch: str, rows: list[dict[str, Any]], floors: dict[str, float], xkey: str,
                *, by_epoch: bool) -> None:
    """One student's curves against epochs or seconds (``xkey``), with the floors as lines."""
    k = 0
    for r in rows:
        if r["row"].startswith(SINGLE):
            color, ls = SINGLE_COLORS[k % len(SINGLE_COLORS)], "--"
            k += 1
        else:
            color, ls = ROW_STYLES.get(r["row"], ("gray", "-"))
        ax.plot(r[xkey], 100 * np.asarray(r["curve_acc_mean"]), ls, color=color,
                marker="o", ms=3, lw=2 if r["row"] in (ALIGNED, BYOL) else 1.2,
                label=r["row"].replace(SINGLE, "single "))
    _draw_floors(ax, floors)
    ax.set_xlabel("epoch" if by_epoch else "training wall clock (s, probe excluded)")
    ax.set_ylabel("linear probe accuracy (%)")
    seeds = sorted({int(x) for r in rows for x in r["seeds"]})
    # Two lines: a long student name with the seed note overran its panel on one line.
    ax.set_title(f"{arch}: probe accuracy vs {'epoch' if by_epoch else 'wall clock'}\n"
                 f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                 f"{'; each row: mean of the seeds it ran' if len(seeds) > 1 else ''})",
                 fontsize=9)
    ax.grid(alpha=0.3)
    if by_epoch:
        ax.legend(fontsize=7, loc="lower right")


def _draw_floors(ax: Any, floors: dict[str, float]) -> None:
    """The raw pixels' and the best prototype's own features' probe accuracy, as lines."""
    if "raw pixels" in floors:
        ax.axhline(100 * floors["raw pixels"], color="gray", ls=":", lw=1,
                   label="raw pixels (floor)")
    feats = [(v, n) for n, v in floors.items() if n.startswith("features:")]
    if feats:
        best = max(feats)
        ax.axhline(100 * best[0], color="tab:green", ls=":", lw=1,
                   label=f"best prototype features ({best[1][len('features:'):]})")
