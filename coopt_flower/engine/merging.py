"""The merge phase: pages of the shards checked, aligned and written.

:class:`RoundWriter` owns everything a page goes through on the platform. It queues the pages
of the shards (:meth:`coopt_flower.engine.samples.RoundSamples.split`, drawn among the
participants that got this far, so a failure before this point loses nothing) in a
:class:`~coopt_flower.engine.scheduling.PageScheduler`,
builds each page's request (ids only: nodes read their own copy of the data; node-local data
stays with its owner), checks every reply, applies its participant's map and writes it
straight into the memory-mapped dataset, so memory does not grow with the dataset. A refused
page fails its participant; its unfinished pages go to the others (``on-failure =
"reassign"``) or are listed as missing (``"drop"``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import numpy as np

from coopt_flower.bad_samples import BadSampleLedger
from coopt_flower.config import RunSettings
from coopt_flower.dataset_writer import DatasetWriter, publish_reserve_bytes
from coopt_flower.engine.samples import Shards
from coopt_flower.engine.enrollment import Participant
from coopt_flower.engine.failures import FailureLog
from coopt_flower.engine.plan import AlignmentPlan
from coopt_flower.engine.scheduling import PageScheduler
from coopt_flower.engine.transport import Reply
from coopt_flower.protocol import (EncodeRequest, ReplyRefused, check_bad_samples, check_pixels,
                                   check_reply_targets, reply_limit)

log = logging.getLogger(__name__)


def uploads_images(settings: RunSettings, p: Participant) -> bool:
    """Whether ``p``'s node-local pages come with their images: the platform asks for them
    (``upload-local-images``) and the node consents (its node config
    ``share-local-images``); otherwise only their targets are published."""
    return settings.upload_local_images and p.share_local_images


class RoundWriter:
    """The round's dataset while its pages arrive (open it with :meth:`open`).

    Parameters
    ----------
    settings : RunSettings
    participants : list of Participant
        The survivors of the shared subset, in owner order (row owners index this list).
    plan : AlignmentPlan
        Every participant's map.
    bad : BadSampleLedger
        Where bad samples reported with a page are recorded.
    failures : FailureLog
    scheduler : PageScheduler
    writer : DatasetWriter
    all_ids : np.ndarray
        Every sample id the dataset is to hold.
    """

    def __init__(self, settings: RunSettings, participants: list[Participant], plan: AlignmentPlan,
                 bad: BadSampleLedger, failures: FailureLog, scheduler: PageScheduler,
                 writer: DatasetWriter, all_ids: np.ndarray) -> None:
        self.settings, self.participants, self.plan = settings, participants, plan
        self.bad, self.failures, self.scheduler, self.writer = bad, failures, scheduler, writer
        self.all_ids = all_ids
        self.merged = 0
        self._by_name = {p.name: p for p in participants}
        self._owner = {p.name: i for i, p in enumerate(participants)}

    @classmethod
    @contextlib.contextmanager
    def open(cls, settings: RunSettings, participants: list[Participant], plan: AlignmentPlan, shards: Shards,
             bad: BadSampleLedger, failures: FailureLog, round_dir) -> Iterator[RoundWriter]:
        """Queue every shard's pages and open the dataset writer; an exception discards what
        was written."""
        s = settings
        for p in participants:
            if p.local_count and s.upload_local_images and not p.share_local_images:
                log.info("  %s: its node keeps its %d local images (node config share-local-images=false): "
                         "only their targets are published", p.name, p.local_count)
        scheduler = PageScheduler(
            shards.shards, s.rows_per_page(), s.on_failure, s.min_participants, pinned=shards.local,
            reassign_to=shards.holders,
            pinned_page_sizes={p.name: s.rows_per_page(p.local_image_bytes if uploads_images(s, p) else 0)
                               for p in participants if p.local_count})
        # Publishing adds the ids, every participant's shared-subset embeddings (float32) and
        # the small files: their space is held from the start (see DatasetWriter).
        shared_bytes = len(participants) * s.shared_size * s.target_dim * 4
        reserve = publish_reserve_bytes(len(shards.all_ids), shared_bytes)
        with DatasetWriter(round_dir, shards.all_ids, s.target_dim, s.target_dtype, overwrite=s.overwrite,
                           reserve_bytes=reserve) as writer:
            yield cls(s, participants, plan, bad, failures, scheduler, writer, shards.all_ids)

    # ------------------------------------------------------------------ pages out
    @property
    def live(self) -> list[str]:
        """Participants that have not failed."""
        return self.scheduler.live

    def next_page(self, name: str, *, steal: bool) -> np.ndarray | None:
        """The next page (global ids) for ``name``, which is free now; ``None`` when there is
        nothing it may take (see :meth:`PageScheduler.next_for`)."""
        return self.scheduler.next_for(name, steal=steal)

    def in_flight_target(self, depth: int) -> int:
        """Pages to keep in flight per participant: ``depth`` while there is plenty of work,
        one near the end, so no page waits behind another on a slow node when the round could
        otherwise finish."""
        scheduler = self.scheduler
        return depth if scheduler.pending_pages() >= depth * max(len(scheduler.live), 1) else 1

    def request(self, name: str, ids: np.ndarray) -> tuple[int, EncodeRequest, int]:
        """``(node id, request, reply size limit)`` of one page: the encode request names the
        participant and its encoder; node-local pages carry the node's own indices."""
        s, p = self.settings, self._by_name[name]
        config = s.encode_config(p.encoder, p.slot, p.refined_digest if p.encoder == "refined" else "")
        extra_bytes = 0
        if p.is_local(ids):
            ids = ids - p.local_base
            config.scope = "local"
            config.upload_images = uploads_images(s, p)
            extra_bytes = p.local_image_bytes if config.upload_images else 0
        limit = reply_limit(len(ids), s.target_dim, extra_bytes)
        return p.node_id, EncodeRequest(config, ids=ids.astype(np.int64)), limit

    # ------------------------------------------------------------------ replies in
    def accept(self, name: str, ids: np.ndarray, reply: Reply) -> int:
        """Merge one page if it passes the checks, else fail its participant (its unfinished
        pages are handed on as ``on-failure`` says). Returns the samples merged."""
        p = self._by_name[name]
        local = p.is_local(ids)
        base = p.local_base if local else 0
        try:
            if isinstance(reply, str):
                raise ReplyRefused(reply)
            good, bad, entries = check_bad_samples(reply.bad_samples, ids - base)
            targets = check_reply_targets(reply.targets, reply.ids, good, self.settings.target_dim)
            p.count_encoding(reply)
            pixels = self._uploaded_pixels(p, reply, len(good)) if local else None
        except ReplyRefused as error:
            failure = self.failures.refuse(name, "optimize", str(error))
            action, affected = self.scheduler.fail(name, ids)  # raises RoundFailed below the minimum
            failure.samples_affected, failure.action = affected, action
            log.warning("  %s: %d unfinished samples %s", name, affected, action)
            return 0
        if len(bad):  # raises under on-bad-sample=fail
            self.bad.record(entries, base=base, reported_by=name, local=local)
            self.writer.exclude(bad + base)
            ids = good + base
        self.writer.write(ids, self.plan.maps[name].apply(targets), owner=self._owner[name])
        if pixels is not None:
            self._store_local_images(p, ids - p.local_base, pixels)
        p.num_samples += len(ids)
        self.merged += len(ids)
        return len(ids)

    def _uploaded_pixels(self, p: Participant, reply, count: int) -> np.ndarray | None:
        """A local page's uploaded images, checked (None when images are not uploaded)."""
        if not uploads_images(self.settings, p):
            return None
        earlier = self.writer.arrays.get(p.local_images_file)
        return check_pixels(reply.extra.get("pixels"), count, None if earlier is None else earlier.shape[1:])

    def _store_local_images(self, p: Participant, rows: np.ndarray, pixels: np.ndarray) -> None:
        name = p.local_images_file
        if name not in self.writer.arrays:
            self.writer.create_array(name, (p.local_count, *pixels.shape[1:]), np.uint8)
        self.writer.arrays[name][rows] = pixels

    def node_of(self, name: str) -> int:
        return self._by_name[name].node_id

    def has_failed(self, name: str) -> bool:
        return name in self.scheduler.failed

    def release(self, name: str, pages: list[np.ndarray]) -> None:
        """Hand on the pages a failed participant still had in flight (as ``on-failure`` says)."""
        action, affected = self.scheduler.fail(name, pages)
        if affected:
            log.warning("  %s: %d more in-flight samples %s", name, affected, action)
            self.failures.add_affected(name, affected)

    # ------------------------------------------------------------------ progress
    def pending_samples(self) -> int:
        return self.scheduler.pending_samples()

    def pages_stolen(self, name: str) -> int:
        """Pages ``name`` took from others' queues (``page-assignment = steal``)."""
        return self.scheduler.stolen.get(name, 0)

    def missing_ids(self) -> np.ndarray:
        """Samples no participant delivered (``on-failure = drop``, node-local data of a
        failed node)."""
        return self.scheduler.missing_ids()
