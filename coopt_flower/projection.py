"""Seeded random projections that map every prototype's features to one common dimension.

Participant k computes ``y = W_k psi_k(x)`` with ``W_k`` a fixed Gaussian matrix of shape
``(d_k, n)``. The matrix depends only on ``(seed, d_k, n)``, so any machine rebuilds the same
one from the run's seed without shipping it.
"""

from __future__ import annotations

import numpy as np


def projection_matrix(input_dim: int, output_dim: int, seed: int) -> np.ndarray:
    """Gaussian random projection ``(input_dim, output_dim)`` in float32.

    Entries are N(0, 1/output_dim) so squared norms are preserved in expectation
    (Johnson-Lindenstrauss), which keeps targets of different prototypes on one scale.
    """
    if input_dim <= 0 or output_dim <= 0:
        raise ValueError(f"projection dims must be positive, got {input_dim} -> {output_dim}")
    # Seeding with the dims too gives prototypes of different widths independent matrices.
    rng = np.random.default_rng([int(seed), int(input_dim), int(output_dim)])
    matrix = rng.standard_normal((input_dim, output_dim)) / np.sqrt(output_dim)
    return matrix.astype(np.float32)


def project(features: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a projection to ``(batch, d_k)`` features; returns float32 ``(batch, n)``."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != matrix.shape[0]:
        raise ValueError(
            f"features of shape {features.shape} do not match a projection from "
            f"{matrix.shape[0]} dims"
        )
    return features @ matrix
