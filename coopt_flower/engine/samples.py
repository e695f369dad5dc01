"""The round's samples: which images the dataset holds, the shared subset S, and the shards.

:class:`RoundSamples` is drawn once, before anyone is contacted, as a pure function of the
settings and the source (seeded), so a driver can know the samples before the round runs.
Images that cannot be decoded are the data's fault, never a node's: S is drawn from samples
not known to be bad, and drawn again when reading its pixels finds one that does not decode
(the :class:`~coopt_flower.bad_samples.BadSampleLedger` lists them). Once the participants are
known, :meth:`RoundSamples.split` gives each its shard: node-local data to its owner (ids after
the source's), the platform's samples IID among everyone who can read them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from coopt_flower.bad_samples import BadSampleLedger
from coopt_flower.config import RunSettings
from coopt_flower.data import DataSourceError, ImageSource, decode_images, partition_iid, select_samples, \
    select_shared_subset
from coopt_flower.engine.enrollment import Participant

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

    @classmethod
    def draw(cls, settings: RunSettings, source: ImageSource) -> RoundSamples:
        """The samples (seeded) and S drawn from those not known to be bad."""
        ids = select_samples(len(source), settings.num_samples, settings.seed)
        bad = BadSampleLedger(settings.on_bad_sample, source)
        samples = cls(ids, bad, np.empty(0, np.int64), settings.shared_size, settings.seed)
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

        Sets every local participant's ``local_base`` (the global id of its first image).
        """
        ids = self.bad.without_known(self.ids)
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
            shards.update(zip(holders, partition_iid(ids, len(holders), self.seed)))
        all_ids = np.concatenate([ids, *local.values()]) if local else ids
        return Shards(shards, local, set(holders), all_ids)
