"""Training objectives as ``nn.Module`` losses, the way lightly keeps them.

:class:`CoOptLoss`
    CoOpt's student objective (from ReLA): for an image ``x`` with target ``y``,
    ``1 - cos(head(backbone(aug(x))), z(y))`` averaged over the augmented views, where
    ``z`` is the per-dimension z-score of the targets over the whole dataset.
:class:`HeadsLoss`
    The same objective under ``merge = "heads"``: every participant's targets are z-scored
    with that participant's own statistics (its targets live in its own space).
:class:`BYOLLoss`
    BYOL's symmetric negative cosine similarity between the online prediction of one
    view and the target projection of the other (lightly's
    ``NegativeCosineSimilarity``).

Both take the views stacked along the batch dimension (view 0 of every sample first,
then view 1, ...), which is how the trainers run them: one forward pass per network for
all views, so BatchNorm sees every view.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from torch import nn

__all__ = ["BYOLLoss", "CoOptLoss", "HeadsLoss", "MultiTeacherLoss"]


class CoOptLoss(nn.Module):
    """``1 - cos(prediction, z-scored target)``, averaged over samples and views.

    The z-score statistics are buffers, not parameters: they move with ``.to(device)``
    and receive no gradient, and the targets are detached, so only the predictions are
    trained.

    Parameters
    ----------
    mean, std : Tensor or sequence of float
        Per-dimension mean and standard deviation of the targets over the whole dataset
        (``std`` already floored away from zero, e.g. by
        :func:`coopt_flower.target_statistics.target_stats`).

    Examples
    --------
    >>> loss_fn = CoOptLoss(torch.zeros(3), torch.ones(3))
    >>> targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    >>> float(loss_fn(torch.cat([targets, targets]), targets))  # two perfect views
    0.0
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"mean has {mean.numel()} dimensions but std has {std.numel()}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def zscore(self, targets: torch.Tensor) -> torch.Tensor:
        """``(targets - mean) / std``, as float32 on the statistics' device."""
        targets = targets.detach().to(self.mean.device, torch.float32)
        return (targets - self.mean) / self.std

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean of ``1 - cos`` over all ``(view, sample)`` pairs.

        Parameters
        ----------
        predictions : Tensor
            ``(V * B, n)``: the student's outputs for ``V`` views of ``B`` samples,
            stacked view after view.
        targets : Tensor
            ``(B, n)``: the raw (not z-scored) targets of the ``B`` samples.
        """
        views, rest = divmod(len(predictions), len(targets))
        if rest or views < 1:
            raise ValueError(
                f"{len(predictions)} predictions are not a whole number of views of "
                f"{len(targets)} targets"
            )
        z = self.zscore(targets)
        return (1.0 - F.cosine_similarity(predictions, torch.cat([z] * views), dim=1)).mean()


class HeadsLoss(nn.Module):
    """``1 - cos(prediction, z_k(target))`` with ``z_k`` the z-score of owner ``k``'s targets.

    Parameters
    ----------
    mean, std : Tensor
        ``(K, n)``: per-owner, per-dimension statistics of the targets (``std`` floored away
        from zero). Buffers, like :class:`CoOptLoss`'s.

    Examples
    --------
    >>> loss_fn = HeadsLoss(torch.zeros(2, 3), torch.ones(2, 3))
    >>> targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    >>> float(loss_fn(torch.cat([targets, targets]), targets, torch.tensor([0, 1])))
    0.0
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32)
        if mean.ndim != 2 or mean.shape != std.shape:
            raise ValueError(f"mean and std must both be (owners, n), got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def zscore(self, targets: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        """Each row z-scored with its owner's statistics (float32, on the statistics' device)."""
        targets = targets.detach().to(self.mean.device, torch.float32)
        owners = owners.to(self.mean.device, torch.long)
        return (targets - self.mean[owners]) / self.std[owners]

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor,
                owners: torch.Tensor) -> torch.Tensor:
        """Mean of ``1 - cos`` over all ``(view, sample)`` pairs.

        Parameters
        ----------
        predictions : Tensor
            ``(V * B, n)``: each view's output of its sample's owner's head, view after view.
        targets : Tensor
            ``(B, n)`` raw targets.
        owners : Tensor
            ``(B,)`` owner index of every sample.
        """
        views, rest = divmod(len(predictions), len(targets))
        if rest or views < 1 or len(owners) != len(targets):
            raise ValueError(f"{len(predictions)} predictions, {len(targets)} targets and "
                             f"{len(owners)} owners do not make whole views of one batch")
        z = self.zscore(targets, owners)
        return (1.0 - F.cosine_similarity(predictions, torch.cat([z] * views), dim=1)).mean()


class MultiTeacherLoss(HeadsLoss):
    """Weighted mean of ``1 - cos(head_k, z_k(target_k))`` over views, samples and heads.

    The ``merge = "multi-teacher"`` loss (:mod:`coopt_flower.multi_teacher`): every head is
    trained on every sample, towards its owner's exact target or one predicted from it,
    weighted by how well the map predicts (1 for exact targets). ``mean``/``std`` are per
    head, as in :class:`HeadsLoss`.

    Examples
    --------
    >>> loss_fn = MultiTeacherLoss(torch.zeros(2, 3), torch.ones(2, 3))
    >>> targets = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    >>> float(loss_fn(targets, targets, torch.ones(1, 2)))
    0.0
    """

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                weights: torch.Tensor) -> torch.Tensor:
        """
        Parameters
        ----------
        predictions : Tensor
            ``(V * B, K, n)``: every head's output for each view, view after view.
        targets : Tensor
            ``(B, K, n)`` raw targets of every head.
        weights : Tensor
            ``(B, K)`` non-negative weight of each target.
        """
        views, rest = divmod(len(predictions), len(targets))
        if rest or views < 1 or predictions.shape[1:] != targets.shape[1:] or weights.shape != targets.shape[:2]:
            raise ValueError(f"predictions {tuple(predictions.shape)}, targets {tuple(targets.shape)} and "
                             f"weights {tuple(weights.shape)} do not make whole views of one batch")
        z = (targets.detach().to(self.mean.device, torch.float32) - self.mean) / self.std
        cos = F.cosine_similarity(predictions, torch.cat([z] * views), dim=2)
        w = torch.cat([weights.to(cos.device, cos.dtype)] * views)
        return ((1.0 - cos) * w).sum() / w.sum().clamp_min(1e-12)


class BYOLLoss(nn.Module):
    """Symmetric BYOL loss of two views (range [-1, 1]; -1 is perfect).

    ``0.5 * (ncs(p0, z1) + ncs(p1, z0))`` with ``ncs`` lightly's
    ``NegativeCosineSimilarity``, ``p`` the online predictions and ``z`` the target
    network's projections.
    """

    def __init__(self) -> None:
        super().__init__()
        self.criterion = NegativeCosineSimilarity()

    def forward(self, predictions: torch.Tensor, target_projections: torch.Tensor) -> torch.Tensor:
        """Both arguments are ``(2 * B, d)``: view 0 of the ``B`` samples, then view 1."""
        if len(predictions) % 2 or len(predictions) != len(target_projections):
            raise ValueError("expected two views of the same samples for predictions and targets")
        p0, p1 = predictions.chunk(2)
        z0, z1 = target_projections.chunk(2)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
