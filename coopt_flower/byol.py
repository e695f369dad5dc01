"""BYOL baseline on the same student, augmentations, batch size and optimizer.

Built from lightly's pieces (``BYOLProjectionHead``, ``BYOLPredictionHead``,
``deactivate_requires_grad``, ``update_momentum``, ``cosine_schedule``, and
``NegativeCosineSimilarity`` inside :class:`coopt_flower.losses.BYOLLoss`), following the BYOL paper (Grill et al. 2020):

- online network: backbone -> projection MLP (hidden 4096, BN, ReLU, out 256)
  -> prediction MLP (same shape);
- target network: an exponential moving average of backbone + projection, no
  gradients;
- loss: symmetric negative cosine similarity between the online prediction of one
  view and the target projection of the other;
- target momentum rises from 0.99 to 1.0 on a cosine schedule over all training
  steps, updated after every optimizer step.

What is shared with CoOpt for a fair comparison: the student (any
:func:`coopt_flower.students.create_student` name), :class:`TrainAugment`, the
batch size, the epochs, two views per image per step. The optimizer is the shared
AdamW by default (recipe ``"shared"``); :data:`BYOL_RECIPES` names the optimizer
recipes the self-supervised libraries document for small images, which
:func:`byol_train_config` applies to a run's settings (BYOL is known to need them:
with AdamW at a constant rate it can collapse on some students in short runs).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

try:
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule
except ImportError as error:  # the baseline is an extra: the product does not need it
    raise ImportError("the BYOL baseline needs lightly: pip install 'coopt-flower[baselines]'") from error

from coopt_flower.images import as_nchw_images
from coopt_flower.inputs import on_device
from coopt_flower.losses import BYOLLoss
from coopt_flower.training_loop import (
    EpochCallback,
    FitResult,
    Recipe,
    TrainConfig,
    fit,
    num_batches,
    tensor_batches,
)

__all__ = ["BYOL", "BYOL_RECIPES", "ByolResult", "byol_loss", "byol_momentum", "byol_step",
           "byol_train_config", "train_byol"]

#: Optimizer recipes for BYOL: ``TrainConfig`` fields each one sets. ``lr_per_256`` is the
#: peak learning rate at batch size 256, scaled linearly to the run's batch size (the
#: libraries' rule); the warmup is one epoch (they warm up for 1-2% of 500-1000 epochs,
#: which at a 10-epoch budget would be a fraction of an epoch).
BYOL_RECIPES: dict[str, dict[str, Any]] = {
    # The optimizer every method shares (AdamW, constant rate): no BYOL-specific change.
    "shared": {},
    # AdamW with a warmup and a cosine decay to 0, at the rate it was chosen with (0.001 at
    # batch 64), whatever the rows' rate (the benchmark's CoOpt rate is chosen separately).
    "adamw-cosine": {"lr_per_256": 0.004, "lr_schedule": "cosine", "warmup_epochs": 1.0},
    # SGD as in mmselfsup's CIFAR-10 BYOL (ReSSL's setting): lr 0.06 per 256, momentum 0.9,
    # weight decay 5e-4, warmup then cosine.
    "sgd-cosine": {"optimizer": "sgd", "lr_per_256": 0.06, "weight_decay": 5e-4,
                   "momentum": 0.9, "lr_schedule": "cosine", "warmup_epochs": 1.0},
    # SGD as in lightly's CIFAR-10 benchmark: lr 0.06 per 128 (twice mmselfsup's), momentum
    # 0.9, weight decay 5e-4, cosine decay to 0 without a warmup.
    "sgd-cosine-lightly": {"optimizer": "sgd", "lr_per_256": 0.12, "weight_decay": 5e-4,
                           "momentum": 0.9, "lr_schedule": "cosine"},
    # LARS as in solo-learn's CIFAR BYOL: lr 1.0 per 256, weight decay 1e-5, trust
    # coefficient 0.02, biases and norms excluded, warmup then cosine.
    "lars-cosine": {"optimizer": "lars", "lr_per_256": 1.0, "weight_decay": 1e-5,
                    "momentum": 0.9, "lr_schedule": "cosine", "warmup_epochs": 1.0},
}


def byol_train_config(config: TrainConfig, recipe: str = "shared") -> TrainConfig:
    """``config`` with the optimizer settings of BYOL recipe ``recipe`` (:data:`BYOL_RECIPES`).

    Everything that makes the comparison fair (student, data, augmentations, batch size,
    epochs, seed, device) is kept.
    """
    if recipe not in BYOL_RECIPES:
        raise ValueError(f"unknown BYOL recipe {recipe!r}; known: {', '.join(BYOL_RECIPES)}")
    changes = dict(BYOL_RECIPES[recipe])
    if "lr_per_256" in changes:
        changes["lr"] = changes.pop("lr_per_256") * config.batch_size / 256
    return dataclasses.replace(config, **changes)


class BYOL(nn.Module):
    """Online and target networks around a student backbone.

    Parameters
    ----------
    backbone : nn.Module
        Student with ``feature_dim``.
    hidden_dim, proj_dim : int
        Projection/prediction MLP sizes (paper: 4096 and 256).
    """

    def __init__(self, backbone: nn.Module, hidden_dim: int = 4096, proj_dim: int = 256):
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(backbone.feature_dim, hidden_dim, proj_dim)
        self.prediction_head = BYOLPredictionHead(proj_dim, hidden_dim, proj_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Online prediction ``q(g(f(x)))``."""
        return self.prediction_head(self.projection_head(self.backbone(x)))

    @torch.no_grad()
    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        """Target projection ``g'(f'(x))``, without gradients."""
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()

    def online_parameters(self):
        """Parameters the optimizer trains (the target network has none)."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA update of the target network: ``t <- m t + (1 - m) o``."""
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)


_criterion = BYOLLoss()


def _views_loss(model: BYOL, views: torch.Tensor) -> torch.Tensor:
    # Both views go through each network as one batch (one forward per network).
    return _criterion(model(views), model.forward_momentum(views))


def byol_loss(model: BYOL, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Symmetric BYOL loss of two augmented views (range [-1, 1]; -1 is perfect)."""
    return _views_loss(model, torch.cat([x0, x1]))


def byol_momentum(step: int, total_steps: int, start: float = 0.99, end: float = 1.0) -> float:
    """Target momentum at ``step`` of ``total_steps`` (cosine from ``start`` to ``end``)."""
    return float(cosine_schedule(step, max(total_steps, 1), start, end))


def byol_step(
    model: BYOL,
    optimizer: torch.optim.Optimizer,
    x0: torch.Tensor,
    x1: torch.Tensor,
    momentum: float,
) -> float:
    """One optimizer step on the online network, then the target's EMA update.

    Returns the loss as a float.
    """
    loss = byol_loss(model, x0, x1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.update_target(momentum)
    return float(loss.detach())


@dataclass(kw_only=True)
class ByolResult(FitResult):
    """What :func:`train_byol` returns.

    Attributes
    ----------
    model : BYOL
        All networks (heads and target included); ``backbone`` is the online student
        (what is probed), in eval mode.
    momentums : list of float
        Target momentum at the end of each epoch.

    The other attributes are those of :class:`~coopt_flower.training_loop.FitResult`.
    """

    momentums: list[float] = field(default_factory=list)


def train_byol(
    images: Any,
    config: Optional[TrainConfig] = None,
    *,
    momentum_start: float = 0.99,
    momentum_end: float = 1.0,
    hidden_dim: int = 4096,
    proj_dim: int = 256,
    on_epoch_end: Optional[EpochCallback] = None,
) -> ByolResult:
    """Train a student with BYOL on unlabeled images.

    Parameters
    ----------
    images : uint8 array or tensor
        ``(N, C, H, W)`` or ``(N, H, W, C)``, kept in memory.
    config : TrainConfig, optional
        The settings shared with :func:`coopt_flower.student_training.train_on_optimized`
        (same defaults).
    momentum_start, momentum_end : float
        Target momentum schedule (cosine over all steps).
    hidden_dim, proj_dim : int
        BYOL head sizes.
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, backbone)`` after every epoch; return values are collected.

    Returns
    -------
    ByolResult
    """
    config = config or TrainConfig()
    x = as_nchw_images(images)
    if len(x) < 2:
        raise ValueError("need at least 2 images to train")
    steps_per_epoch = num_batches(len(x), config.batch_size)
    momentums: list[float] = []

    def after_step(model: BYOL, global_step: int, total_steps: int) -> None:
        # Momentum for the update that follows step `global_step` (1-based), so the
        # first update uses momentum_start and the last one momentum_end.
        m = byol_momentum(global_step - 1, total_steps, momentum_start, momentum_end)
        model.update_target(m)
        if global_step % steps_per_epoch == 0:
            momentums.append(m)

    x = on_device(x, config.device)

    def loss(model: BYOL, idx: torch.Tensor, views) -> torch.Tensor:
        return _views_loss(model, views(x[idx.to(x.device)]))

    recipe = Recipe(
        method="byol", wrap=lambda backbone: BYOL(backbone, hidden_dim=hidden_dim, proj_dim=proj_dim),
        batches=lambda gen: tensor_batches(len(x), config.batch_size, gen),
        steps_per_epoch=steps_per_epoch, loss=loss,
        image_size=int(x.shape[-1]), num_samples=len(x),
        settings={"momentum_start": momentum_start, "momentum_end": momentum_end,
                  "hidden_dim": hidden_dim, "proj_dim": proj_dim},
        after_step=after_step,
    )
    return ByolResult(**fit(recipe, config, on_epoch_end=on_epoch_end).fields(), momentums=momentums)
