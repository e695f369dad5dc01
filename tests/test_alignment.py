import numpy as np
import pytest

from coopt_flower.alignment import (ALIGN_METHODS, AlignmentMap, fit_alignment, fit_ridge, plan_alignment,
                                    unexplained_variance)
from coopt_flower.uniformity import uniform_value


def test_ridge_recovers_known_affine_map_from_noisy_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16))
    true_w, true_b = rng.normal(size=(16, 16)), rng.normal(size=16)
    y = x @ true_w + true_b + 0.01 * rng.normal(size=(2000, 16))
    weight, bias = fit_ridge(x, y, alpha=1e-6)
    assert np.allclose(weight, true_w, atol=5e-3)
    assert np.allclose(bias, true_b, atol=5e-3)


def test_fit_alignment_picks_alpha_and_reports_residuals():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 12))
    y = x @ rng.normal(size=(12, 12)) + 3.0 + 0.05 * rng.normal(size=(400, 12))
    m = fit_alignment(x, y, seed=0)
    assert m.fit_residual < 0.01 and m.holdout_residual < 0.02
    assert np.allclose(m.apply(x), y, atol=0.3)
    # Unrelated targets cannot be explained: the held-out residual says so.
    noise = fit_alignment(x, rng.normal(size=(400, 12)), seed=0)
    assert noise.holdout_residual > 0.9


def test_regularizer_makes_fewer_pairs_than_dims_well_posed():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64))
    m = fit_alignment(x, y, seed=0)
    assert np.all(np.isfinite(m.weight)) and m.alpha > 0


def test_reference_targets_come_out_unchanged():
    targets = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    identity = AlignmentMap.identity(8)
    assert identity.is_identity
    assert np.array_equal(identity.apply(targets), targets)


def test_unexplained_variance_bounds():
    y = np.random.default_rng(4).normal(size=(50, 3))
    assert unexplained_variance(y, y) == 0.0
    assert unexplained_variance(np.broadcast_to(y.mean(0), y.shape), y) == pytest.approx(1.0)


def test_rejects_mismatched_or_tiny_inputs():
    with pytest.raises(ValueError, match="paired"):
        fit_alignment(np.ones((10, 3)), np.ones((9, 3)))
    with pytest.raises(ValueError, match="too small"):
        fit_alignment(np.ones((3, 3)), np.ones((3, 3)))


def test_plan_picks_most_uniform_reference_and_aligns_others():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(300, 16))
    # A participant whose space is an affine image of the reference, but squashed together.
    squashed = good @ (0.1 * rng.normal(size=(16, 16))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0)
    assert plan.reference == "b"
    assert plan.uniform_values["b"] == uniform_value(good)
    assert plan.maps["b"].is_identity
    assert plan.maps["a"].holdout_residual < 1e-3
    assert np.allclose(plan.maps["a"].apply(squashed), good, atol=0.05)


def test_candidate_can_become_reference_and_its_users_get_identity():
    rng = np.random.default_rng(1)
    student = rng.normal(size=(200, 8))
    own = student @ (0.2 * rng.normal(size=(8, 8))) + 1.0 + 0.5   # squashed: less uniform
    plan = plan_alignment({"a": own, "b": student.copy()}, seed=0, candidates={"student": student})
    # b runs the student's encoder: a tie, either name stands for the same space.
    assert plan.reference in ("b", "student") and set(plan.maps) == {"a", "b"}
    plan = plan_alignment({"a": own}, seed=0, candidates={"student": student})
    assert plan.reference == "student" and set(plan.maps) == {"a"}
    assert not plan.maps["a"].is_identity and "student" in plan.uniform_values
    plan = plan_alignment({"a": own, "b": student.copy()}, seed=0, candidates={"student": student})
    assert plan.maps["b"].is_identity


def test_plan_without_alignment_scores_all_but_maps_nothing():
    rng = np.random.default_rng(2)
    good = rng.normal(size=(100, 8))
    squashed = good @ (0.1 * rng.normal(size=(8, 8))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0, align=False)
    assert plan.reference == "b" and set(plan.uniform_values) == {"a", "b"}
    assert plan.maps["a"].is_identity and plan.maps["b"].is_identity


def _rotated_scaled_pairs(seed: int, m: int = 2000, n: int = 16, noise: float = 0.01):
    """Anisotropic Gaussian x and y = x @ (random rotation * per-axis scaling) + b + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n)) * np.linspace(0.5, 3.0, n)
    rotation, _ = np.linalg.qr(rng.normal(size=(n, n)))
    true_w, true_b = rotation * rng.uniform(0.5, 2.0, size=n), rng.normal(size=n)
    return x, x @ true_w + true_b + noise * rng.normal(size=(m, n)), true_w, true_b


@pytest.mark.parametrize("method", ALIGN_METHODS)
def test_every_alignment_recovers_a_known_rotation_and_scaling(method):
    x, y, true_w, true_b = _rotated_scaled_pairs(5)
    m = fit_alignment(x, y, method=method, seed=0)
    assert m.method == method
    assert m.holdout_residual < 1e-3 and m.fit_residual < 1e-3
    assert np.allclose(m.weight, true_w, atol=0.02)
    assert np.allclose(m.bias, true_b, atol=0.05)


@pytest.mark.parametrize("method", ["align-procrustes", "align-cca"])
def test_whitened_alignments_stay_finite_and_honest_with_fewer_pairs_than_dims(method):
    rng = np.random.default_rng(6)
    latent = rng.normal(size=(60, 8))
    x = latent @ rng.normal(size=(8, 64)) + 0.1 * rng.normal(size=(60, 64))
    y = latent @ rng.normal(size=(8, 64)) + 0.1 * rng.normal(size=(60, 64))
    m = fit_alignment(x, y, method=method, seed=0)
    assert np.all(np.isfinite(m.weight)) and 0 < m.alpha <= 1
    assert m.holdout_residual < 0.3            # the shared 8-d latent is found from 48 pairs
    if method == "align-cca":
        assert 1 <= m.rank < 64                # fewer directions than dims are kept
    unrelated = fit_alignment(x, rng.normal(size=(60, 64)), method=method, seed=0)
    assert unrelated.holdout_residual > 0.9


def test_unknown_alignment_method_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown alignment method 'align-magic'"):
        fit_alignment(np.ones((10, 3)), np.ones((10, 3)), method="align-magic")


def test_plan_uses_the_requested_method_and_reference_score():
    rng = np.random.default_rng(7)
    good = rng.normal(size=(300, 16))
    squashed = good @ (0.1 * rng.normal(size=(16, 16))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0, method="align-procrustes",
                          reference_score="rankme")
    assert plan.merge == "align-procrustes" and plan.reference_score == "rankme"
    assert plan.reference == "b" and plan.maps["a"].method == "align-procrustes"
    assert set(plan.scores) == {"uniform", "rankme", "consensus", "knn"}
    assert plan.scores["uniform"] == plan.uniform_values
    with pytest.raises(ValueError, match="unknown reference score"):
        plan_alignment({"a": good}, reference_score="vibes")
