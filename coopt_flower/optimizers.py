"""The optimizers and learning-rate schedules a training run can choose.

Every method trains with AdamW at a constant rate by default, so they compare fairly; a
method that needs its own recipe (BYOL on some students, see
:data:`coopt_flower.byol.BYOL_RECIPES`) names another optimizer and schedule in its
:class:`~coopt_flower.training_loop.TrainConfig`. The schedule is a pure function of the
step, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

__all__ = ["LARS_TRUST", "LR_SCHEDULES", "OPTIMIZERS", "learning_rate", "make_optimizer"]

#: Optimizers :func:`make_optimizer` builds, and the learning-rate schedules of :func:`learning_rate`.
OPTIMIZERS = ("adamw", "sgd", "lars")
LR_SCHEDULES = ("constant", "cosine")

#: LARS trust coefficient (solo-learn's ``eta`` for its CIFAR BYOL recipe).
LARS_TRUST = 0.02


def make_optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float,
                   name: str = "adamw", momentum: float = 0.9) -> torch.optim.Optimizer:
    """The optimizer of a run: AdamW (every method's default), SGD or LARS.

    AdamW decays every parameter (as it always has here). SGD and LARS follow the
    self-supervised recipes (solo-learn, lightly): biases and normalization parameters
    (1-d tensors) get no weight decay, and LARS does not rescale them (lightly's ``LARS``
    skips the trust ratio of a group whose weight decay is 0).
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    params = list(params)
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=LARS_TRUST)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def learning_rate(step: int, total_steps: int, peak: float, schedule: str = "constant",
                  warmup_steps: int = 0) -> float:
    """Learning rate of optimizer step ``step`` (counted from 0) of ``total_steps``.

    Linear warmup from ``peak / warmup_steps`` to ``peak`` over ``warmup_steps``; then
    ``peak`` (``"constant"``) or a cosine decay from ``peak`` to 0 at the last step
    (``"cosine"``). A pure function of the step, so a resumed run needs no scheduler state.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    decay_steps = max(total_steps - warmup_steps - 1, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
