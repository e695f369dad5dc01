"""``refine-layers = last-stage``: the prototype's last stage trains together with the head.

A head on a frozen prototype can only re-read the features the prototype already computes
(:mod:`coopt_flower.distill`); training the last stage as well lets the participant's own
network change what it computes, towards the round's student. The rest of the network (stem
and every earlier stage) stays frozen, so its activations are computed once per refinement
sample and the stage and head train on those: cheap, and deterministic on a CPU like the head.

The stage keeps its batch-norm statistics (eval mode): a few thousand samples are too few to
re-estimate them, and the refined prototype must encode the same image the same way in any
batch. It trains at :data:`STAGE_LR_SCALE` times the head's learning rate, so pretrained weights
move less than a freshly initialized head.

A prototype has a last stage when its network says how to split off (``split_last_stage()``
on its module, returning ``(prefix, stage)``); EfficientNet-Lite (pretrained or ``random:``)
and a ``student:`` small-cnn (its target head, if any, after the stage) do. Others refuse
``last-stage`` with one line and keep ``head``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

#: The last stage's learning rate relative to the head's (``refine-lr``).
STAGE_LR_SCALE = 0.1


def last_stage(base) -> tuple[Any, Any]:
    """``(prefix, stage)`` of ``base``'s network, sharing its weights.

    Raises ``ValueError`` naming the prototype when its network has no last stage to train.
    """
    from torch import nn

    module = getattr(base, "module", None)
    # A student fed back as a prototype is (backbone, target head): the head follows the stage.
    after = list(module)[1:] if isinstance(module, nn.Sequential) and len(module) else []
    network = module[0] if after else module
    split = getattr(network, "split_last_stage", None)
    if split is None:
        raise ValueError(f"refine-layers = last-stage: prototype {base.spec} has no last stage to train "
                         "(EfficientNet-Lite and small-cnn student prototypes have one); use refine-layers = head")
    prefix, stage = split()
    return prefix, nn.Sequential(stage, *after) if after else stage


def split_last_stage(base) -> tuple[Any, Any]:
    """:func:`last_stage` with the stage copied, safe to train."""
    prefix, stage = last_stage(base)
    return prefix, copy.deepcopy(stage).float().eval()


def _inputs(base, images: np.ndarray):
    """``base``'s preprocessed input batches of uint8 ``images`` (at most ``max_batch`` each)."""
    from coopt_flower.images import as_uint8_nhwc
    from coopt_flower.prototypes.preprocess import preprocess_batch

    images = as_uint8_nhwc(images)
    for start in range(0, len(images), base.max_batch):
        yield preprocess_batch(images[start: start + base.max_batch], base.image_size, base.preprocess, base.device)


def prefix_activations(base, prefix, images: np.ndarray):
    """The frozen prefix's activations of uint8 ``images`` (a float32 CPU tensor), batched."""
    import torch

    # no_grad, not inference_mode: the stage's backward needs these as ordinary tensors.
    with torch.no_grad():
        return torch.cat([prefix(x).float().cpu() for x in _inputs(base, images)])


def fit_last_stage(base, images: list[np.ndarray], targets: np.ndarray, budget, *, seed: int):
    """Train ``base``'s last stage and a head so that ``head(standardize(stage(prefix(x))))``
    predicts the z-scored ``targets`` (the student's embeddings) of ``images``.

    The standardizer is the unrefined stage's, fixed before training. Returns a
    :class:`~coopt_flower.distill.HeadFit` whose state holds ``stage.*`` and ``head.*``.
    """
    import torch

    from coopt_flower.distill import RegressionSetup, checked_pair, regress

    budget.check()
    prefix, stage = split_last_stage(base)
    acts = torch.cat([prefix_activations(base, prefix, part) for part in images if len(part)])
    with torch.no_grad():
        features = torch.cat([stage(acts[i: i + 1024]) for i in range(0, len(acts), 1024)]).numpy()
    features, targets = checked_pair(features, targets)
    setup = RegressionSetup.of(features, targets, budget, seed=seed)
    mean, std = torch.from_numpy(setup.norms["feature_mean"]), torch.from_numpy(setup.norms["feature_std"])
    head = setup.head
    stage.requires_grad_(True)
    groups = [{"params": list(head.parameters())},
              {"params": list(stage.parameters()), "lr": budget.lr * STAGE_LR_SCALE}]
    losses = regress(lambda rows: head((stage(acts[rows]) - mean) / std), groups, setup.y, budget, setup.generator)
    return setup.result({"stage": stage, "head": head}, budget, losses, stage_lr_scale=STAGE_LR_SCALE)


class RefinedStage:
    """The refined last stage of a prototype, encoding with the frozen prefix before it."""

    def __init__(self, base, state: dict[str, np.ndarray]) -> None:
        import torch

        self.base = base
        self.prefix, self.stage = split_last_stage(base)
        weights = {k[len("stage."):]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("stage.")}
        self.stage.load_state_dict(weights, strict=True)
        self.stage.to(base.device).requires_grad_(False)

    def features(self, images: np.ndarray) -> np.ndarray:
        """The refined stage's (unstandardized) features of uint8 ``images``."""
        import torch

        with torch.inference_mode():
            parts = [self.stage(self.prefix(x)).float().cpu().numpy() for x in _inputs(self.base, images)]
        if not parts:
            return np.empty((0, self.base.output_dim), np.float32)
        return np.concatenate(parts)
