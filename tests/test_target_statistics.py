"""Target statistics in one streaming pass, from any kind of dataset."""

import torch
from torch.utils.data import Dataset, TensorDataset

from coopt_flower.losses import CoOptLoss
from coopt_flower.target_statistics import target_stats


class _PlainDataset(Dataset):
    """No ``targets`` attribute: statistics must come from one pass over items."""

    def __init__(self, images, targets):
        self.images, self._t = images, targets

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self._t[i]


class _MemmapLikeDataset(_PlainDataset):
    def __init__(self, images, targets):
        super().__init__(images, targets)
        self.targets = targets.numpy()

    def __getitem__(self, i):  # pragma: no cover - must not be needed for stats
        raise AssertionError("target_stats should read .targets, not decode images")


def test_target_stats_streaming_matches_full_computation():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(103, 6, generator=g) * torch.arange(1, 7) + 5
    y[:, 3] = 2.0  # a constant dimension: std floored, no division by zero
    imgs = torch.zeros(103, 3, 4, 4, dtype=torch.uint8)
    for ds in (TensorDataset(imgs, y), _PlainDataset(imgs, y), _MemmapLikeDataset(imgs, y), y):
        stats = target_stats(ds, chunk_size=10)
        assert stats.count == 103
        assert torch.allclose(stats.mean, y.mean(0), atol=1e-5)
        expected_std = y.std(0, unbiased=False).clamp_min(1e-6)
        assert torch.allclose(stats.std, expected_std, rtol=1e-4, atol=1e-6)
    z = CoOptLoss(stats.mean, stats.std).zscore(y)
    assert torch.isfinite(z).all()
