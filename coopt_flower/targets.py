"""A participant's work: encode images with its prototype and project them to the common space.

Images are read from the source one batch at a time, so memory is bounded by the batch size
plus the (page-sized) output, never by the shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from coopt_flower.projection import project, projection_matrix


@dataclass
class EncodeStats:
    """How long an encode took; reported back to the platform."""

    num_images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("inf")


def encode_batches(prototype, batches, total: int, *, desc: str = "encode", progress: bool = True,
                   at_most: bool = False):
    """Encode an iterable of uint8 image batches; returns ``(features, stats)``.

    ``features`` is float32 ``(total, d_k)``; with ``at_most``, ``total`` is an upper bound
    (batches may come short of images that did not decode) and the rows encoded are returned.
    """
    features = np.empty((total, prototype.output_dim), dtype=np.float32)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # disable=None: no bar where output is not a terminal (Ray worker logs).
        bar = tqdm(total=total, desc=desc, unit="img", leave=False, disable=None)
    start, row = time.perf_counter(), 0
    for batch in batches:
        out = prototype.encode(batch)
        features[row: row + len(out)] = out
        row += len(out)
        if bar is not None:
            bar.update(len(out))
    if bar is not None:
        bar.close()
    if row != total and not (at_most and row < total):
        raise RuntimeError(f"expected {total} images, encoded {row}")
    return features[:row], EncodeStats(row, time.perf_counter() - start)


def encode_features(
    prototype,
    images_or_source,
    ids: np.ndarray | None,
    *,
    batch_size: int = 128,
    progress: bool = True,
    desc: str = "encode",
    bad_samples: list | None = None,
) -> tuple[np.ndarray, EncodeStats]:
    """The prototype's own features ``psi_k(x)`` for a set of images, batch by batch.

    Parameters
    ----------
    prototype : Prototype
        From :func:`coopt_flower.prototypes.create_prototype`.
    images_or_source : np.ndarray or ImageSource
        Either uint8 images ``(m, H, W, 3)`` (the shared subset, sent as pixels) or a source
        that the ``ids`` are read from batch by batch.
    ids : np.ndarray or None
        Sample ids to read from the source; None when images are given.
    bad_samples : list, optional
        When given, images that cannot be decoded are skipped and appended here
        (:class:`coopt_flower.data.BadSample`); the features then hold the other ids' rows,
        in order. Without it, such an image raises.

    Returns
    -------
    features : np.ndarray
        float32 ``(m, d_k)``.
    stats : EncodeStats
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if ids is None:
        images = np.asarray(images_or_source)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (m, H, W, 3), got {images.dtype} {images.shape}")
        total = len(images)
        batches = (images[i: i + batch_size] for i in range(0, total, batch_size))
    else:
        source, ids = images_or_source, np.asarray(ids, dtype=np.int64)
        total = len(ids)
        if bad_samples is None:
            batches = (source.images(ids[i: i + batch_size]) for i in range(0, total, batch_size))
        else:
            batches = _decoded_batches(source, ids, batch_size, bad_samples)
    return encode_batches(prototype, batches, total, desc=desc, progress=progress,
                          at_most=bad_samples is not None)


def _decoded_batches(source, ids: np.ndarray, batch_size: int, bad_samples: list):
    """Batches of the images that decode; the others are appended to ``bad_samples``."""
    from coopt_flower.data import decode_images

    for i in range(0, len(ids), batch_size):
        pixels, _, bad = decode_images(source, ids[i: i + batch_size])
        bad_samples.extend(bad)
        if len(pixels):
            yield pixels


def compute_targets(
    prototype,
    images_or_source,
    ids: np.ndarray | None,
    *,
    target_dim: int,
    projection_seed: int,
    batch_size: int = 128,
    progress: bool = True,
    desc: str = "encode",
    bad_samples: list | None = None,
) -> tuple[np.ndarray, EncodeStats]:
    """Targets ``y = W_k psi_k(x)`` for a set of images (see :func:`encode_features`).

    ``target_dim`` and ``projection_seed`` define the projection ``W_k`` (it depends only on
    these and the prototype's dim). Returns float32 ``(m, target_dim)`` and the encode stats.
    """
    features, stats = encode_features(prototype, images_or_source, ids, batch_size=batch_size,
                                      progress=progress, desc=desc, bad_samples=bad_samples)
    matrix = projection_matrix(prototype.output_dim, target_dim, projection_seed)
    return project(features, matrix), stats
