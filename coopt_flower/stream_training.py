"""The CoOpt student trained from a stream of webdataset shards (:mod:`coopt_flower.streaming`).

The same student, loss, optimizer, schedule and checkpoint as
:func:`coopt_flower.student_training.train_on_optimized`; only the input path differs: batches
come off the stream (shuffle buffer, shards split over torchrun processes and DataLoader
workers) instead of a shuffled index over a memory map. The targets' z-score statistics are
computed first in one streaming pass that reads targets and skips image decoding.

Under torchrun each process streams its own shards and trains on its own local batch
(``batch_size / world_size``); DDP averages the gradients, so a step still sees one global
batch. Ranks hold different sample counts in an epoch, so every rank takes the same number of
steps: the smallest rank's full local batches over all epochs (a few samples per epoch are
left out; single-process training keeps the last batch as the memory-map path does).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any, Iterable, Iterator, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from coopt_flower.distributed import Distributed, DistributedSetupError, current_distribution
from coopt_flower.augment import TrainAugment
from coopt_flower.losses import CoOptLoss
from coopt_flower.streaming import DEFAULT_SHUFFLE_BUFFER, StreamingExport, StreamSpec, rank_samples
from coopt_flower.students import StudentWithHead
from coopt_flower.target_statistics import TargetStats, chunk_stats
from coopt_flower.training_loop import (
    EpochCallback, Recipe, TrainConfig, TrainResult, _epoch_generator, fit, num_batches, view_maker,
)

logger = logging.getLogger(__name__)


def stream_target_stats(spec: StreamSpec, num_workers: int = 0) -> TargetStats:
    """Per-dimension mean/std of every target in the export, in one pass over its shards that
    decodes no image."""
    stream = StreamingExport(spec, shuffle_buffer=0, decode=False)
    loader = DataLoader(stream, batch_size=8192, num_workers=num_workers)
    return chunk_stats(targets for _, targets in loader)


def stream_steps(spec: StreamSpec, batch_size: int, epochs: int, seed: int, dist: Distributed) -> int:
    """Steps per epoch on every rank (see the module docstring)."""
    if not dist.active:
        return num_batches(int(spec.num_samples or 0), batch_size)
    local = batch_size // dist.world_size
    counts = [min(rank_samples(spec, seed, _epoch_key(seed, e), dist.world_size)) for e in range(epochs)]
    steps = min(counts) // local
    left_out = 1 - steps * batch_size / int(spec.num_samples or 1)
    if steps >= 1 and left_out > 0.1:  # few shards over many ranks: the smallest rank sets the pace
        logger.warning("streaming over %d processes trains %d of %d samples per epoch (%.0f%% left out: the "
                       "shards split unevenly); export with fewer samples per shard for more, smaller shards",
                       dist.world_size, steps * batch_size, spec.num_samples, 100 * left_out)
    if steps < 1:
        raise DistributedSetupError(f"a rank streams only {min(counts)} samples in an epoch, fewer than one "
                                    f"local batch of {local}: use fewer processes, a smaller batch size, or "
                                    "export with fewer samples per shard")
    return steps


def _epoch_key(seed: int, epoch: int) -> int:
    # The stream's epoch key: the seed of fit's generator for that epoch (see ``batches``).
    return _epoch_generator(seed, epoch).initial_seed()


def _batched(samples: Iterable[Any], size: int, keep_last: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Stack ``(image, target)`` items into batches of ``size`` (a last batch of 2 or more
    kept when ``keep_last``; BatchNorm cannot train on one sample)."""
    iterator = iter(samples)
    while chunk := list(itertools.islice(iterator, size)):
        if len(chunk) == size or (keep_last and len(chunk) >= 2):
            yield torch.stack([c[0] for c in chunk]), torch.stack([c[1] for c in chunk])


def train_on_stream(spec: StreamSpec, config: Optional[TrainConfig] = None, *,
                    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                    on_epoch_end: Optional[EpochCallback] = None) -> TrainResult:
    """Train the CoOpt student on a webdataset export streamed from its shards.

    Parameters
    ----------
    spec : StreamSpec
        The export's shards (:meth:`StreamSpec.from_export`).
    config : TrainConfig, optional
        As for :func:`~coopt_flower.student_training.train_on_optimized`; ``image_size``
        defaults to the first streamed image's width; ``num_workers`` DataLoader workers
        split this process's shards.
    shuffle_buffer : int
        Samples held for shuffling.
    """
    config = config or TrainConfig()
    dist = current_distribution()
    if dist.active and config.batch_size % dist.world_size:
        raise DistributedSetupError(f"batch size {config.batch_size} does not split over {dist.world_size} "
                                    f"processes: use a multiple of {dist.world_size}")
    device = torch.device(config.device)
    stats = stream_target_stats(spec, config.num_workers)
    if spec.num_samples is None:  # shards given by URL: counted by the statistics pass
        spec = dataclasses.replace(spec, num_samples=stats.count)
    criterion = CoOptLoss(stats.mean, stats.std).to(device)
    local_batch = config.batch_size // dist.world_size
    steps = stream_steps(spec, config.batch_size, config.epochs, config.seed, dist)
    stream = StreamingExport(spec, shuffle_buffer=shuffle_buffer, seed=config.seed, rank=dist.rank,
                             world_size=dist.world_size)
    # The first streamed image's width, read only when the config does not set a size.
    image_size = int(config.image_size or next(iter(StreamingExport(spec, shuffle_buffer=0)))[0].shape[-1])
    augment = config.augment or TrainAugment(image_size)
    local_views: dict[str, Any] = {}

    def batches(gen: torch.Generator) -> Iterable[Any]:
        # fit's epoch generator is seeded from (seed, epoch): its seed keys the stream's shard
        # order and buffer, and with the rank this process's views (a resumed run draws the same).
        key = gen.initial_seed()
        stream.set_epoch(key)
        rank_gen = torch.Generator().manual_seed(key * 1_009 + dist.rank)
        local_views["views"] = view_maker(augment, device, config.channels_last, rank_gen, Distributed())
        loader = DataLoader(stream, batch_size=None, num_workers=config.num_workers)
        return itertools.islice(_batched(loader, local_batch, keep_last=not dist.active), steps)

    def loss(model: nn.Module, batch: Any, _views) -> torch.Tensor:
        images, targets = batch
        views = local_views["views"]
        return criterion(model(views(images)), targets.to(device, torch.float32, non_blocking=True))

    recipe = Recipe(
        method="coopt", wrap=lambda backbone: StudentWithHead(backbone, int(stats.mean.numel())),
        batches=batches, steps_per_epoch=steps, loss=loss, image_size=image_size,
        # Under torchrun what the ranks train per epoch (a whole number of global batches).
        num_samples=steps * config.batch_size if dist.active else int(spec.num_samples or 0),
        settings={"target_dim": int(stats.mean.numel()), "input": "stream", "shuffle_buffer": shuffle_buffer},
        extra_state={"target_mean": stats.mean, "target_std": stats.std}, distributed=True,
    )
    return TrainResult(**fit(recipe, config, on_epoch_end=on_epoch_end).fields(), target_stats=stats)
