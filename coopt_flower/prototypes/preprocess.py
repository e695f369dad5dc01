"""Evaluation preprocessing shared by every prototype: uint8 RGB pixels -> model input.

Batched in torch (no per-image PIL): center crop (or squash) -> bilinear/bicubic resize
with antialiasing -> per-channel ``(x - mean) / std`` in 0..255 pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from coopt_flower.images import as_uint8_nhwc

__all__ = ["Preprocess", "preprocess_batch"]


@dataclass(frozen=True)
class Preprocess:
    """How a prototype turns uint8 RGB pixels into model input (evaluation pipeline).

    Attributes
    ----------
    mean, std : tuple of float
        Per-channel, in 0..255 pixel units, in the model's channel order.
    resize_mode : str
        ``"crop"``: center crop a square of side ``crop_fraction * min(H, W)``, then
        resize; ``"squash"``: resize the whole image to a square.
    crop_fraction : float
        Used with ``"crop"``; 1.0 keeps the largest center square (CLIP's
        resize-shortest-side + center-crop), 0.875 is the classic 224/256 eval crop.
    interpolation : str
        ``"bilinear"`` or ``"bicubic"`` (antialiased when downsampling).
    bgr : bool
        Reverse channels to BGR (Caffe-trained models).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: str = "crop"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    bgr: bool = False

    @classmethod
    def from_unit_stats(cls, mean, std, *, crop_fraction: float, interpolation: str) -> "Preprocess":
        """A center-crop pipeline from mean / std in 0..1 units (how timm, torchvision and
        open_clip state them); interpolations torch cannot antialias fall back to bicubic."""
        return cls(mean=tuple(255.0 * float(m) for m in mean), std=tuple(255.0 * float(v) for v in std),
                   resize_mode="crop", crop_fraction=min(1.0, float(crop_fraction)),
                   interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bicubic")


def _center_crop_box(height: int, width: int, fraction: float) -> tuple[int, int, int]:
    """Top, left and side of the centered square crop used before resizing."""
    side = max(1, int(round(min(height, width) * fraction)))
    return (height - side) // 2, (width - side) // 2, side


def preprocess_batch(images: np.ndarray, size: int, pp: Preprocess, device: torch.device | str) -> torch.Tensor:
    """Turn a uint8 RGB batch into a normalized float32 NCHW tensor on ``device``.

    Parameters
    ----------
    images : numpy.ndarray
        uint8, (B, H, W, 3) RGB (grayscale (B, H, W) accepted).
    size : int
        Output height and width.
    pp : Preprocess
        The prototype's pipeline.
    device : torch.device or str
        Where the work happens; the uint8 batch is moved first because it is 4x smaller
        than its float version.

    Returns
    -------
    torch.Tensor
        float32, (B, 3, size, size).
    """
    images = as_uint8_nhwc(images)
    if not images.flags.writeable:  # e.g. a read-only memmap; torch.from_numpy warns on those
        images = images.copy()
    x = torch.from_numpy(images).to(device)
    x = x.permute(0, 3, 1, 2).float()
    if pp.resize_mode == "crop":
        top, left, side = _center_crop_box(x.shape[2], x.shape[3], pp.crop_fraction)
        x = x[:, :, top : top + side, left : left + side]
    elif pp.resize_mode != "squash":
        raise ValueError(f"unknown resize_mode {pp.resize_mode!r}")
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode=pp.interpolation, align_corners=False, antialias=True)
    if pp.bgr:
        x = x.flip(1)
    mean = torch.tensor(pp.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
