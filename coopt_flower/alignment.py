"""Align every participant's targets to the reference prototype's space.

CoOpt's fix for "target distribution inconsistency": on the shared subset S every participant
k has embeddings ``X_k = W_k psi_k(S)`` and the reference k* has ``Y = W_k* psi_k*(S)``. A ridge
least-squares map with bias, ``T_k = argmin ||X_k A + b - Y||^2 + lam ||A||^2``, carries k's
targets into k*'s space. |S| may be smaller than the common dimension n, so the regularizer is
what makes the problem well posed; its strength is chosen on a held-out part of S.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coopt_flower.uniformity import select_reference, uniform_value

# Ridge strengths, relative to the mean eigenvalue of the centered Gram matrix, so the same
# grid suits prototypes whose features live on very different scales.
DEFAULT_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_HOLDOUT_FRACTION = 0.2

#: Values of the run-config key ``merge``: how participants' targets become one dataset.
#: ``align-ridge`` maps every participant into the reference's space with a ridge map fitted
#: on S; ``heads`` writes every participant's targets in its own space (identity maps) and the
#: student learns one head per participant (:mod:`coopt_flower.heads`).
MERGE_STRATEGIES = ("align-ridge", "heads")


@dataclass(frozen=True)
class AlignmentMap:
    """An affine map ``y = x @ weight + bias`` from one participant's space to the reference's.

    Attributes
    ----------
    weight, bias : np.ndarray
        ``(n, n)`` and ``(n,)`` float32.
    alpha : float
        Relative ridge strength that was chosen (0 for the identity).
    fit_residual : float
        Fraction of the reference's variance on S left unexplained by the final map
        (``1 - R^2``, fitted and evaluated on all of S).
    holdout_residual : float
        Same fraction on a held-out part of S, for a map fitted without it: the honest
        estimate of how well the alignment generalizes to the rest of the shard.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    fit_residual: float
    holdout_residual: float

    @classmethod
    def identity(cls, dim: int) -> AlignmentMap:
        """The reference participant's map: targets pass through unchanged."""
        return cls(np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32), 0.0, 0.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return self.alpha == 0.0 and self.fit_residual == 0.0 and bool(
            np.array_equal(self.weight, np.eye(self.weight.shape[0], dtype=np.float32))
            and not self.bias.any()
        )

    def apply(self, targets: np.ndarray) -> np.ndarray:
        """Map ``(batch, n)`` targets into the reference space (float32)."""
        if self.is_identity:
            return np.asarray(targets, dtype=np.float32)
        return (np.asarray(targets, np.float32) @ self.weight + self.bias).astype(np.float32)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression with an unpenalized bias.

    Parameters
    ----------
    x, y : np.ndarray
        ``(m, n_in)`` inputs and ``(m, n_out)`` outputs.
    alpha : float
        Ridge strength relative to the mean eigenvalue of ``xc.T @ xc``.

    Returns
    -------
    weight, bias : np.ndarray
        float64 ``(n_in, n_out)`` and ``(n_out,)`` with ``y ~ x @ weight + bias``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    lam = alpha * max(np.trace(gram) / gram.shape[0], 1e-12)
    weight = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), xc.T @ yc)
    return weight, y_mean - x_mean @ weight


def unexplained_variance(pred: np.ndarray, y: np.ndarray) -> float:
    """``1 - R^2`` pooled over all output dimensions."""
    y = np.asarray(y, np.float64)
    total = np.sum((y - y.mean(axis=0)) ** 2)
    return float(np.sum((np.asarray(pred, np.float64) - y) ** 2) / max(total, 1e-12))


def fit_alignment(
    x: np.ndarray,
    y: np.ndarray,
    *,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = 0,
) -> AlignmentMap:
    """Fit the map from a participant's shared-subset embeddings ``x`` to the reference's ``y``.

    The ridge strength is picked by the held-out residual; the returned map is then refitted
    on all of S with that strength.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape[0] != y.shape[0] or x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"alignment needs paired (m, n) arrays, got {x.shape} and {y.shape}")
    m = x.shape[0]
    n_holdout = int(round(m * holdout_fraction))
    if m < 4 or n_holdout < 1 or m - n_holdout < 2:
        raise ValueError(f"the shared subset is too small to fit and check an alignment: {m}")
    order = np.random.default_rng([int(seed), 0xA11]).permutation(m)
    hold, fit = order[:n_holdout], order[n_holdout:]

    scores = []
    for alpha in alphas:
        weight, bias = fit_ridge(x[fit], y[fit], alpha)
        scores.append(unexplained_variance(x[hold] @ weight + bias, y[hold]))
    best = int(np.argmin(scores))
    weight, bias = fit_ridge(x, y, alphas[best])
    return AlignmentMap(
        weight=weight.astype(np.float32),
        bias=bias.astype(np.float32),
        alpha=float(alphas[best]),
        fit_residual=unexplained_variance(x @ weight + bias, y),
        holdout_residual=float(scores[best]),
    )


@dataclass
class AlignmentPlan:
    """Uniform value per participant, the reference, and each participant's map to it."""

    uniform_values: dict[str, float]
    reference: str
    maps: dict[str, AlignmentMap] = field(default_factory=dict)


def plan_alignment(
    shared_embeddings: dict[str, np.ndarray],
    *,
    seed: int = 0,
    candidates: dict[str, np.ndarray] | None = None,
    align: bool = True,
) -> AlignmentPlan:
    """Score prototypes on the shared subset S and fit every map to the most uniform one.

    Parameters
    ----------
    shared_embeddings : dict
        Participant name -> ``(|S|, n)`` projected embeddings of S, rows in the same order
        (the shared ids) for everyone.
    seed : int
        Seeds the held-out split of S used to pick each ridge strength.
    candidates : dict, optional
        Extra reference candidates that encode no shard themselves (multi-round: the
        platform's refined student). They are scored, may become the reference, get no map.
    align : bool
        ``False`` gives every participant the identity map (the "no alignment" ablation:
        targets are merged as they are); scores and the reference are computed all the same.

    A participant whose embeddings are the reference's (it runs the reference's encoder)
    gets the identity map.
    """
    if not shared_embeddings:
        raise ValueError("no participant returned shared-subset embeddings")
    pool = {**shared_embeddings, **(candidates or {})}
    shapes = {name: emb.shape for name, emb in pool.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shared-subset embeddings disagree in shape: {shapes}")
    values = {name: uniform_value(emb) for name, emb in pool.items()}
    reference = select_reference(values)
    target = pool[reference]
    maps = {
        name: AlignmentMap.identity(emb.shape[1]) if not align or np.array_equal(emb, target)
        else fit_alignment(emb, target, seed=seed)
        for name, emb in shared_embeddings.items()
    }
    return AlignmentPlan(values, reference, maps)
