"""One input path for every training method: images decoded once, batches sliced by index.

Supervised and BYOL training index uint8 tensors held in memory; CoOpt training used to read
an :class:`~coopt_flower.dataset_format.OptimizedDataset` one image at a time through a
``DataLoader``, which made its steps pay an input tax the baselines did not. Here a dataset's
images are decoded once, in chunks, into a uint8 ``(N, 3, H, W)`` tensor (on the training
device when that is a GPU, else in memory, or memory-mapped from a temporary file above
``memory_limit_bytes``), and every method slices its batches from such a tensor.

:func:`loader_order_batches` draws from the epoch's generator exactly what a shuffling
``DataLoader`` draws (its base seed, then the permutation), so the faster path yields the
same ``(image, target)`` pairs, and the same augmentations, as the loader did.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import TensorDataset

from coopt_flower.images import as_nchw_images

logger = logging.getLogger(__name__)

#: Above this many bytes of decoded images, they are memory-mapped from a temporary file.
DEFAULT_MEMORY_LIMIT = 4 << 30


def loader_order_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches in the order ``DataLoader(shuffle=True, generator=...)`` visits them,
    drawing what it draws from ``generator`` at the same moments.

    A DataLoader iterator first draws a base seed for its workers, then its sampler draws
    ``randperm(n)``; when the sampler runs out it draws one more permutation, which happens
    before a final partial batch is yielded (so before that batch's augmentations). A final
    batch of one sample is dropped (BatchNorm cannot train on it).
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    perm = torch.randperm(n, generator=generator)
    full, rest = divmod(n, batch_size)
    for start in range(0, full * batch_size, batch_size):
        yield perm[start: start + batch_size]
    torch.randperm(n, generator=generator)
    if rest >= 2:
        yield perm[full * batch_size:]


def dataset_images(dataset: Any) -> Optional[Any]:
    """A callable ``rows -> uint8 (B, H, W, 3)`` reading a dataset's images in batches,
    or None when the dataset can only be read item by item."""
    if getattr(dataset, "transform", None) is not None:
        return None  # a per-item transform must see every item
    read = getattr(dataset, "images", None)
    return read if callable(read) else None


def preload_images(read_rows, n: int, *, device: str | torch.device = "cpu",
                   chunk_size: int = 4096, memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
                   progress: bool = False) -> torch.Tensor:
    """Decode ``n`` images once into a uint8 ``(n, 3, H, W)`` tensor.

    Parameters
    ----------
    read_rows : callable
        ``read_rows(rows) -> uint8 (B, H, W, 3)``.
    device : str or torch.device
        A CUDA device keeps the images there (batches are then sliced without a host copy).
    memory_limit_bytes : int
        On the CPU, larger image sets are memory-mapped from a temporary file (deleted when
        the tensor is), so host memory stays bounded for any dataset size.
    """
    device = torch.device(device)
    first = np.asarray(read_rows(np.arange(min(n, 1))))
    shape = (n, first.shape[3], first.shape[1], first.shape[2])
    nbytes = int(np.prod(shape))
    if device.type == "cpu" and nbytes > memory_limit_bytes:
        fd, path = tempfile.mkstemp(prefix="coopt-images-", suffix=".u8")
        try:
            storage = np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
        finally:
            os.close(fd)
            os.unlink(path)  # the mapping keeps the data alive; nothing is left behind
        logger.info("memory-mapping %d decoded images (%.1f GB)", n, nbytes / 1e9)
    else:
        storage = np.empty(shape, np.uint8)
    chunks = range(0, n, chunk_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="decode images", leave=False)
    for start in chunks:
        rows = np.arange(start, min(start + chunk_size, n))
        storage[rows[0]: rows[-1] + 1] = np.asarray(read_rows(rows)).transpose(0, 3, 1, 2)
    images = torch.from_numpy(storage)
    return images.to(device) if device.type != "cpu" else images


def on_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """A training set's tensor where its batches are sliced: on a GPU when training there."""
    device = torch.device(device)
    return tensor.to(device) if device.type != "cpu" else tensor


def preload_dataset(dataset: Any, device: str | torch.device, *,
                    progress: bool = False) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """A dataset of ``(image, target)`` as two tensors that batches are sliced from.

    Parameters
    ----------
    dataset : TensorDataset or OptimizedDataset
        A ``TensorDataset`` whose first two tensors are the images and the targets, or a
        dataset that reads its images in batches (:func:`dataset_images`) and holds its
        targets as an ``(N, n)`` array.
    device : str or torch.device
        The training device (see :func:`on_device`).
    progress : bool
        Show a bar while the images are decoded.

    Returns
    -------
    (images, targets) or None
        uint8 ``(N, C, H, W)`` images and the targets, or None when the dataset can only be
        read item by item (then a DataLoader reads it).
    """
    if isinstance(dataset, TensorDataset):
        images, targets = as_nchw_images(dataset.tensors[0]), dataset.tensors[1]
    else:
        read = dataset_images(dataset)
        targets = getattr(dataset, "targets", None)
        if read is None or targets is None or getattr(targets, "ndim", 0) != 2:
            return None
        images = preload_images(read, len(dataset), device=device, progress=progress)
        # float32 as the loader returns them (float16 on disk): 4 bytes per value, N x n.
        targets = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    return on_device(images, device), on_device(targets, device)
