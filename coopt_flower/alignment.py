"""Align every participant's targets to the reference prototype's space.

CoOpt's fix for "target distribution inconsistency": on the shared subset S every participant
k has embeddings ``X_k = W_k psi_k(S)`` and the reference k* has ``Y = W_k* psi_k*(S)``. A ridge
least-squares map with bias, ``T_k = argmin ||X_k A + b - Y||^2 + lam ||A||^2``, carries k's
targets into k*'s space. |S| may be smaller than the common dimension n, so the regularizer is
what makes the problem well posed; its strength is chosen on a held-out part of S.

That ridge map is the default merge, ``align-ridge``. Two better-posed alternatives fit the
same affine :class:`AlignmentMap`, so the round applies them unchanged:

- ``align-procrustes``: whiten both sides (covariances shrunk towards a multiple of the
  identity, which keeps ``|S| < n`` invertible), rotate with orthogonal Procrustes (SVD of
  ``Xw^T Yw``), un-whiten into the reference's space. It keeps the reference's spread: a
  rotation cannot shrink targets towards the mean as a ridge map does when the two spaces
  share little.
- ``align-cca``: the same whitening, then only the top-``k`` canonical directions, each scaled
  by its canonical correlation (reduced-rank regression in whitened coordinates): directions
  that S cannot pair up are dropped instead of shrunk.

Each method picks its strength (ridge alpha, whitening shrinkage, rank) on a held-out 20% of S.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coopt_flower.merges import ALIGN_METHODS, Merge


# Ridge strengths, relative to the mean eigenvalue of the centered Gram matrix, so the same
# grid suits prototypes whose features live on very different scales.
DEFAULT_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_HOLDOUT_FRACTION = 0.2
# Whitening shrinkage towards (mean eigenvalue) * I: 0 = plain whitening, 1 = no whitening.
DEFAULT_SHRINKAGES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 0.9)
# Canonical directions kept by align-cca (capped by |S| and n).
DEFAULT_RANKS = (4, 8, 16, 32, 64, 128, 256, 512)

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
    method : str
        The ``merge`` value that fitted it (an ``align-*`` :class:`~coopt_flower.merges.Merge`).
    rank : int
        Canonical directions kept (``align-cca``); 0 for the other methods.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    fit_residual: float
    holdout_residual: float
    method: str = Merge.ALIGN_RIDGE
    rank: int = 0  # canonical directions kept (align-cca), 0 otherwise

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


class _Spectrum:
    """Eigendecomposition of a centered sample's covariance: its whitener at any shrinkage.

    Shrinking the covariance towards ``mean eigenvalue * I`` keeps it invertible when the
    sample has fewer rows than columns (|S| < n); one ``eigh`` serves every shrinkage.
    """

    def __init__(self, centered: np.ndarray) -> None:
        evals, self.evecs = np.linalg.eigh(centered.T @ centered / centered.shape[0])
        self.evals = np.clip(evals, 0.0, None)
        self.mean_eval = max(float(self.evals.mean()), 1e-12)

    def power(self, shrinkage: float, exponent: float) -> np.ndarray:
        """``C_s ** exponent`` for ``C_s = (1 - shrinkage) C + shrinkage * mean_eval * I``."""
        lam = (1.0 - shrinkage) * self.evals + shrinkage * self.mean_eval
        return (self.evecs * lam**exponent) @ self.evecs.T


def _whitened_svd(xc: np.ndarray, yc: np.ndarray, shrinkage: float,
                  spectra: tuple[_Spectrum, _Spectrum] | None = None):
    """SVD of the cross-covariance of the shrink-whitened pair.

    Returns ``(whiten_x, u, s, vt, unwhiten_y)``: in whitened coordinates
    ``u @ diag(s) @ vt`` is the least-squares map (``s`` are the canonical correlations)
    and ``u @ vt`` the nearest rotation (orthogonal Procrustes).
    """
    sx, sy = spectra or (_Spectrum(xc), _Spectrum(yc))
    whiten_x, whiten_y = sx.power(shrinkage, -0.5), sy.power(shrinkage, -0.5)
    cross = whiten_x @ (xc.T @ yc / xc.shape[0]) @ whiten_y
    u, s, vt = _svd(cross)
    return whiten_x, u, s, vt, sy.power(shrinkage, 0.5)


def _svd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.linalg.svd`` (thin), retried on the transpose when LAPACK's divide and conquer does
    not converge: OpenBLAS's ``gesdd`` fails so on some well-scaled, finite matrices on some
    processors (seen on an AMD EPYC), and the transpose's iteration converges."""
    try:
        return np.linalg.svd(matrix, full_matrices=False)
    except np.linalg.LinAlgError:
        v, s, ut = np.linalg.svd(matrix.T, full_matrices=False)
        return ut.T, s, v.T


def fit_procrustes(x: np.ndarray, y: np.ndarray, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Whiten both sides, rotate (orthogonal Procrustes), un-whiten into ``y``'s space.

    Parameters
    ----------
    x, y : np.ndarray
        ``(m, n_in)`` and ``(m, n_out)`` paired embeddings.
    shrinkage : float
        In ``(0, 1]``: how far each covariance is pulled towards a multiple of the identity
        before whitening (1 = no whitening: a plain rotation between centered spaces).

    Returns
    -------
    weight, bias : np.ndarray
        float64, with ``y ~ x @ weight + bias``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    whiten_x, u, _, vt, unwhiten_y = _whitened_svd(x - x_mean, y - y_mean, shrinkage)
    weight = whiten_x @ (u @ vt) @ unwhiten_y
    return weight, y_mean - x_mean @ weight


def fit_cca(x: np.ndarray, y: np.ndarray, shrinkage: float, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduced-rank map through the top-``rank`` canonical directions of ``x`` and ``y``.

    In shrink-whitened coordinates the map keeps the ``rank`` leading singular directions of
    the cross-covariance, each scaled by its canonical correlation, then un-whitens into
    ``y``'s space. Same parameters and returns as :func:`fit_procrustes`, plus ``rank``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    whiten_x, u, s, vt, unwhiten_y = _whitened_svd(x - x_mean, y - y_mean, shrinkage)
    k = max(1, min(int(rank), len(s)))
    weight = whiten_x @ (u[:, :k] * s[:k]) @ vt[:k] @ unwhiten_y
    return weight, y_mean - x_mean @ weight


def _holdout_split(m: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (held-out, fit) rows of S that choose a map's regularizer."""
    n_holdout = int(round(m * holdout_fraction))
    if m < 4 or n_holdout < 1 or m - n_holdout < 2:
        raise ValueError(f"the shared subset is too small to fit and check an alignment: {m}")
    order = np.random.default_rng([int(seed), 0xA11]).permutation(m)
    return order[:n_holdout], order[n_holdout:]


def _whitened_grid_scores(x: np.ndarray, y: np.ndarray, hold: np.ndarray, fit: np.ndarray,
                          method: str, shrinkages: tuple[float, ...],
                          ranks: tuple[int, ...]) -> dict[tuple[float, int], float]:
    """Held-out residual of every (shrinkage, rank) a whitened method may use.

    Eigendecompositions are shared across shrinkages and truncations across ranks, so the
    whole grid costs about one SVD per shrinkage.
    """
    x_mean, y_mean = x[fit].mean(axis=0), y[fit].mean(axis=0)
    xc, yc = x[fit] - x_mean, y[fit] - y_mean
    spectra = (_Spectrum(xc), _Spectrum(yc))
    scores: dict[tuple[float, int], float] = {}
    for shrinkage in shrinkages:
        whiten_x, u, s, vt, unwhiten_y = _whitened_svd(xc, yc, shrinkage, spectra)
        held = (x[hold] - x_mean) @ whiten_x @ u          # held-out rows in canonical coordinates
        back = vt @ unwhiten_y                             # canonical -> y's space
        if method == Merge.ALIGN_PROCRUSTES:
            scores[(shrinkage, 0)] = unexplained_variance(held @ back + y_mean, y[hold])
            continue
        for rank in sorted({min(r, len(s)) for r in ranks}):
            pred = (held[:, :rank] * s[:rank]) @ back[:rank] + y_mean
            scores[(shrinkage, rank)] = unexplained_variance(pred, y[hold])
    return scores


def fit_alignment(
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str = Merge.ALIGN_RIDGE,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    shrinkages: tuple[float, ...] = DEFAULT_SHRINKAGES,
    ranks: tuple[int, ...] = DEFAULT_RANKS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = 0,
) -> AlignmentMap:
    """Fit the map from a participant's shared-subset embeddings ``x`` to the reference's ``y``.

    The regularizer (ridge ``alphas``; whitening ``shrinkages`` and, for ``align-cca``,
    ``ranks``) is picked by the held-out residual; the returned map is then refitted on all
    of S with it.

    Parameters
    ----------
    method : str
        One of the ``align-*`` values of :class:`~coopt_flower.merges.Merge`.
    """
    if method not in ALIGN_METHODS:
        raise ValueError(f"unknown alignment method {method!r}: use align-ridge, align-procrustes "
                         "or align-cca")
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape[0] != y.shape[0] or x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"alignment needs paired (m, n) arrays, got {x.shape} and {y.shape}")
    hold, fit = _holdout_split(x.shape[0], holdout_fraction, seed)

    rank = 0
    if method == Merge.ALIGN_RIDGE:
        scores = []
        for alpha in alphas:
            weight, bias = fit_ridge(x[fit], y[fit], alpha)
            scores.append(unexplained_variance(x[hold] @ weight + bias, y[hold]))
        best = int(np.argmin(scores))
        strength, holdout = float(alphas[best]), float(scores[best])
        weight, bias = fit_ridge(x, y, strength)
    else:
        grid = _whitened_grid_scores(x, y, hold, fit, method, shrinkages, ranks)
        (strength, rank), holdout = min(grid.items(), key=lambda item: item[1])
        # The rank was capped by the fit part of S; all of S may hold a few more directions.
        weight, bias = (fit_procrustes(x, y, strength) if method == Merge.ALIGN_PROCRUSTES
                        else fit_cca(x, y, strength, rank))
    return AlignmentMap(
        weight=weight.astype(np.float32),
        bias=bias.astype(np.float32),
        alpha=float(strength),
        fit_residual=unexplained_variance(x @ weight + bias, y),
        holdout_residual=float(holdout),
        method=method,
        rank=int(rank),
    )
