"""Label-free scores on S (coopt_flower.scores): the uniform value and the alternatives."""

import itertools

import numpy as np
import pytest

from coopt_flower.scores import (HIGHER_IS_BETTER, REFERENCE_SCORES, knn_agreement, l2_normalize, rankme,
                                 score_prototypes, select_reference, uniform_value)


def _pool(seed: int = 0, m: int = 300, n: int = 64):
    """Peers that see one latent structure, and three candidates to rank.

    - ``spread``: the latent, well spread over many centered directions (a good prototype);
    - ``random``: like a random-init network: one large common direction (every cosine
      similarity high), a weak trace of the latent, and unrelated noise;
    - ``collapsed``: every image on nearly one point, carrying no information.
    """
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(m, 16))
    peers = {f"peer{i}": latent @ rng.normal(size=(16, n)) + 0.3 * rng.normal(size=(m, n)) for i in range(3)}
    spread = latent @ rng.normal(size=(16, n)) + 0.3 * rng.normal(size=(m, n))
    offset = 6.0 * rng.normal(size=n)
    random = offset + 0.3 * (latent @ rng.normal(size=(16, n))) + rng.normal(size=(m, n)) * np.linspace(2, 0.1, n)
    collapsed = rng.normal(size=n) + 1e-3 * rng.normal(size=(m, n))
    return {**peers, "spread": spread, "random": random, "collapsed": collapsed}


@pytest.mark.parametrize("score", REFERENCE_SCORES)
def test_every_score_ranks_spread_over_random_over_collapsed(score):
    values = score_prototypes(_pool(), seed=0, scores=(score,))[score]
    sign = 1.0 if HIGHER_IS_BETTER[score] else -1.0
    assert sign * values["spread"] > sign * values["random"] > sign * values["collapsed"], values
    trio = {k: values[k] for k in ("spread", "random", "collapsed")}
    assert select_reference(trio, HIGHER_IS_BETTER[score]) == "spread"


def test_rankme_bounds():
    rng = np.random.default_rng(1)
    assert rankme(np.ones((50, 8))) == pytest.approx(1.0, abs=1e-3)
    iso = rankme(rng.normal(size=(4000, 8)))
    assert 7.5 < iso <= 8.0


def test_knn_agreement_is_one_for_the_same_space_up_to_scale():
    x = np.random.default_rng(2).normal(size=(100, 10))
    assert knn_agreement({"a": x, "b": 3.0 * x}) == {"a": 1.0, "b": 1.0}


def test_relational_scores_of_a_single_prototype_are_zero():
    x = np.random.default_rng(3).normal(size=(40, 8))
    values = score_prototypes({"only": x})
    assert values["consensus"] == {"only": 0.0} and values["knn"] == {"only": 0.0}


def test_select_reference_follows_the_direction_and_breaks_ties_by_name():
    assert select_reference({"a": 1.0, "b": 2.0}, higher_is_better=True) == "b"
    assert select_reference({"a": 1.0, "b": 2.0}, higher_is_better=False) == "a"
    assert select_reference({"b": 1.0, "a": 1.0}, higher_is_better=True) == "a"
    with pytest.raises(ValueError, match="unknown reference score"):
        score_prototypes({"a": np.ones((4, 2))}, scores=("nope",))


# ------------------------------------------------------------------ the uniform value

def brute_force_uniformity(features, t=2.0):
    f = [v / np.linalg.norm(v) for v in np.asarray(features, np.float64)]
    terms = [np.exp(-t * np.sum((f[i] - f[j]) ** 2))
             for i, j in itertools.permutations(range(len(f)), 2)]
    return float(np.log(np.mean(terms)))


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniform_value_matches_brute_force(t):
    features = np.random.default_rng(0).normal(size=(17, 6))
    assert uniform_value(features, t=t) == pytest.approx(brute_force_uniformity(features, t), rel=1e-10)


def test_collapsed_embedding_scores_worse_than_spread_one():
    rng = np.random.default_rng(1)
    spread = rng.normal(size=(200, 32))
    collapsed = np.ones((200, 32)) + 0.01 * rng.normal(size=(200, 32))
    assert uniform_value(collapsed) > uniform_value(spread) + 1.0
    # A fully collapsed embedding reaches the maximum, log(1) = 0.
    assert uniform_value(np.ones((10, 4))) == pytest.approx(0.0, abs=1e-12)


def test_uniform_value_ignores_scale():
    features = np.random.default_rng(2).normal(size=(30, 8))
    assert uniform_value(features) == pytest.approx(uniform_value(features * 37.0))


def test_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        uniform_value(np.ones((1, 4)))


def test_l2_normalize_unit_rows_and_zero_rows_stay_finite():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(out[0], [0.6, 0.8]) and np.all(np.isfinite(out))


