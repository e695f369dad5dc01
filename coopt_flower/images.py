"""Image batches in the layout a caller needs, whatever layout they arrive in.

Students and probes take torch tensors ``(N, C, H, W)``; prototypes take numpy RGB
``(N, H, W, 3)``. Callers hand over either layout, or grayscale ``(N, H, W)``, so the
layout rules live here once:

* a 3-d batch is grayscale, one channel;
* a 4-d tensor whose axis 1 is not a channel count (1 or 3) but whose last axis is, is
  channels-last and is permuted to channels-first.

A batch whose axis 1 and last axis are both 1 or 3 counts as channels-first: a tensor
cannot say which it is, and ``(N, C, H, W)`` is the layout the tensor callers store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_nchw_images", "as_uint8_nhwc"]

#: Channel counts an image batch may have (grayscale, RGB).
CHANNELS = (1, 3)


def _is_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 4-d batch shape reads as ``(N, H, W, C)`` rather than ``(N, C, H, W)``."""
    return shape[1] not in CHANNELS and shape[-1] in CHANNELS


def as_nchw_images(images: Any, *, uint8_only: bool = True, contiguous: bool = True) -> torch.Tensor:
    """Images as a ``(N, C, H, W)`` tensor, from NCHW, NHWC or grayscale NHW.

    Parameters
    ----------
    images : tensor or array-like
        ``(N, C, H, W)``, ``(N, H, W, C)`` or ``(N, H, W)``, C = 1 or 3. A non-tensor is
        copied (``np.array``), so the result never shares memory with a read-only map.
    uint8_only : bool
        Refuse any dtype but uint8 (training slices its augmentation input from these).
        Feature extraction passes False: it also takes float images.
    contiguous : bool
        Return a contiguous tensor (training indexes batches from it many times).
        False keeps a permuted NHWC input as a strided view, so what reaches the
        evaluation transform has the memory layout it had before.

    Raises
    ------
    ValueError
        If the batch is neither 3-d nor 4-d.
    TypeError
        If ``uint8_only`` and the images are not uint8.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if x.dim() == 3:  # (N, H, W) gray
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"expected images (N, C, H, W) or (N, H, W, C), got {tuple(x.shape)}")
    if _is_channels_last(tuple(x.shape)):
        x = x.permute(0, 3, 1, 2)
    if uint8_only and x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    return x.contiguous() if contiguous else x


def as_uint8_nhwc(images: Any) -> np.ndarray:
    """A uint8 RGB ``(B, H, W, 3)`` array; grayscale ``(B, H, W)`` or ``(B, H, W, 1)`` is
    expanded to RGB.

    Only channels-last input is accepted: prototypes are fed what image sources hand out,
    which is always ``(B, H, W, 3)``, and guessing the layout of an array that could be
    either would misread tiny images.

    Raises
    ------
    TypeError
        If the images are not uint8.
    ValueError
        If the shape is not one of the above.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in CHANNELS:
        raise ValueError(f"images must have shape (B, H, W, 3) (or grayscale (B, H, W)), got {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images
