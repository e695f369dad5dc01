"""Uniform value: how evenly a prototype spreads a set of images on the unit sphere.

Wang & Isola (2020) define uniformity as ``log E_{i != j} exp(-t ||f_i - f_j||^2)`` over
L2-normalized features ``f``. CoOpt scores every prototype with it on the shared subset S and
takes the lowest (most uniform) one as the reference that every other participant is aligned
to. The paper prints ``exp(+tau ...)``; with "lower is better" the exponent must be negative,
as it is here.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TEMPERATURE = 2.0


def l2_normalize(features: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return ``features`` scaled to unit L2 norm row by row (float64)."""
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, eps)


def uniform_value(features: np.ndarray, t: float = DEFAULT_TEMPERATURE) -> float:
    """Uniformity of ``features`` (lower = more uniform = better prototype).

    Parameters
    ----------
    features : np.ndarray
        ``(m, n)`` embeddings of the shared subset, already projected to the common dimension.
        They are L2-normalized here.
    t : float
        Temperature of the Gaussian potential (2 in Wang & Isola and in CoOpt).

    Returns
    -------
    float
        ``log mean_{i != j} exp(-t ||f_i - f_j||^2)``; in ``[-4t, 0]`` for unit vectors.
    """
    f = l2_normalize(features)
    m = f.shape[0]
    if m < 2:
        raise ValueError(f"uniform value needs at least 2 samples, got {m}")
    # For unit vectors ||f_i - f_j||^2 = 2 - 2 <f_i, f_j>; one Gram matrix is O(m^2 n) and
    # m is the shared-subset size (hundreds to a few thousand), so this stays small.
    sq_dists = np.clip(2.0 - 2.0 * (f @ f.T), 0.0, 4.0)
    logits = -t * sq_dists[~np.eye(m, dtype=bool)]
    # log-mean-exp, stabilized by the max logit.
    peak = logits.max()
    return float(peak + np.log(np.mean(np.exp(logits - peak))))


def select_reference(values: dict[str, float]) -> str:
    """Return the key with the lowest uniform value (ties: first in sorted key order)."""
    if not values:
        raise ValueError("no uniform values to choose a reference from")
    return min(sorted(values), key=lambda key: values[key])
