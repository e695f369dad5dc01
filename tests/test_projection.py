import numpy as np
import pytest

from coopt_flower.projection import project, projection_matrix


def test_projection_is_deterministic_per_seed_and_differs_across_seeds():
    a, b = projection_matrix(1280, 512, seed=7), projection_matrix(1280, 512, seed=7)
    assert a.shape == (1280, 512) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.allclose(a, projection_matrix(1280, 512, seed=8))


def test_prototypes_of_different_width_get_independent_matrices():
    wide, narrow = projection_matrix(1280, 64, 0), projection_matrix(1024, 64, 0)
    assert not np.allclose(wide[:1024], narrow)


def test_projection_preserves_norms_on_average():
    x = np.random.default_rng(0).normal(size=(256, 1024)).astype(np.float32)
    y = project(x, projection_matrix(1024, 512, 0))
    ratio = np.linalg.norm(y, axis=1) / np.linalg.norm(x, axis=1)
    assert y.shape == (256, 512) and abs(ratio.mean() - 1.0) < 0.05


def test_project_rejects_wrong_width():
    with pytest.raises(ValueError, match="do not match"):
        project(np.ones((2, 10)), projection_matrix(12, 4, 0))
