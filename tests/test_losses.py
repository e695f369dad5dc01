"""The training objectives: CoOpt's z-scored cosine loss and BYOL's symmetric loss."""

import pytest
import torch
import torch.nn.functional as F

from coopt_flower.losses import BYOLLoss, CoOptLoss


def _targets(n=32, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * torch.arange(1, dim + 1) + 3


def _stats(targets):
    return targets.mean(0), targets.std(0, unbiased=False)


def test_zero_when_predictions_are_the_z_scored_targets():
    y = _targets()
    loss_fn = CoOptLoss(*_stats(y))
    z = loss_fn.zscore(y)
    assert torch.allclose(z.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(6), atol=1e-5)
    assert float(loss_fn(torch.cat([z, z]), y)) == pytest.approx(0.0, abs=1e-6)
    # Any positive scale of the predictions is as good (cosine), one view or three.
    assert float(loss_fn(torch.cat([5 * z, 0.1 * z, z]), y)) == pytest.approx(0.0, abs=1e-6)
    # Opposite predictions are the worst case.
    assert float(loss_fn(-z, y)) == pytest.approx(2.0, abs=1e-6)


def test_is_the_mean_of_one_minus_cosine_over_views():
    y = _targets()
    pred = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    loss_fn = CoOptLoss(*_stats(y))
    z = (y - y.mean(0)) / y.std(0, unbiased=False)
    per_view = [(1 - F.cosine_similarity(p, z, dim=1)).mean() for p in pred.chunk(2)]
    assert float(loss_fn(pred, y)) == pytest.approx(float(sum(per_view) / 2), abs=1e-6)


def test_invariant_to_target_scale_and_shift():
    y = _targets()
    pred = torch.randn(64, 6, generator=torch.Generator().manual_seed(2))
    base = CoOptLoss(*_stats(y))(pred, y)
    scaled = 1000.0 * y - 7.0  # statistics are taken of the targets the loss sees
    assert float(CoOptLoss(*_stats(scaled))(pred, scaled)) == pytest.approx(float(base), abs=1e-5)


def test_gradient_flows_only_to_predictions():
    y = _targets().requires_grad_(True)
    mean, std = _stats(y.detach())
    loss_fn = CoOptLoss(mean, std)
    assert list(loss_fn.parameters()) == []
    assert {name for name, _ in loss_fn.named_buffers()} == {"mean", "std"}
    pred = torch.randn(64, 6, requires_grad=True)
    loss_fn(pred, y).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert y.grad is None
    assert not loss_fn.mean.requires_grad and not loss_fn.std.requires_grad


def test_statistics_move_with_the_module_and_are_copied():
    mean, std = torch.zeros(3), torch.ones(3)
    loss_fn = CoOptLoss(mean, std).to(torch.float64)  # buffers follow .to like parameters
    mean += 1  # the loss keeps its own copy
    assert loss_fn.mean.dtype == torch.float64 and float(loss_fn.mean.sum()) == 0.0
    assert CoOptLoss([0.0, 1.0], [1.0, 2.0]).std.tolist() == [1.0, 2.0]


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="dimensions"):
        CoOptLoss(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="whole number of views"):
        CoOptLoss(torch.zeros(3), torch.ones(3))(torch.randn(5, 3), torch.randn(2, 3))


def test_byol_loss_is_symmetric_negative_cosine():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    loss = BYOLLoss()(p, z)
    p0, p1, z0, z1 = p[:4], p[4:], z[:4], z[4:]
    cross = -(F.cosine_similarity(p0, z1).mean() + F.cosine_similarity(p1, z0).mean()) / 2
    assert float(loss) == pytest.approx(float(cross), abs=1e-6)
    # Perfect: each view predicts the other's target projection.
    assert float(BYOLLoss()(torch.cat([z1, z0]), z)) == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="two views"):
        BYOLLoss()(torch.randn(3, 5), torch.randn(3, 5))
