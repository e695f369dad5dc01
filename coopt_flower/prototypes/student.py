"""``student:PATH``: a model trained by this project, fed back as a prototype.

Multi-round CoOpt trains a student on an optimized dataset and lets it encode the next
round. The checkpoint stores the architecture, its input size and the normalization it
was trained with, so it is rebuilt exactly; backbone and target head together output the
target space it learned.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from coopt_flower.prototypes.base import Prototype, TorchPrototype, torch_device
from coopt_flower.prototypes.factory import register_family
from coopt_flower.prototypes.preprocess import Preprocess
from coopt_flower.prototypes.spec import PrototypeSpec

__all__ = ["student_prototype"]


def _parse_student(body: str) -> tuple[str, str | None]:
    """``student:PATH`` -> (file name, PATH); the registry has refused an empty PATH."""
    return os.path.basename(body) or body, body


def student_prototype(
    backbone: nn.Module, config: dict[str, Any], *, spec: str, device: str = "cpu",
    image_size: int | None = None,
) -> TorchPrototype:
    """Wrap a trained student backbone as a prototype.

    Parameters
    ----------
    backbone : nn.Module
        From :func:`coopt_flower.checkpoints.load_student` or rebuilt from transported weights.
    config : dict
        The training config (``image_size``, ``mean``, ``std`` in 0..1 units).
    spec : str
        Spec string to report (e.g. ``student:round-1``).
    """
    native = int(config["image_size"])
    pp = Preprocess(mean=tuple(255.0 * float(m) for m in config["mean"]),
                    std=tuple(255.0 * float(v) for v in config["std"]),
                    resize_mode="crop", crop_fraction=1.0, interpolation="bilinear")
    parsed = PrototypeSpec(family="student", name=spec.partition(":")[2] or spec, weights=None, raw=spec)
    dev = torch_device(device)
    return TorchPrototype(parsed, backbone.to(dev), native_size=native,
                          image_size=image_size or native, preprocess=pp, device=dev)


@register_family("student", parse=_parse_student, forms=("student:/path/to/checkpoint.pt",))
def _build_student(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    from coopt_flower.checkpoints import load_student  # imports torch models: only when a student is built

    if not os.path.isfile(str(spec.weights)):
        raise FileNotFoundError(f"student checkpoint {spec.weights} does not exist")
    backbone, head, checkpoint = load_student(str(spec.weights))
    # With its target head the student outputs the target space it was trained on.
    module = backbone if head is None else nn.Sequential(backbone, head)
    return student_prototype(module, checkpoint["config"], spec=spec.raw, device=device,
                             image_size=image_size)
