"""Base classes: :class:`Prototype` (encode with own preprocessing) and :class:`TorchPrototype`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn

from coopt_flower.images import as_uint8_nhwc
from coopt_flower.prototypes.preprocess import Preprocess, preprocess_batch
from coopt_flower.prototypes.spec import PrototypeSpec

__all__ = [
    "DEFAULT_MAX_BATCH",
    "PRECISIONS",
    "Prototype",
    "TorchPrototype",
    "probe_output_dim",
    "torch_device",
]

#: Images per forward pass inside :meth:`Prototype.encode`; bounds peak memory when a
#: caller hands over a whole shard at once.
DEFAULT_MAX_BATCH = 256

#: Inference precisions of :attr:`TorchPrototype.precision`: ``None`` means plain float32,
#: a dtype means CUDA autocast to it.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Prototype:
    """A frozen image encoder with its own preprocessing.

    Attributes
    ----------
    spec : str
        The spec string it was built from.
    parsed : PrototypeSpec
        The parsed spec.
    output_dim : int
        Feature dimension d_k.
    native_size : int
        The model's native input resolution.
    image_size : int
        Resolution actually used (native unless overridden).
    device : torch.device or str
        Where it runs (a str for ONNX prototypes).
    preprocess : Preprocess
        The input pipeline applied by :meth:`encode`.
    max_batch : int
        Images per forward pass inside :meth:`encode`.
    """

    spec: str
    parsed: PrototypeSpec
    output_dim: int
    native_size: int
    image_size: int
    device: Any
    preprocess: Preprocess
    max_batch: int = DEFAULT_MAX_BATCH

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encode a batch of images.

        Parameters
        ----------
        images : numpy.ndarray
            uint8 (B, H, W, 3) RGB at any size (grayscale (B, H, W) accepted).

        Returns
        -------
        numpy.ndarray
            float32 (B, output_dim). No augmentation: the same input always gives the
            same features.
        """
        images = as_uint8_nhwc(images)
        if len(images) == 0:
            return np.empty((0, self.output_dim), dtype=np.float32)
        parts = [self._encode_batch(images[s]) for s in _chunks(len(images), self.max_batch)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Plain-data summary (for logs, manifests and Flower ``query.describe``)."""
        return {
            "spec": self.spec,
            "family": self.parsed.family,
            "name": self.parsed.name,
            "weights": self.parsed.weights,
            "output_dim": self.output_dim,
            "native_size": self.native_size,
            "image_size": self.image_size,
            "device": str(self.device),
            "preprocess": asdict(self.preprocess),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spec={self.spec!r}, output_dim={self.output_dim}, "
            f"image_size={self.image_size}, device={str(self.device)!r})"
        )


class TorchPrototype(Prototype):
    """A prototype backed by a ``torch.nn.Module`` that maps NCHW input to (B, d).

    Parameters
    ----------
    parsed : PrototypeSpec
    module : torch.nn.Module
        Already on ``device``; switched to eval mode and float32 here.
    native_size, image_size : int
    preprocess : Preprocess
    device : torch.device
    """

    def __init__(
        self,
        parsed: PrototypeSpec,
        module: nn.Module,
        *,
        native_size: int,
        image_size: int,
        preprocess: Preprocess,
        device: torch.device,
    ) -> None:
        self.spec = parsed.raw
        self.parsed = parsed
        self.module = module.float().eval().requires_grad_(False)
        self.native_size = int(native_size)
        self.image_size = int(image_size)
        self.preprocess = preprocess
        self.device = device
        # Probe once instead of trusting configs: it gives the true output width and
        # fails here, with the spec in the message, if the model can't take image_size.
        self.output_dim = probe_output_dim(self)

    #: ``fp32``, or on a CUDA device ``bf16`` / ``fp16`` autocast (mixed precision); on the
    #: CPU the setting is ignored and inference stays in float32.
    precision: str = "fp32"

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        autocast_dtype = PRECISIONS[self.precision]
        use_autocast = autocast_dtype is not None and self.device.type == "cuda"
        with torch.inference_mode(), (torch.autocast("cuda", dtype=autocast_dtype) if use_autocast
                                      else contextlib.nullcontext()):
            x = preprocess_batch(images, self.image_size, self.preprocess, self.device)
            feats = self.module(x)
            return feats.reshape(len(feats), -1).float().cpu().numpy()


def probe_output_dim(proto: Prototype) -> int:
    """Feature width of ``proto``, measured with one forward pass of a black image.

    Raises
    ------
    ValueError
        The model cannot run at ``proto.image_size``; the message names the spec.
    """
    try:
        out = proto._encode_batch(np.zeros((1, proto.image_size, proto.image_size, 3), dtype=np.uint8))
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"prototype {proto.spec!r} failed a forward pass at image_size={proto.image_size} "
            f"(native {proto.native_size}): {err}"
        ) from err
    return int(out.shape[1])


def torch_device(device: str) -> torch.device:
    """``torch.device(device)``, refusing CUDA where torch has none (instead of failing later)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False")
    return dev

