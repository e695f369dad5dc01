"""The one training loop that CoOpt, supervised and BYOL training share.

Every method trains the same student (:func:`coopt_flower.students.create_student`)
with the same augmentation (:class:`~coopt_flower.augment.TrainAugment`), two views
of every image per step, the same batch size and, by default, the same AdamW at a
constant rate: only the objective differs, so the methods compare fairly (a method
that needs its own optimizer recipe, such as BYOL on some students, sets
``optimizer``/``lr_schedule`` of its config, from :mod:`coopt_flower.optimizers`; see
:data:`coopt_flower.byol.BYOL_RECIPES`). :class:`TrainConfig` holds the shared
settings; a :class:`Recipe` holds what one method supplies (its model wrapper, its
batches, its per-step loss, an optional after-step hook); :func:`fit` does the rest:
seeding, building the model, the optimizer, the epoch loop, progress, checkpoints
(see :mod:`coopt_flower.checkpoints`) and resuming.

Determinism: the initialization is seeded by ``seed``; the shuffles and augmentations
of epoch ``e`` come from a generator seeded by ``(seed, e)``, so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import torch
from torch import nn

from coopt_flower.augment import IMAGENET_MEAN, IMAGENET_STD, TrainAugment
from coopt_flower.distributed import (Distributed, barrier, check_batches, current_distribution, local,
                                      mean_over_processes, unwrap, wrap_model)
from coopt_flower.checkpoints import (
    CHECKPOINT_NAME,
    LOSS_CURVE_NAME,
    load_checkpoint,
    save_checkpoint,
    write_loss_curve,
)
from coopt_flower.optimizers import LR_SCHEDULES, OPTIMIZERS, learning_rate, make_optimizer
from coopt_flower.students import create_student
from coopt_flower.target_statistics import TargetStats

__all__ = [
    "VIEWS",
    "EpochCallback",
    "FitResult",
    "Recipe",
    "TrainConfig",
    "TrainResult",
    "fit",
    "num_batches",
    "tensor_batches",
]

logger = logging.getLogger(__name__)

#: Augmented views of every image per step, for every method (same compute per epoch).
VIEWS = 2

#: Steps between progress-bar loss updates (each one reads the loss back from the device).
PROGRESS_EVERY = 20

EpochCallback = Callable[[int, nn.Module], Any]
"""``on_epoch_end(epoch, backbone)``, epoch counted from 1; its return values are collected
(a mapping with ``stop: True`` ends training after that epoch)."""

Views = Callable[[torch.Tensor], torch.Tensor]
"""``views(images)``: uint8 ``(B, C, H, W)`` -> the :data:`VIEWS` augmented views on the
device, stacked view after view into ``(VIEWS * B, 3, S, S)``."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings every training method shares.

    Attributes
    ----------
    arch : str
        Student name for :func:`coopt_flower.students.create_student`.
    image_size : int, optional
        Side of the augmented crops fed to the student; defaults to the data's image width.
    epochs, batch_size : int
    lr, weight_decay : float
        Optimizer settings (ReLA's AdamW: lr 1e-3, weight decay 0.01); ``lr`` is the peak
        learning rate of a schedule.
    optimizer : str
        ``"adamw"`` (every method's default), ``"sgd"`` or ``"lars"`` (SGD with momentum,
        with LARS's layer-wise trust ratio): see :func:`coopt_flower.optimizers.make_optimizer`.
    momentum : float
        SGD/LARS momentum.
    lr_schedule : str
        ``"constant"`` (the default) or ``"cosine"``: linear warmup over ``warmup_epochs``,
        then cosine decay to 0 at the last step (see :func:`coopt_flower.optimizers.learning_rate`).
    warmup_epochs : float
        Linear warmup length (either schedule).
    seed : int
        Seeds the initialization, the shuffling and the augmentations.
    device : str or torch.device
        Where the student and the augmentations run.
    channels_last : bool
        Run the student in NHWC memory format (measured ~30% faster per step for
        small-cnn on a 2-core CPU; weights and checkpoints are unaffected).
    pretrained : bool
        Start from the architecture's pretrained weights (``timm:``/``torchvision:`` names).
    arch_kwargs : dict
        More keyword arguments for :func:`create_student` (e.g. ``widths`` of small-cnn).
    augment : TrainAugment or ByolViews, optional
        Defaults to ``TrainAugment(image_size)``, every method's augmentation;
        :class:`coopt_flower.byol_views.ByolViews` is BYOL's own pair of views.
    checkpoint_dir : path, optional
        Directory for ``last.pt`` (every epoch, atomic) and ``loss_curve.json``.
    resume : bool
        Continue from ``checkpoint_dir/last.pt`` if it exists.
    progress : bool
        Show a tqdm bar per epoch.
    num_workers : int
        DataLoader workers, for datasets that can only be read item by item.
    preload : bool
        Decode a dataset's images once and slice batches from them, as every method does
        (:mod:`coopt_flower.inputs`); ``False`` reads an optimized dataset through a
        DataLoader, item by item (the same pairs, slower).
    """

    arch: str = "small-cnn"
    image_size: Optional[int] = None
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    momentum: float = 0.9
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str | torch.device = "cpu"
    channels_last: bool = True
    pretrained: bool = False
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    augment: Optional[Any] = None  # TrainAugment, or anything with per_view (ByolViews)
    checkpoint_dir: Optional[str | os.PathLike] = None
    resume: bool = False
    progress: bool = True
    num_workers: int = 0
    preload: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        # A copy, so that the record of a run cannot change under it.
        object.__setattr__(self, "arch_kwargs", dict(self.arch_kwargs or {}))


@dataclass
class Recipe:
    """What one training method supplies to :func:`fit`.

    Attributes
    ----------
    method : str
        Its name (``"coopt"``, ``"supervised"``, ``"byol"``): the record's ``method``
        and the progress label.
    wrap : callable
        ``wrap(backbone) -> model``: everything that is trained or checkpointed; must
        expose the student as ``model.backbone`` (where :func:`load_student` finds it).
    batches : callable
        ``batches(generator)`` returns one epoch of batches.
    steps_per_epoch : int
        How many batches ``batches`` yields.
    loss : callable
        ``loss(model, batch, views) -> Tensor``, the loss of one batch; ``views`` makes
        the augmented views of uint8 images (see :data:`Views`).
    image_size : int
        The data's image width (the default of ``TrainConfig.image_size``).
    num_samples : int
    settings : dict
        Method-specific entries of the run record (JSON-serializable).
    extra_state : dict
        Method-specific checkpoint entries.
    after_step : callable, optional
        ``after_step(model, global_step, total_steps)`` after each optimizer step
        (``global_step`` counted from 1; BYOL's momentum update).
    distributed : bool
        Whether ``loss`` can train under torchrun (:mod:`coopt_flower.distributed`): views of
        the global batch, targets of ``views.local(idx)``, this process's share.
    """

    method: str
    wrap: Callable[[nn.Module], nn.Module]
    batches: Callable[[torch.Generator], Iterable[Any]]
    steps_per_epoch: int
    loss: Callable[[nn.Module, Any, Views], torch.Tensor]
    image_size: int
    num_samples: int
    settings: dict[str, Any] = field(default_factory=dict)
    extra_state: dict[str, Any] = field(default_factory=dict)
    after_step: Optional[Callable[[nn.Module, int, int], None]] = None
    distributed: bool = False


@dataclass(kw_only=True)
class FitResult:
    """What :func:`fit` returns; the methods' results extend it.

    Attributes
    ----------
    model : nn.Module
        The trained wrapper (in eval mode); the student is ``model.backbone``.
    config : dict
        The run's settings (JSON-serializable; stored in checkpoints as ``config``).
    losses, epoch_times : list of float
        Mean training loss and wall-clock seconds per epoch (callbacks excluded).
    epoch_metrics : list
        Return values of ``on_epoch_end`` (None for epochs done before a resume).
    checkpoint_path, loss_curve_path : Path or None
        Files written when ``TrainConfig.checkpoint_dir`` was given.
    """

    model: nn.Module
    config: dict[str, Any]
    losses: list[float]
    epoch_times: list[float]
    epoch_metrics: list[Any] = field(default_factory=list)
    checkpoint_path: Optional[Path] = None
    loss_curve_path: Optional[Path] = None

    @property
    def backbone(self) -> nn.Module:
        """The trained student (``feature_dim`` attribute), in eval mode."""
        return self.model.backbone

    @property
    def train_time(self) -> float:
        """Total training seconds (sum of ``epoch_times``)."""
        return float(sum(self.epoch_times))

    def fields(self) -> dict[str, Any]:
        """The attributes as keyword arguments (to build a method's result from this one)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(FitResult)}


@dataclass(kw_only=True)
class TrainResult(FitResult):
    """What training a student with a linear head returns: CoOpt
    (:func:`coopt_flower.student_training.train_on_optimized`, one head per participant in
    :func:`coopt_flower.heads.train_on_heads`) and the supervised ceiling
    (:func:`coopt_flower.student_training.train_supervised`).

    Attributes
    ----------
    model : StudentWithHead
        The student (``backbone``, eval mode) and its linear ``head``.
    target_stats : TargetStats or None
        The z-score statistics (CoOpt runs only).

    The other attributes (``backbone``, ``losses``, ``epoch_times``, ``config``,
    ``epoch_metrics``, ``checkpoint_path``, ``loss_curve_path``, ``train_time``) are
    those of :class:`FitResult`.
    """

    target_stats: Optional[TargetStats] = None

    @property
    def head(self) -> nn.Module:
        """Linear head (to the target dimension, or to the classes for supervised)."""
        return self.model.head


# ---------------------------------------------------------------------------
# Small shared pieces
# ---------------------------------------------------------------------------


def tensor_batches(
    n: int, batch_size: int, generator: torch.Generator, min_batch: int = 2
) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``range(n)``; a final batch smaller than
    ``min_batch`` is dropped (BatchNorm cannot train on a single sample)."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if len(idx) >= min_batch:
            yield idx


def num_batches(n: int, batch_size: int, min_batch: int = 2) -> int:
    """How many batches :func:`tensor_batches` yields."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= min_batch else 0)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per epoch, from (seed, epoch): a resumed run draws what an uninterrupted one does.
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def view_maker(augment: TrainAugment, device: torch.device, channels_last: bool,
                generator: torch.Generator, dist: Distributed = Distributed()) -> Views:
    # An augmentation may make each view its own way (BYOL's asymmetric views: ``per_view``).
    per_view = getattr(augment, "per_view", None) or (augment,) * VIEWS
    if len(per_view) != VIEWS:
        raise ValueError(f"{augment!r} makes {len(per_view)} views; every method trains on {VIEWS}")

    def views(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True)
        # All views go through the student as one batch (one forward/backward; BatchNorm sees
        # every view). Under torchrun: drawn for the global batch, this process keeps its share.
        out = torch.cat([local(view(images, generator=generator), dist) for view in per_view])
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    views.local = lambda batch: local(batch, dist)  # this process's share of a global batch
    return views


def _run_record(config: TrainConfig, recipe: Recipe, image_size: int,
                augment: TrainAugment) -> dict[str, Any]:
    return {
        "method": recipe.method, "arch": config.arch, "arch_kwargs": dict(config.arch_kwargs),
        "image_size": image_size, "epochs": config.epochs, "batch_size": config.batch_size,
        "lr": config.lr, "weight_decay": config.weight_decay, "seed": config.seed,
        "num_samples": recipe.num_samples, "views": VIEWS, **_optimizer_record(config),
        **recipe.settings,
        "mean": list(getattr(augment, "mean", IMAGENET_MEAN)),
        "std": list(getattr(augment, "std", IMAGENET_STD)),
        # Only views of their own are recorded, so the records of every other run read as before.
        **({"views_augment": repr(augment)} if getattr(augment, "per_view", None) else {}),
    }


def _optimizer_record(config: TrainConfig) -> dict[str, Any]:
    # Only what differs from the default AdamW at a constant rate, so the records (and
    # checkpoints) of runs made before these settings existed read the same.
    out: dict[str, Any] = {}
    if config.optimizer != "adamw":
        out.update(optimizer=config.optimizer, momentum=config.momentum)
    if config.lr_schedule != "constant" or config.warmup_epochs:
        out.update(lr_schedule=config.lr_schedule, warmup_epochs=config.warmup_epochs)
    return out


def _resume(path: Path, record: dict[str, Any], model: nn.Module,
            optimizer: torch.optim.Optimizer) -> tuple[int, list[float], list[float]]:
    """Load ``path`` into model and optimizer; returns (epochs done, losses, epoch times)."""
    ckpt = load_checkpoint(path)
    changed = sorted(
        k for k in set(record) | set(ckpt["config"])
        if k != "epochs" and record.get(k) != ckpt["config"].get(k)
    )
    if changed:
        warnings.warn(f"resuming {path} with different settings: {', '.join(changed)}",
                      stacklevel=4)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["epoch"]), list(ckpt["losses"]), list(ckpt["epoch_times"])


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def fit(recipe: Recipe, config: TrainConfig, *,
        on_epoch_end: Optional[EpochCallback] = None) -> FitResult:
    """Build the student, train it with ``recipe`` under ``config``, checkpoint every epoch.

    Parameters
    ----------
    recipe : Recipe
        What the method supplies (model wrapper, batches, per-step loss, hooks).
    config : TrainConfig
        The shared settings.
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, backbone)`` after every epoch (e.g. a linear probe);
        its return values are collected in ``FitResult.epoch_metrics``. The model's
        train/eval mode is restored afterwards. A returned mapping with ``stop: True``
        ends training after that epoch, checkpoint written (early stopping, e.g. on a
        validation plateau); ``why`` is logged.

    Returns
    -------
    FitResult

    Raises
    ------
    FloatingPointError
        If a step's loss is not finite.
    ValueError
        If an epoch produced no batches.
    """
    device = torch.device(config.device)
    dist = current_distribution()
    check_batches(recipe.num_samples, config.batch_size, dist, method_ok=recipe.distributed, method=recipe.method)
    image_size = int(config.image_size or recipe.image_size)
    torch.manual_seed(config.seed)
    backbone = create_student(config.arch, image_size=image_size, pretrained=config.pretrained,
                              device=device, **config.arch_kwargs)
    model = recipe.wrap(backbone).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_model(model, dist, device)  # a DDP replica under torchrun; the same model otherwise
    augment = config.augment or TrainAugment(image_size)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad],
                               config.lr, config.weight_decay, config.optimizer, config.momentum)
    record = _run_record(config, recipe, image_size, augment)

    losses: list[float] = []
    times: list[float] = []
    metrics: list[Any] = []
    start_epoch = 0
    ckpt_path = curve_path = None
    if config.checkpoint_dir is not None:
        checkpoint_dir = Path(config.checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = checkpoint_dir / CHECKPOINT_NAME
        curve_path = checkpoint_dir / LOSS_CURVE_NAME
        if config.resume and ckpt_path.exists():
            start_epoch, losses, times = _resume(ckpt_path, record, unwrap(model), optimizer)
            metrics = [None] * len(losses)

    epochs, steps_per_epoch = config.epochs, recipe.steps_per_epoch
    total_steps = epochs * steps_per_epoch
    global_step = start_epoch * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduled = config.lr_schedule != "constant" or warmup_steps > 0
    for epoch in range(start_epoch, epochs):
        model.train()
        gen = _epoch_generator(config.seed, epoch)
        views = view_maker(augment, device, config.channels_last, gen, dist)
        t0 = time.perf_counter()
        # Summed on the device: reading a loss back every step would stall a GPU.
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        bar = _progress(recipe.batches(gen), steps_per_epoch,
                        f"{recipe.method} {epoch + 1}/{epochs}", config.progress)
        for batch in bar:
            loss = recipe.loss(model, batch, views)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if scheduled:
                lr = learning_rate(global_step, total_steps, config.lr, config.lr_schedule,
                                   warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.step()
            global_step += 1
            if recipe.after_step is not None:
                recipe.after_step(model, global_step, total_steps)
            total += loss.detach().to(torch.float64)
            count += 1
            if config.progress and hasattr(bar, "set_postfix") and count % PROGRESS_EVERY == 0:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if count == 0:
            raise ValueError("an epoch produced no batches (dataset smaller than 2 samples?)")
        mean_loss = float(mean_over_processes(total, dist)) / count  # the global batches' mean
        times.append(time.perf_counter() - t0)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"loss became {mean_loss} during epoch {epoch + 1}")
        losses.append(mean_loss)
        logger.info("%s epoch %d/%d: loss %.4f (%.1f s)", recipe.method, epoch + 1, epochs,
                    losses[-1], times[-1])
        if on_epoch_end is not None and dist.is_main:
            was_training = model.training
            metrics.append(on_epoch_end(epoch + 1, backbone))
            model.train(was_training)
        else:
            metrics.append(None)
        if ckpt_path is not None and dist.is_main:  # one writer; the single-process format
            save_checkpoint(ckpt_path, record=record, epoch=epoch + 1, model=unwrap(model),
                            optimizer=optimizer, losses=losses, epoch_times=times,
                            extra_state=recipe.extra_state)
            write_loss_curve(curve_path, losses, times, record)
        barrier(dist)  # every process waits for the checkpoint before the next epoch
        if isinstance(metrics[-1], Mapping) and metrics[-1].get("stop"):
            logger.info("%s: stopped after epoch %d of %d (%s)", recipe.method, epoch + 1, epochs,
                        metrics[-1].get("why", "asked by on_epoch_end"))
            break
    model = unwrap(model).eval()
    return FitResult(model=model, config=record, losses=losses, epoch_times=times,
                     epoch_metrics=metrics, checkpoint_path=ckpt_path, loss_curve_path=curve_path)
