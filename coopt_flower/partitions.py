"""Who holds which of the platform's samples: IID shards, or a simulated non-IID federation.

A run picks one with the run-config key ``partitioner``:

``iid`` (default)
    A seeded shuffle cut into near-equal shards: every participant sees the same distribution.
``dirichlet:<alpha>``
    Label skew: each class is split among the participants in Dirichlet(alpha) proportions
    (flwr-datasets' ``DirichletPartitioner``); alpha = 0.1 leaves each participant a few
    dominant classes, alpha = 100 is close to IID.
``classes:<k>``
    Each participant holds exactly k classes (flwr-datasets' ``PathologicalPartitioner``, the
    first class of participant i is class i mod C, so with C participants or more every class
    is held). Samples of classes nobody holds are left out of the dataset, with a warning.
``sizes:<w0>,<w1>,...``
    Size skew: IID content, participant i holds a share w_i / sum(w) of the samples
    (flwr-datasets' ``SizePartitioner`` over a seeded shuffle); one weight per participant.

Labels are read here only to *simulate* who holds what; targets, alignment and training never
see them. A source without labels refuses a label-based partitioner before any work, and a
partition that leaves a participant without samples is refused with the values to change.
Every partition is a pure function of the ids, the labels, the number of participants and
the seed, and every shard is returned sorted (a participant reads its images in storage order).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

PARTITIONER_FORMS = ("iid", "dirichlet:<alpha>", "classes:<k>", "sizes:<w0>,<w1>,...")


class PartitionError(ValueError):
    """The partitioner cannot split these samples; the message says which value to change."""


@dataclass(frozen=True)
class Partitioner:
    """A parsed ``partitioner`` value."""

    kind: str                       # "iid", "dirichlet", "classes" or "sizes"
    alpha: float = 0.0              # dirichlet
    classes: int = 0                # classes
    weights: tuple[float, ...] = ()  # sizes

    @property
    def uses_labels(self) -> bool:
        return self.kind in ("dirichlet", "classes")

    def __str__(self) -> str:
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "classes":
            return f"classes:{self.classes}"
        if self.kind == "sizes":
            return "sizes:" + ",".join(f"{w:g}" for w in self.weights)
        return "iid"


def parse_partitioner(spec: str) -> Partitioner:
    """``"dirichlet:0.1"`` -> ``Partitioner("dirichlet", alpha=0.1)``; a bad value raises
    :class:`PartitionError` naming the forms."""
    text = str(spec).strip()
    kind, _, body = text.partition(":")
    kind = kind.strip().lower()
    forms = ", ".join(PARTITIONER_FORMS)
    if kind == "iid" and not body:
        return Partitioner("iid")
    try:
        if kind == "dirichlet":
            alpha = float(body)
            if not np.isfinite(alpha) or alpha <= 0:
                raise PartitionError(f"partitioner={text}: alpha must be a number > 0 (0.1 = strong "
                                     "label skew, 1 = mild, 100 = near IID)")
            return Partitioner("dirichlet", alpha=alpha)
        if kind == "classes":
            k = int(body)
            if k < 1:
                raise PartitionError(f"partitioner={text}: k (classes per participant) must be >= 1")
            return Partitioner("classes", classes=k)
        if kind == "sizes":
            weights = tuple(float(w) for w in body.split(","))
            if not weights or not all(np.isfinite(w) and w > 0 for w in weights):
                raise PartitionError(f"partitioner={text}: every weight must be a number > 0, one per "
                                     "participant (e.g. sizes:1,2,4,8)")
            return Partitioner("sizes", weights=weights)
    except ValueError as error:
        if isinstance(error, PartitionError):
            raise
        raise PartitionError(f"partitioner={text}: {body!r} is not a number; use one of {forms}") from None
    raise PartitionError(f"partitioner={text!r} is not known; use one of {forms}")


def check_labels(partitioner: Partitioner, labels: np.ndarray | None, source: str) -> None:
    """Refuse, before any work, a label-based partitioner the source cannot serve."""
    if not partitioner.uses_labels:
        return
    if labels is None:
        raise PartitionError(f"partitioner={partitioner} needs labels to simulate a federation, and {source} "
                             "has none (a flat image folder): use partitioner=iid or sizes:..., or class "
                             "sub-folders")
    if partitioner.kind == "classes":
        num_classes = len(np.unique(labels))
        if partitioner.classes > num_classes:
            raise PartitionError(f"partitioner={partitioner}: the samples hold only {num_classes} classes; "
                                 f"use k <= {num_classes}")


def partition_iid(ids: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Split ``ids`` into ``num_partitions`` non-overlapping shards of near-equal size.

    Shards are random (seeded) but each is returned sorted, so a participant reads its images
    in storage order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    _check_count(len(ids), num_partitions)
    rng = np.random.default_rng([int(seed), 0x1D5])
    shuffled = ids[rng.permutation(len(ids))]
    return [np.sort(part) for part in np.array_split(shuffled, num_partitions)]


def partition(ids: np.ndarray, num_partitions: int, partitioner: Partitioner | str, seed: int,
              labels: np.ndarray | None = None) -> list[np.ndarray]:
    """The shards of ``ids`` (one sorted array per participant) under ``partitioner``.

    ``labels[i]`` is the label of ``ids[i]``; needed by the label-based partitioners only.
    Under ``classes:<k>`` the shards may not cover every id (classes nobody holds).
    """
    p = parse_partitioner(partitioner) if isinstance(partitioner, str) else partitioner
    ids = np.asarray(ids, dtype=np.int64)
    if p.kind == "iid":
        return partition_iid(ids, num_partitions, seed)
    _check_count(len(ids), num_partitions)
    if p.kind == "sizes":
        if len(p.weights) != num_partitions:
            raise PartitionError(f"partitioner={p} gives {len(p.weights)} weights for {num_partitions} "
                                 f"participants: give one weight per participant")
        rows = _sizes_rows(len(ids), p.weights, seed)
    else:
        check_labels(p, labels, "this source")
        labels = np.asarray(labels)
        if labels.shape != ids.shape:
            raise ValueError(f"{labels.shape[0]} labels for {len(ids)} ids")
        rows = _label_rows(p, labels, num_partitions, seed)
    shards = [np.sort(ids[r]) for r in rows]
    empty = [i for i, s in enumerate(shards) if len(s) == 0]
    if empty:
        raise PartitionError(f"partitioner={p} leaves participant(s) {', '.join(map(str, empty))} of "
                             f"{num_partitions} without samples ({len(ids)} samples): raise num-samples, "
                             "use fewer participants" + (" or a larger alpha" if p.kind == "dirichlet" else ""))
    held = sum(len(s) for s in shards)
    if held < len(ids):
        log.warning("partitioner=%s: %d of %d samples belong to classes no participant holds; they are "
                    "left out of the dataset", p, len(ids) - held, len(ids))
    return shards


def label_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """How many samples of each class (0 .. num_classes - 1)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


def _check_count(num_ids: int, num_partitions: int) -> None:
    if num_partitions < 1:
        raise ValueError(f"need at least one partition, got {num_partitions}")
    if num_partitions > num_ids:
        raise PartitionError(f"{num_partitions} participants but only {num_ids} samples: raise num-samples "
                             "or use fewer participants")


def _sizes_rows(num_ids: int, weights: tuple[float, ...], seed: int) -> list[np.ndarray]:
    from datasets import Dataset
    from flwr_datasets.partitioner import SizePartitioner

    shares = np.asarray(weights) / sum(weights)
    sizes = np.floor(shares * num_ids).astype(int)
    sizes[np.argsort(-(shares * num_ids - sizes), kind="stable")[: num_ids - sizes.sum()]] += 1
    order = np.random.default_rng([int(seed), 0x512E5]).permutation(num_ids)
    partitioner = SizePartitioner([int(s) for s in sizes])
    partitioner.dataset = Dataset.from_dict({"row": order})
    return [np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64) for i in range(len(sizes))]


def _label_rows(p: Partitioner, labels: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, PathologicalPartitioner

    if p.kind == "dirichlet":
        # min_partition_size=1: flwr-datasets draws again (up to 10 times) while a participant is empty.
        partitioner = DirichletPartitioner(num_partitions, "label", p.alpha, min_partition_size=1,
                                           self_balancing=False, shuffle=True, seed=int(seed))
    else:
        partitioner = PathologicalPartitioner(num_partitions, "label", p.classes,
                                              class_assignment_mode="first-deterministic", shuffle=True,
                                              seed=int(seed))
    partitioner.dataset = Dataset.from_dict({"row": np.arange(len(labels)), "label": labels.tolist()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flwr-datasets warns per redraw; the outcome is reported below
        try:
            return [np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64)
                    for i in range(num_partitions)]
        except ValueError as error:
            if "attempts" in str(error):
                raise PartitionError(
                    f"partitioner={p} left a participant with no samples in 10 draws ({len(labels)} samples, "
                    f"{num_partitions} participants): raise alpha or num-samples, or use fewer participants"
                ) from None
            raise PartitionError(f"partitioner={p}: {error}") from None
