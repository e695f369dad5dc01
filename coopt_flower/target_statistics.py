"""Per-dimension statistics of a dataset's targets, the z-score of CoOpt's objective.

:class:`coopt_flower.losses.CoOptLoss` (and, per participant, :class:`~coopt_flower.losses.HeadsLoss`)
z-scores every target with the mean and standard deviation of the targets over the whole
dataset; :func:`target_stats` computes them in one streaming pass, without decoding an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["TargetStats", "target_stats"]


@dataclass
class TargetStats:
    """Per-dimension mean and standard deviation of the targets.

    :class:`coopt_flower.losses.CoOptLoss` z-scores the targets with them.

    Attributes
    ----------
    mean, std : Tensor
        float32 ``(n,)``; ``std`` is floored at ``eps`` so constant dimensions do
        not divide by zero.
    count : int
        Number of target rows seen.
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: int


def _target_chunks(dataset: Any, chunk_size: int, num_workers: int) -> Iterator[torch.Tensor]:
    # Fast paths read the target array directly (a memory map for OptimizedDataset),
    # so computing the statistics does not decode a single image.
    if isinstance(dataset, (torch.Tensor, np.ndarray)):
        targets = dataset
    elif isinstance(dataset, TensorDataset):
        targets = dataset.tensors[1]
    else:
        targets = getattr(dataset, "targets", None)
        if targets is not None and (getattr(targets, "ndim", 0) != 2 or len(targets) != len(dataset)):
            targets = None  # e.g. torchvision's class-label lists: not ours
    if targets is not None:
        for start in range(0, len(targets), chunk_size):
            chunk = targets[start : start + chunk_size]
            # np.array copies: read-only memory maps cannot back a tensor.
            yield chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))
        return
    loader = DataLoader(dataset, batch_size=chunk_size, shuffle=False, num_workers=num_workers)
    for _, y in loader:
        yield y


def target_stats(
    dataset: Any, *, chunk_size: int = 8192, eps: float = 1e-6, num_workers: int = 0
) -> TargetStats:
    """Per-dimension mean/std of the targets in one streaming pass.

    Chunks are merged with Chan et al.'s parallel update in float64, so the
    result is exact to rounding without holding all targets in memory.

    Parameters
    ----------
    dataset : Dataset, Tensor or ndarray
        A dataset of ``(image, target)`` (its ``targets`` attribute or a
        ``TensorDataset``'s second tensor is read directly when available), or
        the ``(N, n)`` targets themselves.
    chunk_size : int
        Rows per chunk.
    eps : float
        Floor of the standard deviation.
    """
    return chunk_stats(_target_chunks(dataset, chunk_size, num_workers), eps=eps)


def chunk_stats(chunks: Iterable[torch.Tensor], *, eps: float = 1e-6) -> TargetStats:
    """:func:`target_stats` of targets given as ``(rows, n)`` chunks (e.g. off a stream)."""
    count = 0
    mean: Optional[torch.Tensor] = None
    m2: Optional[torch.Tensor] = None
    for chunk in chunks:
        chunk = chunk.to(torch.float64).reshape(len(chunk), -1)
        n_b = chunk.shape[0]
        if n_b == 0:
            continue
        mean_b = chunk.mean(0)
        m2_b = ((chunk - mean_b) ** 2).sum(0)
        if mean is None:
            mean, m2, count = mean_b, m2_b, n_b
            continue
        total = count + n_b
        delta = mean_b - mean
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta**2 * (count * n_b / total)
        count = total
    if mean is None or m2 is None:
        raise ValueError("cannot compute target statistics of an empty dataset")
    std = torch.sqrt(m2 / count).clamp_min(eps)
    return TargetStats(mean.float(), std.float(), count)
