"""``refinement = distill``: a participant refines its own prototype towards the round's student.

Multi-round CoOpt trains a student on round r's merged dataset: a network that learned from
every participant's targets at once. Under ``distill`` that knowledge flows back: in round r+1
every participant, on its own node, fits a head on top of its own (frozen) prototype so that
``head(psi_k(x))`` predicts the student's embedding of ``x``, on a sample of its own shard and
the shared subset S, and then encodes the round with ``head . psi_k``: its own features, read
the way the federation learned to read them.

The refinement always starts from the participant's own prototype and the latest student, so
the only state that carries from round to round is the student, which the platform already
checkpoints: a resumed run refines again from the same inputs and gets the same weights
(deterministic on a CPU). The head's weights stay at the participant; only their digest travels.

Layer groups (``refine-layers``):

``head``
    An MLP (or, with ``refine-hidden = 0``, a linear map) on the prototype's standardized
    features, regressing the student's embeddings; the prototype itself stays frozen, so any prototype (ONNX included) can refine,
    and the features are computed once, without augmentation, like every encode.
``last-stage``
    The head, and the prototype's last stage under it (:mod:`coopt_flower.distill_stage`):
    the participant's own network changes what it computes, not only how it is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from coopt_flower.round_student import payload_digest  # names the head, as it names a student

#: ``refine-layers`` choices: which part of a prototype refinement trains.
REFINE_LAYERS = ("head", "last-stage")


@dataclass(frozen=True)
class RefineBudget:
    """How much a participant may spend refining (run config ``refine-*``).

    Parameters
    ----------
    epochs : int
        Passes over the refinement samples.
    samples : int
        At most this many of the participant's shard (S comes on top).
    hidden : int
        Width of the head's hidden layer (0: a linear head).
    lr : float
        AdamW learning rate.
    layers : str
        One of :data:`REFINE_LAYERS`.
    batch_size : int
        Samples per step.
    """

    epochs: int = 30
    samples: int = 2048
    hidden: int = 1024
    lr: float = 1e-3
    layers: str = "head"
    batch_size: int = 256

    def check(self) -> None:
        """Raise ``ValueError`` naming the ``refine-*`` key that cannot work."""
        if self.layers not in REFINE_LAYERS:
            raise ValueError(f"refine-layers must be one of {', '.join(REFINE_LAYERS)}, got {self.layers!r}")
        if self.epochs < 1:
            raise ValueError(f"refine-epochs must be >= 1 under refinement=distill, got {self.epochs}")
        if self.samples < 0:
            raise ValueError(f"refine-samples must be >= 0 (0 = the shared subset only), got {self.samples}")
        if self.hidden < 0:
            raise ValueError(f"refine-hidden must be >= 0 (0 = a linear head), got {self.hidden}")
        if not self.lr > 0:
            raise ValueError(f"refine-lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"refine batch size must be >= 1, got {self.batch_size}")


def _head(input_dim: int, output_dim: int, hidden: int):
    from torch import nn

    if hidden == 0:
        return nn.Linear(input_dim, output_dim)
    return nn.Sequential(nn.Linear(input_dim, hidden), nn.GELU(), nn.Linear(hidden, output_dim))


@dataclass
class HeadFit:
    """What :func:`fit_head` trained: the head's weights (numpy), its config and the fit."""

    state: dict[str, np.ndarray]
    config: dict[str, Any]
    losses: list[float]


#: A feature's standard deviation is floored at this fraction of the mean one: post-ReLU
#: dimensions that are almost always 0 on the refinement samples would otherwise be divided by
#: ~0 and blow up on the next image where they fire (measured: held-out R^2 of -6e5).
FEATURE_STD_FLOOR = 0.1


def standardizer(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and (floored, :data:`FEATURE_STD_FLOOR`) std of ``features``."""
    std = features.std(0)
    return features.mean(0), np.maximum(std, FEATURE_STD_FLOOR * max(float(std.mean()), 1e-12)).astype(np.float32)


def fit_head(features: np.ndarray, targets: np.ndarray, budget: RefineBudget, *, seed: int) -> HeadFit:
    """Train ``head`` so that ``head(standardize(features))`` predicts the z-scored ``targets``.

    A regression (mean squared error on z-scored targets), so that the refined prototype
    outputs the student's embeddings at the student's scale: the round's alignment and the
    next student compare targets in Euclidean terms. Deterministic for a seed (a private
    generator; the global RNG is left alone).

    Parameters
    ----------
    features : np.ndarray
        ``(m, d)`` the prototype's features of the refinement samples.
    targets : np.ndarray
        ``(m, n)`` the student's embeddings of the same samples.
    """
    import torch

    budget.check()
    features, targets = checked_pair(features, targets)
    setup = RegressionSetup.of(features, targets, budget, seed=seed)
    x = torch.from_numpy((features - setup.norms["feature_mean"]) / setup.norms["feature_std"])
    head = setup.head
    losses = regress(lambda rows: head(x[rows]), [{"params": list(head.parameters())}], setup.y, budget,
                     setup.generator)
    return setup.result({"head": head}, budget, losses)


def checked_pair(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(m, d)`` features and ``(m, n)`` targets, ``m >= 2``, all finite, or a
    ``ValueError`` saying which."""
    features = np.asarray(features, np.float32)
    targets = np.asarray(targets, np.float32)
    if features.ndim != 2 or targets.ndim != 2 or len(features) != len(targets) or len(features) < 2:
        raise ValueError(f"refinement needs matching (m, d) features and (m, n) targets with m >= 2, got "
                         f"{features.shape} and {targets.shape}")
    if not (np.isfinite(features).all() and np.isfinite(targets).all()):
        raise ValueError("refinement features or student targets hold NaN or Inf")
    return features, targets


@dataclass
class RegressionSetup:
    """What every refinement fit starts from: the features' standardizer and the targets'
    z-score (``norms``, kept with the weights), the z-scored targets, the seeded head and the
    generator of the batch order."""

    norms: dict[str, np.ndarray]
    y: Any
    head: Any
    generator: Any

    @classmethod
    def of(cls, features: np.ndarray, targets: np.ndarray, budget: RefineBudget, *, seed: int) -> "RegressionSetup":
        import torch

        from coopt_flower.target_statistics import target_stats

        feature_mean, feature_std = standardizer(features)
        stats = target_stats(targets)
        target_mean, target_std = stats.mean.numpy(), stats.std.numpy()
        y = torch.from_numpy((targets - target_mean) / target_std)
        generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            head = _head(features.shape[1], y.shape[1], budget.hidden)
        head.train()
        norms = {"feature_mean": feature_mean, "feature_std": feature_std,
                 "target_mean": target_mean, "target_std": target_std}
        return cls(norms, y, head, generator)

    def result(self, modules: dict[str, Any], budget: RefineBudget, losses: list[float], **config: Any) -> HeadFit:
        """The trained ``modules`` (``{"head": head, ...}``, each saved under its name) with
        the norms, their config and digest."""
        state = {f"{name}.{k}": v.detach().numpy().copy()
                 for name, module in modules.items() for k, v in module.state_dict().items()}
        state.update(self.norms)
        config = {"layers": budget.layers, "hidden": budget.hidden, "input_dim": int(len(self.norms["feature_mean"])),
                  "output_dim": int(self.y.shape[1]), "epochs": budget.epochs, "samples": int(len(self.y)),
                  **config, "final_loss": losses[-1]}
        config["digest"] = payload_digest(state)
        return HeadFit(state, config, losses)


def regress(predict, parameter_groups: list[dict], y, budget: RefineBudget, generator) -> list[float]:
    """Minimize the mean squared error of ``predict(rows)`` against ``y[rows]`` over
    ``budget.epochs`` shuffled passes (AdamW, cosine schedule); the mean loss per epoch.

    ``parameter_groups`` are AdamW's (a group may set its own ``lr``; the budget's otherwise).
    """
    import torch

    optimizer = torch.optim.AdamW(parameter_groups, lr=budget.lr, weight_decay=1e-4)
    steps = budget.epochs * -(-len(y) // budget.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    losses = []
    for _ in range(budget.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), budget.batch_size):
            rows = order[start: start + budget.batch_size]
            loss = torch.nn.functional.mse_loss(predict(rows), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(y))
    return losses


class RefinedPrototype:
    """A participant's own prototype followed by its refined head (a :class:`Prototype`).

    Encodes like any prototype (uint8 images in, float32 ``(B, n)`` out, no augmentation);
    ``spec`` names the base prototype and the head's digest.
    """

    def __init__(self, base, state: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        import torch

        self.base = base
        self.config = dict(config)
        self.digest = str(config["digest"])
        if payload_digest(state) != self.digest:
            raise ValueError(f"refined head weights do not match their digest {self.digest}")
        if int(config["input_dim"]) != int(base.output_dim):
            raise ValueError(f"refined head expects {config['input_dim']}-d features, prototype "
                             f"{base.spec} outputs {base.output_dim}")
        self.head = _head(int(config["input_dim"]), int(config["output_dim"]), int(config["hidden"]))
        self.head.load_state_dict({k[len("head."):]: torch.from_numpy(np.array(v))
                                   for k, v in state.items() if k.startswith("head.")})
        self.head.eval().requires_grad_(False)
        # last-stage: the refined stage replaces the base's own last stage when encoding.
        self.stage = None
        if config.get("layers") == "last-stage":
            from coopt_flower.distill_stage import RefinedStage

            self.stage = RefinedStage(base, state)
        self.mean = np.asarray(state["feature_mean"], np.float32)
        self.std = np.asarray(state["feature_std"], np.float32)
        self.target_mean = np.asarray(state["target_mean"], np.float32)
        self.target_std = np.asarray(state["target_std"], np.float32)
        self.spec = f"{base.spec}+distill:{self.digest}"
        self.parsed = base.parsed
        self.output_dim = int(config["output_dim"])
        self.native_size, self.image_size = base.native_size, base.image_size
        self.device, self.preprocess = base.device, base.preprocess
        self.max_batch = base.max_batch

    def encode(self, images: np.ndarray) -> np.ndarray:
        features = self.stage.features(images) if self.stage is not None else self.base.encode(images)
        return self.map_features(features)

    def map_features(self, features: np.ndarray) -> np.ndarray:
        """The head applied to base-prototype features: the predicted student embeddings
        (float32 ``(B, n)``, at the student's scale)."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy((np.asarray(features, np.float32) - self.mean) / self.std)
            z = self.head(x).numpy()
        return (z * self.target_std + self.target_mean).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "spec": self.spec, "output_dim": self.output_dim,
                "refined": self.config}


@dataclass
class Refinement:
    """A finished refinement: the refined prototype, its weights and what it cost."""

    prototype: RefinedPrototype
    state: dict[str, np.ndarray]
    config: dict[str, Any]
    seconds: float


def refine_prototype(base, teacher, images: np.ndarray | list[np.ndarray], budget: RefineBudget, *,
                     seed: int, batch_size: int = 128) -> Refinement:
    """Refine ``base`` towards ``teacher`` (the round's student) on ``images``.

    Parameters
    ----------
    base : Prototype
        The participant's own prototype (frozen).
    teacher : Prototype
        The round's student as a prototype (its embeddings are the targets).
    images : np.ndarray or list of np.ndarray
        uint8 ``(m, H, W, 3)``: a sample of the participant's shard and S (a list when their
        sizes differ; each prototype resizes on its own).
    """
    from coopt_flower.targets import encode_features

    budget.check()
    if budget.layers == "last-stage":
        from coopt_flower.distill_stage import last_stage

        last_stage(base)  # a prototype without a last stage is refused before any encoding
    start = time.perf_counter()
    parts = [images] if isinstance(images, np.ndarray) else [part for part in images if len(part)]
    targets = np.concatenate([encode_features(teacher, part, None, batch_size=batch_size,
                                              desc="refine (student)")[0] for part in parts])
    if budget.layers == "last-stage":
        from coopt_flower.distill_stage import fit_last_stage

        fit = fit_last_stage(base, parts, targets, budget, seed=seed)
    else:
        features = np.concatenate([encode_features(base, part, None, batch_size=batch_size,
                                                   desc="refine (own features)")[0] for part in parts])
        fit = fit_head(features, targets, budget, seed=seed)
    fit.config["teacher"] = str(getattr(teacher, "spec", "?"))
    fit.config["base"] = str(base.spec)
    prototype = RefinedPrototype(base, fit.state, fit.config)
    return Refinement(prototype, fit.state, fit.config, time.perf_counter() - start)
