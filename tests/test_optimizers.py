"""The optimizers a run can choose and the learning-rate schedule."""

import math

import pytest
import torch
from lightly.utils.lars import LARS

from coopt_flower.optimizers import LARS_TRUST, learning_rate, make_optimizer


def test_learning_rate_warms_up_linearly_then_holds_or_decays_to_zero():
    # Warmup: step s of w gets (s + 1) / w of the peak, the same for both schedules.
    assert [learning_rate(s, 100, 2.0, "constant", 4) for s in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert [learning_rate(s, 100, 2.0, "cosine", 4) for s in range(4)] == [0.5, 1.0, 1.5, 2.0]
    assert learning_rate(99, 100, 2.0, "constant") == 2.0
    cosine = [learning_rate(s, 100, 2.0, "cosine", 4) for s in range(4, 100)]
    assert cosine[0] == 2.0 and cosine[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))  # never rises after the warmup
    # Halfway through the decay the rate is half the peak.
    assert learning_rate(4 + 95 // 2, 100, 2.0, "cosine", 4) == pytest.approx(
        1.0 + math.cos(math.pi * (95 // 2) / 95), rel=1e-12)


def test_make_optimizer_adamw_decays_everything_sgd_and_lars_spare_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    adamw = make_optimizer(model.parameters(), 1e-3, 0.01)
    assert isinstance(adamw, torch.optim.AdamW) and len(adamw.param_groups) == 1
    assert adamw.param_groups[0]["weight_decay"] == 0.01
    for name, kind in (("sgd", torch.optim.SGD), ("lars", LARS)):
        opt = make_optimizer(model.parameters(), 0.1, 5e-4, name, momentum=0.8)
        assert isinstance(opt, kind)
        decayed, spared = opt.param_groups
        assert [p.ndim for p in decayed["params"]] == [2] and decayed["weight_decay"] == 5e-4
        # Linear bias, BN weight and bias: no decay (and, for LARS, no trust-ratio scaling).
        assert [p.ndim for p in spared["params"]] == [1, 1, 1] and spared["weight_decay"] == 0.0
        assert decayed["momentum"] == 0.8
    assert make_optimizer(model.parameters(), 0.1, 0.0, "lars").param_groups[0]["trust_coefficient"] == LARS_TRUST
    with pytest.raises(ValueError, match="adamw, sgd, lars"):
        make_optimizer(model.parameters(), 0.1, 0.0, "adam")
