"""Probe-accuracy curves: when a method reaches an accuracy, and the speedup between two."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def curve_points(run: dict[str, Any], init_acc: float,
                 clock: str = "epoch_times") -> tuple[np.ndarray, np.ndarray]:
    """(cumulative training seconds, probe accuracy) per epoch, epoch 0 = random init.

    ``clock`` is ``"epoch_times"`` (wall clock) or ``"epoch_cpu_times"`` (process CPU time).
    """
    times = np.concatenate([[0.0], np.cumsum(run[clock])])
    accs = np.concatenate([[init_acc], run["probe_acc"]])
    return times, accs


def time_to_reach(times: np.ndarray, accs: np.ndarray, target: float) -> Optional[float]:
    """First time the piecewise-linear curve reaches ``target`` (None if it never does)."""
    if accs[0] >= target:
        return 0.0
    for i in range(1, len(accs)):
        if accs[i] >= target:
            frac = (target - accs[i - 1]) / max(accs[i] - accs[i - 1], 1e-12)
            return float(times[i - 1] + frac * (times[i] - times[i - 1]))
    return None


def acc_at_time(times: np.ndarray, accs: np.ndarray, t: float) -> tuple[float, bool]:
    """Accuracy of the curve at time ``t`` (and whether the run was still training then)."""
    if t >= times[-1]:
        return float(accs[-1]), False
    return float(np.interp(t, times, accs)), True


def speedup(byol: dict[str, np.ndarray], coopt: dict[str, np.ndarray],
            encoding: tuple[float, float, float, float]) -> dict[str, Any]:
    """BYOL's time to reach its final accuracy / CoOpt's time to reach the same accuracy.

    Both times come from the mean curves (linear interpolation; epoch 0 = the random-init
    student, where every curve starts). ``encoding`` is CoOpt's one-off encoding cost:
    (max over participants, sum, the same two in CPU seconds). The ratio is None when CoOpt
    never reaches the target, or when BYOL ends no better than the random-init student
    (both "reach" it at time 0).
    """
    enc_max, enc_sum, enc_max_cpu, enc_sum_cpu = encoding
    target = float(byol["accs"][-1])
    init_acc = float(coopt["accs"][0])
    degenerate = target <= init_acc
    epochs = np.arange(len(coopt["accs"]), dtype=float)
    out: dict[str, Any] = {
        "byol_epochs": len(byol["accs"]) - 1, "byol_final_acc": target,
        "random_init_acc": init_acc, "byol_not_above_init": degenerate,
        "encoding_max_seconds": enc_max, "encoding_sum_seconds": enc_sum,
        "coopt_epochs_to_reach": time_to_reach(epochs, coopt["accs"], target),
    }
    for clock, suffix, e_max, e_sum in (("times", "", enc_max, enc_sum),
                                        ("cpu_times", "_cpu", enc_max_cpu, enc_sum_cpu)):
        t_byol = time_to_reach(byol[clock], byol["accs"], target)  # first time BYOL gets there
        t_coopt = time_to_reach(coopt[clock], coopt["accs"], target)
        ok = t_coopt is not None and not degenerate
        out[f"byol{suffix}_seconds_to_final"] = t_byol
        out[f"byol{suffix}_train_seconds"] = float(byol[clock][-1])
        out[f"coopt{suffix}_seconds_to_reach"] = t_coopt
        out[f"training_only{suffix}"] = t_byol / t_coopt if ok else None
        out[f"with_encoding_max{suffix}"] = t_byol / (t_coopt + e_max) if ok else None
        out[f"with_encoding_sum{suffix}"] = t_byol / (t_coopt + e_sum) if ok else None
    out["reached"] = out["coopt_seconds_to_reach"] is not None
    return out
