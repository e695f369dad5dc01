"""Label-free scores that pick the reference prototype from its embeddings of the shared subset S.

CoOpt aligns every participant to one reference; which one is chosen decides the whole
dataset's target space. The paper's score is the uniform value (lower is better): how evenly a
prototype spreads the images on the unit sphere, Wang & Isola (2020)'s uniformity
``log E_{i != j} exp(-t ||f_i - f_j||^2)`` over L2-normalized features ``f``. (The paper
prints ``exp(+tau ...)``; with "lower is better" the exponent must be negative, as it is
here.) The alternatives use nothing but the prototypes' embeddings of S too:

- ``rankme``: effective rank of the L2-normalized embedding (Garrido et al., ICML 2023):
  ``exp`` of the entropy of its normalized singular values; higher = less collapsed.
- ``consensus``: mean held-out R^2 of ridge maps from every other prototype's embedding of S
  to this one; higher = this space holds more of what the others see (and less that no other
  prototype can predict, such as noise).
- ``knn``: mean overlap of each image's k nearest neighbours (cosine) with its neighbours in
  the other prototypes' spaces; higher = the neighbourhoods agree with the pool's.

``rankme`` and ``uniform`` score a prototype on its own; ``consensus`` and ``knn`` score it
against the pool, so they need at least two prototypes (with one, every value is 0).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from coopt_flower.alignment import fit_alignment

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


#: Values of the run-config key ``reference-score`` (``uniform`` is the paper's).
REFERENCE_SCORES = ("uniform", "rankme", "consensus", "knn")
#: Direction of every score: ``True`` where the highest value wins.
HIGHER_IS_BETTER = {"uniform": False, "rankme": True, "consensus": True, "knn": True}
DEFAULT_KNN = 10


def rankme(features: np.ndarray, eps: float = 1e-7) -> float:
    """Effective rank of ``(m, n)`` embeddings, in ``[1, min(m, n)]`` (higher is better).

    Rows are L2-normalized (not centered, as in Garrido et al.); ``p = sigma / sum(sigma)`` of
    the singular values, and the score is ``exp(-sum p log p)``.
    """
    sigma = np.linalg.svd(l2_normalize(features), compute_uv=False)
    p = sigma / max(sigma.sum(), eps) + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def cross_prediction_consensus(embeddings: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Mean held-out R^2 (``1 - held-out residual``) of the ridge maps from every other
    prototype to each prototype (higher is better; 0 for a pool of one)."""
    names = sorted(embeddings)
    out = {}
    for target in names:
        r2 = [1.0 - fit_alignment(embeddings[source], embeddings[target], seed=seed).holdout_residual
              for source in names if source != target]
        out[target] = float(np.mean(r2)) if r2 else 0.0
    return out


def knn_sets(features: np.ndarray, k: int) -> np.ndarray:
    """``(m, k)`` indices of every row's ``k`` nearest other rows by cosine similarity."""
    f = l2_normalize(features)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    # Ties (duplicate rows) are broken by index, so the sets do not depend on the sort's mood.
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def knn_agreement(embeddings: Mapping[str, np.ndarray], k: int = DEFAULT_KNN) -> dict[str, float]:
    """Mean fraction of shared neighbours between each prototype's k-NN sets and every other
    prototype's (higher is better; 0 for a pool of one)."""
    names = sorted(embeddings)
    m = next(iter(embeddings.values())).shape[0]
    k = max(1, min(k, m - 1))
    # Neighbour sets as a 0/1 (m, m) matrix per prototype: overlaps become one product each.
    member = {}
    for name in names:
        hits = np.zeros((m, m), np.float32)
        np.put_along_axis(hits, knn_sets(embeddings[name], k), 1.0, axis=1)
        member[name] = hits
    out = {}
    for a in names:
        overlaps = [float(np.sum(member[a] * member[b]) / (m * k)) for b in names if b != a]
        out[a] = float(np.mean(overlaps)) if overlaps else 0.0
    return out


def score_prototypes(embeddings: Mapping[str, np.ndarray], *, seed: int = 0,
                     scores: tuple[str, ...] = REFERENCE_SCORES) -> dict[str, dict[str, float]]:
    """Every requested score of every prototype: ``{score: {name: value}}``.

    Parameters
    ----------
    embeddings : mapping
        Prototype name -> ``(|S|, n)`` embeddings of the shared subset (same rows for all).
    seed : int
        Seeds the held-out split of the ``consensus`` ridge maps.
    """
    unknown = [s for s in scores if s not in REFERENCE_SCORES]
    if unknown:
        raise ValueError(f"unknown reference score {unknown[0]!r}: use one of {', '.join(REFERENCE_SCORES)}")
    out: dict[str, dict[str, float]] = {}
    for score in scores:
        if score == "uniform":
            out[score] = {name: uniform_value(emb) for name, emb in embeddings.items()}
        elif score == "rankme":
            out[score] = {name: rankme(emb) for name, emb in embeddings.items()}
        elif score == "consensus":
            out[score] = cross_prediction_consensus(embeddings, seed=seed)
        else:
            out[score] = knn_agreement(embeddings)
    return out


def select_reference(values: Mapping[str, float], higher_is_better: bool) -> str:
    """The best-scoring key (ties: first in sorted key order)."""
    if not values:
        raise ValueError("no scores to choose a reference from")
    sign = -1.0 if higher_is_better else 1.0
    return min(sorted(values), key=lambda key: sign * values[key])
