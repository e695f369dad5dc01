"""Intervals on the benchmark's differences, and rank correlations with their p-value.

A difference between two methods (CoOpt - BYOL, say) is noisy in two ways: across seeds
(another sample of training images, another initialization) and across test images (another
test set of the same size). :func:`difference_interval` gives a 95 % interval for it:

- ``bootstrap``: resample the seeds, and within each resampled seed the test images (the same
  images for both methods: the comparison is paired), from every test image's outcome under
  each method's final probe (``full_probe_correct``, stored per run);
- ``t``: where the runs predate per-image outcomes, a t interval over the per-seed differences
  (seed noise only; none with one seed).

:func:`spearman_with_p` adds an exact permutation p-value to a rank correlation over a handful
of prototypes (rho = 0.6 on four points is far from significant).
"""

from __future__ import annotations

import base64
import itertools
import math
from typing import Any, Optional, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
# Two-sided 97.5 % quantiles of Student's t for small seed counts (degrees of freedom 1-9).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def pack_outcomes(correct: np.ndarray) -> str:
    """Per-sample right / wrong as a short string for the results JSON (1 bit a sample)."""
    correct = np.asarray(correct, dtype=bool)
    return f"{len(correct)}:" + base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")


def unpack_outcomes(text: str) -> np.ndarray:
    n, data = text.split(":", 1)
    return np.unpackbits(np.frombuffer(base64.b64decode(data), np.uint8), count=int(n)).astype(bool)


def bootstrap_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, samples: int = BOOTSTRAP_SAMPLES,
                         seed: int = 0) -> tuple[float, float, float]:
    """``(difference, low, high)`` in points of ``mean(a) - mean(b)``: seeds resampled, then
    each seed's test images (paired), ``a[i]`` / ``b[i]`` the per-image outcomes of seed ``i``."""
    rng = np.random.default_rng(seed)
    diffs = [a_i.astype(np.float64) - b_i.astype(np.float64) for a_i, b_i in zip(a, b)]
    point = 100.0 * float(np.mean([d.mean() for d in diffs]))
    draws = np.empty(samples)
    for k in range(samples):
        picked = rng.integers(0, len(diffs), len(diffs))
        draws[k] = np.mean([diffs[i][rng.integers(0, len(diffs[i]), len(diffs[i]))].mean() for i in picked])
    low, high = np.percentile(100.0 * draws, [2.5, 97.5])
    return point, float(low), float(high)


def t_interval(per_seed_differences: Sequence[float]) -> Optional[tuple[float, float, float]]:
    """``(mean, low, high)`` of per-seed differences (points) from Student's t; None for one."""
    d = np.asarray(per_seed_differences, dtype=np.float64)
    if len(d) < 2:
        return None
    half = T_975.get(len(d) - 1, 1.96) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def difference_interval(runs_a: dict[str, dict[str, Any]], runs_b: dict[str, dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The 95 % interval of row A - row B (points, final full probe) on the seeds both ran.

    ``runs_a`` / ``runs_b``: seed -> stored run (a trained row's, or the random init's probes).
    """
    seeds = sorted(set(runs_a) & set(runs_b), key=int)
    if not seeds:
        return None
    def full(run):
        return run.get("full_probe_acc", run.get("full_acc"))
    per_seed = [100.0 * (full(runs_a[s]) - full(runs_b[s])) for s in seeds]
    if all("full_probe_correct" in r for r in (*[runs_a[s] for s in seeds], *[runs_b[s] for s in seeds])):
        a = [unpack_outcomes(runs_a[s]["full_probe_correct"]) for s in seeds]
        b = [unpack_outcomes(runs_b[s]["full_probe_correct"]) for s in seeds]
        point, low, high = bootstrap_difference(a, b)
        how = f"bootstrap over {len(seeds)} seed(s) and {len(a[0])} test images, paired"
    else:
        t = t_interval(per_seed)
        if t is None:
            return {"seeds": [int(s) for s in seeds], "per_seed": per_seed, "low": None, "high": None,
                    "how": "no interval: one seed and no per-image outcomes"}
        point, low, high = t
        how = f"t over {len(seeds)} seeds (seed noise only; runs without per-image outcomes)"
    return {"seeds": [int(s) for s in seeds], "per_seed": per_seed, "difference": point, "low": low,
            "high": high, "excludes_zero": low > 0 or high < 0, "how": how}


def spearman_with_p(x: Sequence[float], y: Sequence[float], *, samples: int = 20000,
                    seed: int = 0) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value (ties broken by position): exact
    over every ordering of ``y`` up to 8 points (a prototype pool), else from ``samples``
    random orderings."""
    rx, ry = _ranks(x), _ranks(y)
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if len(rx) <= 8:
        orderings = (np.asarray(p) for p in itertools.permutations(ry))
    else:
        rng = np.random.default_rng(seed)
        orderings = (rng.permutation(ry) for _ in range(samples))
    rhos = np.array([np.corrcoef(rx, perm)[0, 1] for perm in orderings])
    return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))


def _ranks(values: Sequence[float]) -> np.ndarray:
    order = np.argsort(np.asarray(values, dtype=np.float64), kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(len(order))
    return ranks
