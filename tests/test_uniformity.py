import itertools

import numpy as np
import pytest

from coopt_flower.uniformity import l2_normalize, select_reference, uniform_value


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


def test_select_reference_takes_lowest():
    assert select_reference({"a": -1.0, "b": -3.5, "c": -2.0}) == "b"
    with pytest.raises(ValueError):
        select_reference({})
