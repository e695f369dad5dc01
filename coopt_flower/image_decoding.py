"""One image file or object as 8-bit RGB pixels, the way a viewer shows it.

The sources of :mod:`coopt_flower.data` that decode images one by one (files, Hugging Face
rows) go through these: :func:`open_rgb` / :func:`to_rgb` turn any Pillow mode into RGB,
:func:`fit_square` gives every image of a source one square size, and :func:`decode_reason`
words a decoder's failure for reports. Pillow is imported only when an image is decoded.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

__all__ = ["decode_reason", "fit_square", "open_rgb", "to_rgb"]


def fit_square(image, size: int):
    """Resize the shorter side to ``size`` (bilinear) and center-crop to ``size x size``:
    sources whose images differ in size hand out one shape per batch."""
    from PIL import Image  # pillow comes with torchvision

    scale = size / min(image.size)
    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                           Image.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def decode_reason(error: BaseException) -> str:
    """The decoder's one-line reason, e.g. ``OSError: image file is truncated (...)``."""
    from coopt_flower.errors import one_line

    return one_line(f"{type(error).__name__}: {error}", table=True)


def _scaled_to_uint8(array: np.ndarray, full_scale: float) -> np.ndarray:
    """Intensities in ``[0, full_scale]`` as uint8 ``[0, 255]`` (rounded, clipped)."""
    scaled = np.asarray(array, dtype=np.float64) * (255.0 / full_scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


#: A 16-bit image whose values all fit in this many bits is probably low-bit-depth data (12-bit
#: sensors: microscopy, medical) stored unscaled, which the 16-bit range shows nearly black.
LOW_BIT_DEPTH = 12


def significant_bits(values: np.ndarray) -> int:
    """Bits the largest value needs (0 for an all-zero image)."""
    top = int(values.max()) if values.size else 0
    return top.bit_length()


def to_rgb(image, on_low_range: Callable[[int], None] | None = None):
    """A Pillow image of any mode as 8-bit RGB, the way a viewer shows it.

    - EXIF orientation is applied (phone photos stand upright).
    - 16-bit (``I;16*``) and 32-bit integer (``I``) grayscale are scaled from the 16-bit range
      (``v * 255 / 65535``); Pillow's own conversion clips them to white. PNG's convention is
      that data of fewer bits is stored scaled up to the full range; an image whose values
      all fit in :data:`LOW_BIT_DEPTH` bits (> 8) was probably stored unscaled and comes out
      dark: ``on_low_range(bits)`` is called for it, so the source can warn.
    - 32-bit float (``F``) is read as intensity in ``[0, 1]``; Pillow's own clips it to 0/1.
    - Transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent index) is composited
      over white, so hidden colour under transparent pixels does not leak into the image.
    - Palette, bilevel, CMYK, YCbCr, LAB and HSV go through Pillow's conversion.
    """
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        full_scale = 1.0 if mode == "F" else 65535.0
        values = np.asarray(image)
        bits = significant_bits(values) if mode != "F" and on_low_range is not None else 0
        if 8 < bits <= LOW_BIT_DEPTH:
            on_low_range(bits)
        gray = _scaled_to_uint8(values, full_scale)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1), "RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(path: str | os.PathLike, on_low_range: Callable[[int], None] | None = None):
    """Open an image file fully decoded as 8-bit RGB (see :func:`to_rgb`); a truncated or
    corrupt file raises here, not later."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return to_rgb(image, on_low_range)
