"""Refinement policies (coopt_flower.refinement): who encodes with the round's student."""

import numpy as np

from coopt_flower.refinement import embedding_tolerance, relative_difference


def test_embedding_tolerance_follows_the_least_precise_arithmetic():
    assert embedding_tolerance("fp32", "cpu") < embedding_tolerance("fp32", "cuda") < embedding_tolerance("bf16", "cuda")
    assert embedding_tolerance("bf16", "cpu") == embedding_tolerance("fp32", "cpu")  # no autocast on a CPU
    a = np.ones((4, 3))
    assert relative_difference(a, a) == 0.0 and abs(relative_difference(1.1 * a, a) - 0.1) < 1e-12
