"""BYOL's own views: two asymmetric augmentations, as the BYOL paper and lightly's BYOL transform.

A baseline runs as its users run it. BYOL (Grill et al. 2020, table 6; lightly's
``BYOLView1Transform`` / ``BYOLView2Transform``) draws each image's two views from two
different pipelines, both with RandomResizedCrop(scale 0.08-1), a horizontal flip,
ColorJitter(0.4, 0.4, 0.2, 0.1) with p = 0.8 and RandomGrayscale(p = 0.2):

=========  ===============  =====================
view       Gaussian blur    solarization
=========  ===============  =====================
first      p = 1.0          p = 0.0
second     p = 0.1          p = 0.2
=========  ===============  =====================

The blur's sigma is drawn in ``[0.1, 2.0]`` pixels at 224 px (its kernel is a tenth of the
image); here it is scaled to the students' image size, so a 32 px image is blurred as much as
the paper blurs a 224 px one. ``blur=False`` leaves the blur out, as lightly's CIFAR-10
benchmark does for 32 px images. Which of the two serves a student is a choice, made on the
validation split like every other.

The batch-wise style is :mod:`coopt_flower.augment`'s (per-sample parameters drawn as tensors
from an optional CPU generator; the same on any device).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from coopt_flower.augment import (IMAGENET_MEAN, IMAGENET_STD, color_jitter, normalize, random_grayscale,
                                  random_resized_crop, to_float)

__all__ = ["BYOL_VIEWS", "ByolViews", "gaussian_blur", "solarize"]

#: The view pipelines a BYOL run may use (the benchmark's ``byol_views``): ``shared`` is the
#: augmentation every method shares (:class:`coopt_flower.augment.TrainAugment`).
BYOL_VIEWS = ("shared", "byol", "byol-noblur")

PAPER_SIZE = 224
PAPER_SIGMA = (0.1, 2.0)


def _chosen(n: int, p: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Which of ``n`` images an operation of probability ``p`` applies to."""
    return torch.rand(n, generator=generator) < p


def gaussian_blur(images: torch.Tensor, sigma: tuple[float, float], *, p: float, kernel_size: int,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Blur each image with probability ``p``, with its own sigma drawn in ``sigma`` (pixels).

    A separable Gaussian of ``kernel_size`` taps (odd), reflect-padded, applied to the whole
    batch at once as a grouped convolution.
    """
    if p <= 0.0:
        return images
    n, c, h, w = images.shape
    apply = _chosen(n, p, generator).to(images.device)
    sigmas = (torch.rand(n, generator=generator) * (sigma[1] - sigma[0]) + sigma[0]).to(images)
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    taps = torch.exp(-(offsets.view(1, -1) ** 2) / (2.0 * sigmas.view(-1, 1) ** 2))
    taps = (taps / taps.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n * c, k)
    x = images.reshape(1, n * c, h, w)
    pad = min(radius, h - 1, w - 1)
    if pad < radius:  # tiny images: reflect padding cannot reach past the border
        taps = taps[:, radius - pad: radius + pad + 1]
        taps = taps / taps.sum(dim=1, keepdim=True)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), taps.view(n * c, 1, 1, -1), groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), taps.view(n * c, 1, -1, 1), groups=n * c)
    return torch.where(apply.view(-1, 1, 1, 1), x.reshape(n, c, h, w), images)


def solarize(images: torch.Tensor, *, p: float, threshold: float = 0.5,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` of each image with probability ``p``
    (float images in [0, 1], as torchvision's ``RandomSolarize`` at 128 / 255)."""
    if p <= 0.0:
        return images
    apply = _chosen(images.shape[0], p, generator).to(images.device).view(-1, 1, 1, 1)
    return torch.where(apply & (images >= threshold), 1.0 - images, images)


class _View:
    """One of BYOL's two pipelines, on a uint8 or float ``(B, C, H, W)`` batch."""

    def __init__(self, image_size: int, *, blur_p: float, solarize_p: float, blur: bool,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        self.image_size, self.mean, self.std = int(image_size), tuple(mean), tuple(std)
        self.blur_p = blur_p if blur else 0.0
        self.solarize_p = solarize_p
        scale = self.image_size / PAPER_SIZE
        self.sigma = (PAPER_SIGMA[0] * scale, PAPER_SIGMA[1] * scale)
        self.kernel_size = max(3, int(round(0.1 * self.image_size)) // 2 * 2 + 1)

    def __call__(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        x = random_resized_crop(to_float(images), self.image_size, scale=(0.08, 1.0), flip_p=0.5,
                                generator=generator)
        x = color_jitter(x, 0.4, 0.4, 0.2, 0.1, p=0.8, generator=generator)
        x = random_grayscale(x, 0.2, generator=generator)
        x = gaussian_blur(x, self.sigma, p=self.blur_p, kernel_size=self.kernel_size, generator=generator)
        x = solarize(x, p=self.solarize_p, generator=generator)
        return normalize(x, self.mean, self.std)


class ByolViews:
    """BYOL's two views: ``per_view[0]`` makes every image's first view, ``per_view[1]`` its
    second (the training loop asks each in turn).

    Parameters
    ----------
    image_size : int
        Output side in pixels.
    blur : bool
        The paper's Gaussian blur (scaled to ``image_size``); False leaves it out.
    mean, std : sequence of float
        Normalization statistics (ImageNet by default, as every student here).
    """

    def __init__(self, image_size: int, *, blur: bool = True, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std, self.blur = tuple(mean), tuple(std), blur
        kw = dict(blur=blur, mean=mean, std=std)
        self.per_view = (_View(image_size, blur_p=1.0, solarize_p=0.0, **kw),
                         _View(image_size, blur_p=0.1, solarize_p=0.2, **kw))

    @classmethod
    def named(cls, name: str, image_size: int) -> Optional[ByolViews]:
        """The pipelines of one of :data:`BYOL_VIEWS` (None for ``shared``)."""
        if name not in BYOL_VIEWS:
            raise ValueError(f"unknown BYOL views {name!r}; known: {', '.join(BYOL_VIEWS)}")
        return None if name == "shared" else cls(image_size, blur=name == "byol")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.per_view[0].image_size}, blur={self.blur})"
