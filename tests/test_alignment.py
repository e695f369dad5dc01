import numpy as np
import pytest

from coopt_flower.alignment import AlignmentMap, fit_alignment, fit_ridge, unexplained_variance
from coopt_flower.merges import ALIGN_METHODS


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

def test_a_whitened_map_survives_an_svd_that_does_not_converge(monkeypatch):
    """LAPACK's gesdd can fail to converge on a finite matrix (seen on one processor family):
    the map is then found from the transpose's decomposition, and is the same map."""
    from coopt_flower import alignment

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=(6, 6)) + 0.01 * rng.normal(size=(80, 6))
    expected = alignment.fit_procrustes(x, y, 0.1)
    real, calls = np.linalg.svd, []

    def flaky(matrix, full_matrices=True):
        calls.append(matrix.shape)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("SVD did not converge")
        return real(matrix, full_matrices=full_matrices)

    monkeypatch.setattr(alignment.np.linalg, "svd", flaky)
    weight, bias = alignment.fit_procrustes(x, y, 0.1)
    assert len(calls) == 2
    np.testing.assert_allclose(weight, expected[0], atol=1e-10)
    np.testing.assert_allclose(bias, expected[1], atol=1e-10)
