"""Train any student on an optimized dataset (and the supervised ceiling).

CoOpt's student objective (from ReLA): for an image ``x`` with target ``y``,

    loss = 1 - cos(head(backbone(aug(x))), z(y)),

averaged over two augmented views, where ``z`` is the per-dimension z-score of
the targets over the whole dataset. AdamW, lr 1e-3, weight decay 0.01.

:func:`train_supervised` trains the same student with a linear classifier and
cross-entropy, with the same augmentations, views and optimizer: the ceiling that
benchmarks show next to CoOpt and BYOL.

Checkpoints (``last.pt``, written atomically every epoch) hold the model and
optimizer state, the config and the z-score statistics, so a run can resume
(``resume=True``) and a trained student can be reloaded with :func:`load_student`.

Command line::

    python -m coopt_flower.training --dataset DIR --arch small-cnn --epochs 10 --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from coopt_flower.augment import IMAGENET_MEAN, IMAGENET_STD, TrainAugment
from coopt_flower.atomic import torch_save_atomic, write_text_atomic
from coopt_flower.students import StudentWithHead, create_student

__all__ = [
    "CHECKPOINT_NAME",
    "LOSS_CURVE_NAME",
    "TargetStats",
    "TrainResult",
    "cosine_target_loss",
    "load_checkpoint",
    "load_student",
    "main",
    "target_stats",
    "train_on_optimized",
    "train_supervised",
]

CHECKPOINT_NAME = "last.pt"
LOSS_CURVE_NAME = "loss_curve.json"
CHECKPOINT_FORMAT = "coopt-student"
CHECKPOINT_VERSION = 1

EpochCallback = Callable[[int, nn.Module], Any]


# ---------------------------------------------------------------------------
# Target statistics
# ---------------------------------------------------------------------------


@dataclass
class TargetStats:
    """Per-dimension mean and standard deviation of the targets.

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

    def zscore(self, targets: torch.Tensor) -> torch.Tensor:
        """``(targets - mean) / std`` on the targets' device."""
        mean = self.mean.to(targets.device, targets.dtype)
        std = self.std.to(targets.device, targets.dtype)
        return (targets - mean) / std


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
    count = 0
    mean: Optional[torch.Tensor] = None
    m2: Optional[torch.Tensor] = None
    for chunk in _target_chunks(dataset, chunk_size, num_workers):
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


def cosine_target_loss(pred: torch.Tensor, target_z: torch.Tensor) -> torch.Tensor:
    """Mean of ``1 - cos(pred, target_z)`` over the batch."""
    return (1.0 - F.cosine_similarity(pred, target_z, dim=1)).mean()


# ---------------------------------------------------------------------------
# Results and checkpoints
# ---------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a training run returns.

    Attributes
    ----------
    backbone : nn.Module
        The trained student (``feature_dim`` attribute), in eval mode.
    head : nn.Module
        Linear head (to the target dimension, or to the classes for supervised).
    losses : list of float
        Mean training loss per epoch.
    epoch_times : list of float
        Wall-clock seconds per epoch (training only; the callback is excluded).
    config : dict
        The run's settings (JSON-serializable).
    target_stats : TargetStats or None
        The z-score statistics (CoOpt runs only).
    epoch_metrics : list
        Whatever ``on_epoch_end`` returned, one entry per epoch.
    checkpoint_path, loss_curve_path : Path or None
        Files written when a ``checkpoint_dir`` was given.
    """

    backbone: nn.Module
    head: nn.Module
    losses: list[float]
    epoch_times: list[float]
    config: dict[str, Any]
    target_stats: Optional[TargetStats] = None
    epoch_metrics: list[Any] = field(default_factory=list)
    checkpoint_path: Optional[Path] = None
    loss_curve_path: Optional[Path] = None

    @property
    def train_time(self) -> float:
        """Total training seconds (sum of ``epoch_times``)."""
        return float(sum(self.epoch_times))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by this module (a file, or a directory holding ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {ckpt['version']}, newer than this code "
            f"({CHECKPOINT_VERSION})"
        )
    return ckpt


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_student(
    path: str | os.PathLike, map_location: Any = "cpu"
) -> tuple[nn.Module, Optional[nn.Module], dict[str, Any]]:
    """Rebuild a trained student from a checkpoint.

    Works for CoOpt, supervised and BYOL checkpoints (all store the backbone
    under ``backbone.``).

    Returns
    -------
    backbone : nn.Module
        In eval mode, with ``feature_dim``.
    head : nn.Module or None
        The linear head (None for BYOL).
    checkpoint : dict
        The whole checkpoint (``config`` has ``arch``, ``image_size``, ``mean``, ``std``).
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = ckpt["config"]
    backbone = create_student(cfg["arch"], image_size=cfg["image_size"], **cfg.get("arch_kwargs", {}))
    backbone.load_state_dict(_sub_state(ckpt["model"], "backbone."))
    head = None
    head_state = _sub_state(ckpt["model"], "head.")
    if head_state and "weight" in head_state:
        out_dim, in_dim = head_state["weight"].shape
        head = nn.Linear(in_dim, out_dim)
        head.load_state_dict(head_state)
        head.eval()
    return backbone.eval(), head, ckpt


# ---------------------------------------------------------------------------
# The shared training loop
# ---------------------------------------------------------------------------


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # One generator per epoch, derived from (seed, epoch): a resumed run draws the
    # same shuffles and augmentations as an uninterrupted one.
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


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


def make_optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, the optimizer every method here shares (fair comparison)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def fit(
    *,
    model: nn.Module,
    backbone: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[torch.Generator], Iterable[Any]],
    steps_per_epoch: int,
    step: Callable[[Any, torch.Generator], torch.Tensor],
    epochs: int,
    seed: int,
    config: dict[str, Any],
    extra_state: Optional[dict[str, Any]] = None,
    after_step: Optional[Callable[[int, int], None]] = None,
    on_epoch_end: Optional[EpochCallback] = None,
    checkpoint_dir: Optional[str | os.PathLike] = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> tuple[list[float], list[float], list[Any], Optional[Path], Optional[Path]]:
    """Generic epoch loop shared by CoOpt, supervised and BYOL training.

    Parameters
    ----------
    model : nn.Module
        Everything that is trained or checkpointed (must expose the student as
        ``model.backbone`` so that :func:`load_student` finds it).
    backbone : nn.Module
        Passed to ``on_epoch_end``.
    batches : callable
        ``batches(generator)`` returns one epoch of batches.
    step : callable
        ``step(batch, generator)`` returns the loss tensor of one batch.
    after_step : callable, optional
        ``after_step(global_step, total_steps)`` after each optimizer step (BYOL's
        momentum update).
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, backbone)``, epoch counted from 1; its return value is
        collected. The model's train/eval mode is restored afterwards.

    Returns
    -------
    losses, epoch_times, epoch_metrics, checkpoint_path, loss_curve_path
    """
    losses: list[float] = []
    times: list[float] = []
    metrics: list[Any] = []
    start_epoch = 0
    ckpt_path = curve_path = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = checkpoint_dir / CHECKPOINT_NAME
        curve_path = checkpoint_dir / LOSS_CURVE_NAME
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            changed = sorted(
                k for k in set(config) | set(ckpt["config"])
                if k != "epochs" and config.get(k) != ckpt["config"].get(k)
            )
            if changed:
                warnings.warn(
                    f"resuming {ckpt_path} with different settings: {', '.join(changed)}",
                    stacklevel=3,
                )
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            losses, times = list(ckpt["losses"]), list(ckpt["epoch_times"])
            metrics = [None] * len(losses)
            start_epoch = int(ckpt["epoch"])
    total_steps = epochs * steps_per_epoch
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, epochs):
        model.train()
        gen = _epoch_generator(seed, epoch)
        t0 = time.perf_counter()
        total, count = 0.0, 0
        bar = _progress(batches(gen), steps_per_epoch, f"{desc} {epoch + 1}/{epochs}", progress)
        for batch in bar:
            loss = step(batch, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            global_step += 1
            if after_step is not None:
                after_step(global_step, total_steps)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at epoch {epoch + 1}")
            total += value
            count += 1
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.4f}")
        if count == 0:
            raise ValueError("an epoch produced no batches (dataset smaller than 2 samples?)")
        times.append(time.perf_counter() - t0)
        losses.append(total / count)
        if progress:
            print(f"{desc} epoch {epoch + 1}/{epochs}: loss {losses[-1]:.4f} ({times[-1]:.1f} s)",
                  file=sys.stderr)
        if on_epoch_end is not None:
            was_training = model.training
            metrics.append(on_epoch_end(epoch + 1, backbone))
            model.train(was_training)
        else:
            metrics.append(None)
        if ckpt_path is not None:
            state = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "config": config,
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "losses": losses,
                "epoch_times": times,
                **(extra_state or {}),
            }
            torch_save_atomic(state, ckpt_path)
            curve = {"epoch": list(range(1, len(losses) + 1)), "loss": losses,
                     "epoch_time_s": times, "config": config}
            write_text_atomic(curve_path, json.dumps(curve, indent=2))
    model.eval()
    return losses, times, metrics, ckpt_path, curve_path


# ---------------------------------------------------------------------------
# CoOpt: train on an optimized dataset
# ---------------------------------------------------------------------------


def _to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _two_views(
    aug: Callable[..., torch.Tensor], images: torch.Tensor, gen: torch.Generator, channels_last: bool
) -> torch.Tensor:
    """Two augmented views of a batch, concatenated along the batch dimension."""
    views = torch.cat([aug(images, generator=gen), aug(images, generator=gen)])
    return views.contiguous(memory_format=torch.channels_last) if channels_last else views


def _infer_image_size(dataset: Dataset) -> int:
    image = dataset[0][0]
    return int(image.shape[-1])


def train_on_optimized(
    dataset: Dataset,
    *,
    arch: str = "small-cnn",
    image_size: Optional[int] = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint_dir: Optional[str | os.PathLike] = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Optional[EpochCallback] = None,
    num_workers: int = 0,
    pretrained: bool = False,
    arch_kwargs: Optional[dict[str, Any]] = None,
    augment: Optional[TrainAugment] = None,
    channels_last: bool = True,
) -> TrainResult:
    """Train a student to predict the (z-scored) targets of an optimized dataset.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image, target)``: ``image`` uint8 ``(C, H, W)`` (C = 1 or 3),
        ``target`` float ``(n,)``. An ``OptimizedDataset`` or a ``TensorDataset``.
    arch : str
        Student name for :func:`coopt_flower.students.create_student`.
    image_size : int, optional
        Side of the augmented crops fed to the student; defaults to the dataset's
        image width.
    epochs, batch_size, lr, weight_decay : int, int, float, float
        AdamW settings (ReLA: lr 1e-3, weight decay 0.01).
    seed : int
        Seeds the initialization, the shuffling and the augmentations.
    device : str or torch.device
        Where the student and the augmentations run.
    checkpoint_dir : path, optional
        Directory for ``last.pt`` (every epoch, atomic) and ``loss_curve.json``.
    resume : bool
        Continue from ``checkpoint_dir/last.pt`` if it exists.
    progress : bool
        Show a tqdm bar and one line per epoch on stderr.
    on_epoch_end : callable, optional
        ``on_epoch_end(epoch, backbone)`` after every epoch (e.g. a linear probe);
        return values are collected in ``TrainResult.epoch_metrics``.
    num_workers : int
        DataLoader workers (decoding images from the source).
    pretrained, arch_kwargs
        Passed to :func:`create_student`.
    augment : TrainAugment, optional
        Defaults to ``TrainAugment(image_size)``.
    channels_last : bool
        Run the student in NHWC memory format (measured ~30% faster per step for
        small-cnn on a 2-core CPU; weights and checkpoints are unaffected).

    Returns
    -------
    TrainResult
    """
    if len(dataset) < 2:
        raise ValueError("need at least 2 samples to train")
    device = torch.device(device)
    image_size = int(image_size or _infer_image_size(dataset))
    stats = target_stats(dataset, num_workers=num_workers)
    target_dim = int(stats.mean.numel())
    arch_kwargs = dict(arch_kwargs or {})
    torch.manual_seed(seed)
    backbone = create_student(arch, image_size=image_size, pretrained=pretrained, **arch_kwargs)
    model = _to_device(StudentWithHead(backbone, target_dim), device, channels_last)
    aug = augment or TrainAugment(image_size)
    optimizer = make_optimizer(model.parameters(), lr, weight_decay)
    config = {
        "method": "coopt",
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "image_size": image_size,
        "target_dim": target_dim,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "num_samples": len(dataset),
        "views": 2,
        "mean": list(getattr(aug, "mean", IMAGENET_MEAN)),
        "std": list(getattr(aug, "std", IMAGENET_STD)),
    }
    mean_d = stats.mean.to(device)
    std_d = stats.std.to(device)

    def batches(gen: torch.Generator) -> Iterable[Any]:
        # drop_last only when the remainder is a single sample (BatchNorm).
        drop_last = len(dataset) % batch_size == 1
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, drop_last=drop_last,
            generator=gen, num_workers=num_workers, pin_memory=device.type == "cuda",
        )
        return loader

    def step(batch: Any, gen: torch.Generator) -> torch.Tensor:
        images, targets = batch
        images = images.to(device, non_blocking=True)
        z = (targets.to(device, torch.float32, non_blocking=True) - mean_d) / std_d
        # Both views go through the student as one batch: one forward/backward
        # instead of two, and BatchNorm sees both views.
        views = _two_views(aug, images, gen, channels_last)
        pred = model(views)
        return cosine_target_loss(pred, torch.cat([z, z]))

    steps = len(dataset) // batch_size + (1 if len(dataset) % batch_size > 1 else 0)
    losses, times, metrics, ckpt, curve = fit(
        model=model, backbone=backbone, optimizer=optimizer, batches=batches,
        steps_per_epoch=steps, step=step, epochs=epochs, seed=seed, config=config,
        extra_state={"target_mean": stats.mean, "target_std": stats.std},
        on_epoch_end=on_epoch_end, checkpoint_dir=checkpoint_dir, resume=resume,
        progress=progress, desc="coopt",
    )
    return TrainResult(
        backbone=backbone, head=model.head, losses=losses, epoch_times=times, config=config,
        target_stats=stats, epoch_metrics=metrics, checkpoint_path=ckpt, loss_curve_path=curve,
    )


# ---------------------------------------------------------------------------
# Supervised ceiling
# ---------------------------------------------------------------------------


def as_uint8_images(images: Any) -> torch.Tensor:
    """Images as a uint8 ``(N, C, H, W)`` tensor (accepts NCHW or NHWC arrays)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if x.dim() == 3:  # (N, H, W) gray
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W) or (N, H, W, C), got {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    return x.contiguous()


def train_supervised(
    images: Any,
    labels: Any,
    *,
    arch: str = "small-cnn",
    image_size: Optional[int] = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_classes: Optional[int] = None,
    checkpoint_dir: Optional[str | os.PathLike] = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Optional[EpochCallback] = None,
    pretrained: bool = False,
    arch_kwargs: Optional[dict[str, Any]] = None,
    augment: Optional[TrainAugment] = None,
    channels_last: bool = True,
) -> TrainResult:
    """The supervised ceiling: same student, augmentations and optimizer, cross-entropy.

    Like CoOpt training, every step uses two augmented views of the batch (the
    loss is their mean), so an epoch costs the same compute for all methods.

    Parameters
    ----------
    images : uint8 array or tensor
        ``(N, C, H, W)`` or ``(N, H, W, C)``, kept in memory.
    labels : int array or tensor
        ``(N,)`` class indices.
    num_classes : int, optional
        Defaults to ``max(labels) + 1``.

    Other parameters (``channels_last`` included) are as in :func:`train_on_optimized`.
    """
    x = as_uint8_images(images)
    y = labels.long() if isinstance(labels, torch.Tensor) else torch.from_numpy(np.array(labels, dtype=np.int64))
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    device = torch.device(device)
    image_size = int(image_size or x.shape[-1])
    num_classes = int(num_classes or int(y.max()) + 1)
    arch_kwargs = dict(arch_kwargs or {})
    torch.manual_seed(seed)
    backbone = create_student(arch, image_size=image_size, pretrained=pretrained, **arch_kwargs)
    model = _to_device(StudentWithHead(backbone, num_classes), device, channels_last)
    aug = augment or TrainAugment(image_size)
    optimizer = make_optimizer(model.parameters(), lr, weight_decay)
    config = {
        "method": "supervised", "arch": arch, "arch_kwargs": arch_kwargs,
        "image_size": image_size, "num_classes": num_classes, "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "num_samples": len(x), "views": 2,
        "mean": list(getattr(aug, "mean", IMAGENET_MEAN)),
        "std": list(getattr(aug, "std", IMAGENET_STD)),
    }

    def batches(gen: torch.Generator) -> Iterable[Any]:
        return tensor_batches(len(x), batch_size, gen)

    def step(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        images_b = x[idx].to(device, non_blocking=True)
        labels_b = y[idx].to(device, non_blocking=True)
        views = _two_views(aug, images_b, gen, channels_last)
        return F.cross_entropy(model(views), torch.cat([labels_b, labels_b]))

    losses, times, metrics, ckpt, curve = fit(
        model=model, backbone=backbone, optimizer=optimizer, batches=batches,
        steps_per_epoch=num_batches(len(x), batch_size), step=step, epochs=epochs,
        seed=seed, config=config, on_epoch_end=on_epoch_end,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, desc="supervised",
    )
    return TrainResult(
        backbone=backbone, head=model.head, losses=losses, epoch_times=times, config=config,
        epoch_metrics=metrics, checkpoint_path=ckpt, loss_curve_path=curve,
    )


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m coopt_flower.training",
        description="Train a student on a CoOpt optimized dataset.",
    )
    p.add_argument("--dataset", required=True, help="optimized dataset directory")
    p.add_argument("--out", required=True, help="output directory (checkpoint, loss curve)")
    p.add_argument("--arch", default="small-cnn",
                   help="student: small-cnn, resnet18-small, torchvision:<name>, timm:<name>")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=None,
                   help="input size of the student (default: the dataset's image size)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--source", default=None,
                   help="image source spec, if not the one recorded in the dataset's manifest")
    p.add_argument("--no-verify", action="store_true", help="skip the dataset checksum check")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m coopt_flower.training``."""
    args = _parse_args(argv)
    # Imported here so that this module stays importable (and testable) on its own.
    from coopt_flower.dataset_format import load_optimized_dataset

    dataset = load_optimized_dataset(args.dataset, source=args.source, verify=not args.no_verify)
    result = train_on_optimized(
        dataset, arch=args.arch, image_size=args.image_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        seed=args.seed, device=args.device, checkpoint_dir=args.out, resume=args.resume,
        progress=not args.no_progress, num_workers=args.num_workers,
    )
    summary = {
        "checkpoint": str(result.checkpoint_path),
        "loss_curve": str(result.loss_curve_path),
        "losses": result.losses,
        "epoch_times_s": result.epoch_times,
        "train_time_s": result.train_time,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
