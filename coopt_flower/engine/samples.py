"""The round's samples: which images the dataset holds, the shared subset S, and the shards.

:class:`RoundSamples` is drawn once, before anyone is contacted, as a pure function of the
settings and the source (seeded), so a driver can know the samples before the round runs.
Images that cannot be decoded are the data's fault, never a node's: S is drawn from samples
not known to be bad, and drawn again when reading its pixels finds one that does not decode
(the :class:`~coopt_flower.bad_samples.BadSampleLedger` lists them). Once the participants are
known, :meth:`RoundSamples.split` gives each its shard: node-local data to its owner (ids after
the source's), the platform's samples among everyone who can read them as the run's
``partitioner`` says (IID by default; :mod:`coopt_flower.partitions`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from coopt_flower.bad_samples import BadSampleLedger
from coopt_flower.config import RunSettings
from coopt_flower.data import DataSourceError, ImageSource, decode_images, select_samples, \
    select_shared_subset
from coopt_flower.engine.enrollment import Participant
from coopt_flower.partitions import Partitioner, check_labels, label_counts, parse_partitioner, partition

log = logging.getLogger(__name__)


@dataclass
class Shards:
    """Who encodes which samples (global ids), and every id the dataset is to hold."""

    shards: dict[str, np.ndarray]     # the platform's samples, per participant
    local: dict[str, np.ndarray]      # node-local samples, only their owner can read them
    holders: set[str]                 # participants that hold the platform's data
    all_ids: np.ndarray


@dataclass
class RoundSamples:
    """The round's sample ids, its bad-sample ledger and its shared subset S."""

    ids: np.ndarray
    bad: BadSampleLedger
    shared_ids: np.ndarray
    size: int   # |S|
    seed: int
    partitioner: Partitioner = Partitioner("iid")
    labels: np.ndarray | None = None  # of ``ids``, when the source has them (only to partition)

    @classmethod
    def draw(cls, settings: RunSettings, source: ImageSource) -> RoundSamples:
        """The samples (seeded) and S drawn from those not known to be bad.

        Refuses a label-based ``partitioner`` the source's labels cannot serve, before any work.
        """
        ids = select_samples(len(source), settings.num_samples, settings.seed)
        partitioner = parse_partitioner(settings.partitioner)
        labels = source.labels(ids)
        check_labels(partitioner, labels, getattr(source, "spec", "the source"))
        bad = BadSampleLedger(settings.on_bad_sample, source)
        samples = cls(ids, bad, np.empty(0, np.int64), settings.shared_size, settings.seed, partitioner,
                      None if labels is None else np.asarray(labels, np.int64))
        samples.shared_ids = samples._draw_shared()
        return samples

    def _draw_shared(self) -> np.ndarray:
        candidates = self.bad.without_known(self.ids)
        if len(candidates) < self.size:
            raise DataSourceError(f"only {len(candidates)} samples decode, fewer than shared-size={self.size}: "
                                  "fix the images or lower shared-size")
        return select_shared_subset(candidates, self.size, self.seed)

    def read_shared(self, source: ImageSource) -> np.ndarray:
        """S's pixels; an image that does not decode is recorded and S drawn again without it
        (``shared_ids`` then change)."""
        while True:
            pixels, _, bad = decode_images(source, self.shared_ids)
            if not bad:
                return pixels
            self.bad.record([b.as_dict() for b in bad], reported_by="platform")
            self.shared_ids = self._draw_shared()

    def split(self, participants: list[Participant], source_size: int) -> Shards:
        """Every participant's shard, from the survivors of the shared subset.

        Sets every local participant's ``local_base`` (the global id of its first image) and,
        when the source has labels, every holder's ``label_counts``.
        Under ``classes:<k>`` the samples of classes no participant holds are not in the dataset.
        """
        ids = self.bad.without_known(self.ids)
        labels = None if self.labels is None else self.labels[np.searchsorted(self.ids, ids)]
        base, local = source_size, {}
        for p in participants:
            if p.local_count:
                p.local_base = base
                local[p.name] = np.arange(base, base + p.local_count, dtype=np.int64)
                base += p.local_count
        if local and all(p.local_count for p in participants):
            log.warning("every participant holds only node-local data: the platform's samples "
                        "(other than the shared subset) are not part of this dataset")
            ids = np.empty(0, np.int64)
        holders = [p.name for p in participants if not p.local_count]
        shards = dict.fromkeys((p.name for p in participants), np.empty(0, np.int64))
        if holders:
            parts = partition(ids, len(holders), self.partitioner, self.seed, labels)
            shards.update(zip(holders, parts))
            if labels is not None:
                num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
                for p in participants:
                    if p.name in holders:
                        p.label_counts = label_counts(labels[np.searchsorted(ids, shards[p.name])], num_classes)
            if sum(len(part) for part in parts) < len(ids):  # classes nobody holds
                ids = ids[np.isin(ids, np.concatenate(parts))]
        all_ids = np.concatenate([ids, *local.values()]) if local else ids
        return Shards(shards, local, set(holders), all_ids)
