import numpy as np
import pytest

from coopt_flower.scores import (HIGHER_IS_BETTER, REFERENCE_SCORES, knn_agreement, rankme,
                                 score_prototypes, select_reference)


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
