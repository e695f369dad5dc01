"""Training under ``merge = "heads"`` (and ``"multi-teacher"``): one shared backbone, one
target head per participant.

A round run with ``merge = "heads"`` does not align anyone: every participant's targets are
written in its own projected space, with its owner index (``owners.npy``), and the manifest
says ``merge: heads``. The student (:class:`coopt_flower.students.StudentWithHeads`) has a
linear head per participant; sample ``i`` owned by ``k`` is trained with

    loss = 1 - cos(h_k(f(aug(x_i))), z_k(y_i)),

``z_k`` the per-dimension z-score of participant ``k``'s own targets
(:class:`coopt_flower.losses.HeadsLoss`). This is agglomerative multi-teacher distillation
(AM-RADIO): the backbone learns what every teacher sees, without a ridge map fitted on a
few hundred shared images standing between a teacher and the student.

The checkpoint holds every head (``heads.<k>.``) and names the *exposed* head, the one
:func:`coopt_flower.checkpoints.load_student` returns as ``head``: the reference
participant's (the manifest's ``exposed_head``). A student fed back as a prototype in a later
round therefore encodes in the reference's space, as an aligned student would.

``merge = "multi-teacher"`` datasets are laid out the same way; their student trains every
head on every sample (:mod:`coopt_flower.multi_teacher`, :class:`~coopt_flower.losses.MultiTeacherLoss`).
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from coopt_flower.inputs import loader_order_batches, on_device, preload_dataset
from coopt_flower.losses import HeadsLoss, MultiTeacherLoss
from coopt_flower.manifest import Manifest
from coopt_flower.merges import Merge
from coopt_flower.multi_teacher import TeacherTargets, fit_pair_maps
from coopt_flower.students import StudentWithHeads
from coopt_flower.target_statistics import TargetStats, target_stats
from coopt_flower.training_loop import (
    VIEWS,
    EpochCallback,
    Recipe,
    TrainConfig,
    TrainResult,
    fit,
    num_batches,
)

__all__ = ["HEADS", "HeadLayout", "head_layout", "is_heads_dataset", "owner_target_stats",
           "train_on_heads"]

#: The ``merge`` value (run config and manifest) this module trains.
HEADS = Merge.HEADS


def is_heads_dataset(dataset: Any) -> bool:
    """Whether a dataset's manifest says its targets live in per-owner spaces."""
    manifest = getattr(dataset, "manifest", None)
    return isinstance(manifest, Manifest) and manifest.is_heads


class HeadLayout:
    """Which head is which: one per participant of the manifest, and the exposed one.

    Attributes
    ----------
    names : list of str
        Head ``k`` belongs to participant ``names[k]`` (owners index this list).
    exposed : int
        Index of the head a student exposes (the reference participant's).
    """

    def __init__(self, names: list[str], exposed: int = 0, merge: Merge = HEADS) -> None:
        if not names or not 0 <= exposed < len(names):
            raise ValueError(f"need at least one head and a valid exposed head, got {names} / {exposed}")
        self.names, self.exposed, self.merge = list(names), int(exposed), Merge(merge)

    def as_settings(self) -> dict[str, Any]:
        """The run record's entries (checkpoint ``config``)."""
        return {"merge": self.merge.value, "num_heads": len(self.names), "head_names": self.names,
                "exposed_head": self.names[self.exposed], "exposed_head_index": self.exposed}


def head_layout(dataset: Any, owners: np.ndarray) -> HeadLayout:
    """The heads of a dataset: from its manifest (participants, ``exposed_head``), or one per
    owner index (head 0 exposed) for a plain ``TensorDataset``."""
    manifest = getattr(dataset, "manifest", None)
    if isinstance(manifest, Manifest) and manifest.participants:
        names = manifest.participant_names
        exposed = manifest.exposed_head or manifest.reference
        if exposed not in names:
            raise ValueError(f"the manifest's exposed head {exposed!r} is none of its participants "
                             f"{names}: the dataset is not a heads dataset this code wrote")
        return HeadLayout(names, names.index(exposed), manifest.merge)
    return HeadLayout([f"head{k}" for k in range(int(owners.max()) + 1 if len(owners) else 1)])


def owner_target_stats(targets: Any, owners: np.ndarray, num_owners: int, *,
                       eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Per-owner, per-dimension mean and std of the targets.

    Returns
    -------
    mean, std : Tensor
        float32 ``(num_owners, n)``; ``std`` floored at ``eps``. An owner without samples
        gets mean 0 and std 1 (its head is never trained).
    counts : list of int
        Samples per owner.
    """
    owners = np.asarray(owners, dtype=np.int64)
    if len(owners) != len(targets):
        raise ValueError(f"{len(owners)} owners for {len(targets)} targets")
    if len(owners) and (owners.min() < 0 or owners.max() >= num_owners):
        raise ValueError(f"owners must index the {num_owners} participants, got values in "
                         f"[{owners.min()}, {owners.max()}]")
    dim = int(targets.shape[1])
    mean, std = torch.zeros(num_owners, dim), torch.ones(num_owners, dim)
    counts = []
    for k in range(num_owners):
        rows = np.flatnonzero(owners == k)
        counts.append(int(len(rows)))
        if len(rows):
            # The rows of one owner (a memory map reads only those); float64 inside target_stats.
            chunk = targets[torch.from_numpy(rows)] if isinstance(targets, torch.Tensor) else targets[rows]
            stats = target_stats(chunk if isinstance(chunk, torch.Tensor) else np.asarray(chunk), eps=eps)
            mean[k], std[k] = stats.mean, stats.std
    return mean, std, counts


class _WithOwners(Dataset):
    """``(image, target, owner, row)`` items of a dataset read item by item (no preloading)."""

    def __init__(self, dataset: Any, owners: np.ndarray) -> None:
        self.dataset, self.owners = dataset, owners

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, target = self.dataset[index][:2]
        return image, target, int(self.owners[index]), int(index)


def _owners_of(dataset: Any) -> np.ndarray:
    if isinstance(dataset, TensorDataset):
        if len(dataset.tensors) < 3:
            raise ValueError("a TensorDataset for heads training needs (images, targets, owners)")
        return np.asarray(dataset.tensors[2], dtype=np.int64)
    owners = getattr(dataset, "owners", None)
    if owners is None or len(owners) != len(dataset):
        raise ValueError("a merge=heads dataset needs an owner per sample (owners.npy); train a "
                         "round directory, not an export, or re-run the round")
    return np.asarray(owners, dtype=np.int64)


def teacher_targets(dataset: Any, *, seed: int = 0) -> TeacherTargets:
    """The ``multi-teacher`` targets of a round directory's dataset: pair maps fitted on its
    shared-subset embeddings, and the S position of every row."""
    shared = dataset.shared_embeddings() if hasattr(dataset, "shared_embeddings") else None
    if shared is None:
        raise ValueError("a merge=multi-teacher dataset needs every participant's shared-subset "
                         "embeddings (shared_embeddings.npy): train a round directory, not an export")
    shared_ids = np.asarray(dataset.manifest.shared_ids, dtype=np.int64)
    rows = np.full(len(dataset), -1, np.int64)
    at = np.searchsorted(dataset.sample_ids, shared_ids)
    present = at < len(dataset.sample_ids)
    present[present] &= dataset.sample_ids[at[present]] == shared_ids[present]
    rows[at[present]] = np.flatnonzero(present)
    return TeacherTargets(fit_pair_maps(shared, seed=seed), shared, rows)


def train_on_heads(dataset: Any, config: Optional[TrainConfig] = None, *,
                   on_epoch_end: Optional[EpochCallback] = None) -> TrainResult:
    """Train a student with one head per participant on a ``merge = "heads"`` dataset.

    Parameters
    ----------
    dataset : OptimizedDataset or TensorDataset
        A round directory's dataset (``owners`` and the manifest name the heads), or a
        ``TensorDataset(images uint8 (N, C, H, W), targets (N, n), owners (N,))``.
    config, on_epoch_end
        As in :func:`coopt_flower.student_training.train_on_optimized`.

    Returns
    -------
    TrainResult
        ``model`` is a :class:`~coopt_flower.students.StudentWithHeads` (``head`` is the
        exposed one); ``target_stats`` holds the exposed owner's statistics. The checkpoint
        stores every owner's as ``target_mean``/``target_std`` ``(K, n)``.
    """
    config = config or TrainConfig()
    if len(dataset) < 2:
        raise ValueError("need at least 2 samples to train")
    device = torch.device(config.device)
    owners_np = _owners_of(dataset)
    layout = head_layout(dataset, owners_np)
    targets_all = dataset.tensors[1] if isinstance(dataset, TensorDataset) else dataset.targets
    mean, std, counts = owner_target_stats(targets_all, owners_np, len(layout.names))
    target_dim = int(mean.shape[1])
    multi = layout.merge == Merge.MULTI_TEACHER
    if multi:
        teachers = teacher_targets(dataset, seed=config.seed).to(device)
        criterion: nn.Module = MultiTeacherLoss(mean, std).to(device)
    else:
        criterion = HeadsLoss(mean, std).to(device)
    batch_size = config.batch_size
    arrays = preload_dataset(dataset, config.device, progress=config.progress) if config.preload else None

    if arrays is not None:
        images, targets = arrays
        owners = on_device(torch.from_numpy(owners_np), config.device)

        def batches(gen: torch.Generator) -> Iterable[Any]:
            return loader_order_batches(len(dataset), batch_size, gen)

        def loss(model: nn.Module, idx: torch.Tensor, views) -> torch.Tensor:
            idx = idx.to(images.device)
            own = owners[idx].to(device)
            if multi:
                goals, weights = teachers(targets[idx], own, idx)
                return criterion(model.all_heads(views(images[idx])), goals, weights)
            # Views of the global batch, the rest for this process's share (torchrun; all of it otherwise).
            mine = views.local(idx)
            own = owners[mine].to(device)
            predictions = model(views(images[idx]), torch.cat([own] * VIEWS))
            return criterion(predictions, targets[mine].to(device, torch.float32), own)
    else:
        items = _WithOwners(dataset, owners_np)

        def batches(gen: torch.Generator) -> Iterable[Any]:
            return DataLoader(items, batch_size=batch_size, shuffle=True,
                              drop_last=len(items) % batch_size == 1, generator=gen,
                              num_workers=config.num_workers, pin_memory=device.type == "cuda")

        def loss(model: nn.Module, batch: Any, views) -> torch.Tensor:
            images_b, targets_b, owners_b, rows_b = batch
            own = owners_b.to(device)
            if multi:
                goals, weights = teachers(targets_b, own, rows_b)
                return criterion(model.all_heads(views(images_b)), goals, weights)
            own = views.local(own)
            predictions = model(views(images_b), torch.cat([own] * VIEWS))
            return criterion(predictions, views.local(targets_b).to(device, torch.float32), own)

    recipe = Recipe(
        method="coopt-multi-teacher" if multi else "coopt-heads",
        wrap=lambda backbone: StudentWithHeads(backbone, target_dim, len(layout.names), layout.exposed),
        batches=batches, steps_per_epoch=num_batches(len(dataset), batch_size), loss=loss,
        image_size=config.image_size or int(dataset[0][0].shape[-1]), num_samples=len(dataset),
        settings={"target_dim": target_dim, "samples_per_head": counts, **layout.as_settings()},
        extra_state={"target_mean": mean, "target_std": std},
        # multi-teacher reads every head through model.all_heads, which DDP does not wrap
        distributed=not multi,
    )
    exposed = TargetStats(mean[layout.exposed], std[layout.exposed], counts[layout.exposed])
    return TrainResult(**fit(recipe, config, on_epoch_end=on_epoch_end).fields(), target_stats=exposed)
