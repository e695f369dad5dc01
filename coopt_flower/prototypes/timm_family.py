"""``timm:NAME``: any timm image model as a prototype, its pooled pre-logits features.

Forms: ``timm:NAME`` (timm's default pretrained weights for NAME, downloaded from the Hugging
Face Hub on first use; ``NAME`` may carry timm's own tag, ``resnet50.a1_in1k``),
``timm:NAME@PATH`` (a local ``.safetensors`` / ``.pth`` checkpoint of that architecture, as
timm's ``pretrained_cfg_overlay=dict(file=PATH)`` loads it), ``timm:hf-hub:ORG/REPO`` (timm's
own hub form) and ``random:timm:NAME``. The model is built with ``num_classes=0``, so its
forward returns the pooled features timm puts in front of the classifier; preprocessing is the
model's own evaluation config (``timm.data.resolve_model_data_config``).
"""

from __future__ import annotations

import os

from coopt_flower.prototypes.base import Prototype, TorchPrototype, torch_device
from coopt_flower.prototypes.factory import UnknownPrototypeError, register_family
from coopt_flower.prototypes.preprocess import Preprocess
from coopt_flower.prototypes.spec import PrototypeSpec
from coopt_flower.registry import closest_match

__all__: list[str] = []  # registers the "timm" family; nothing to import

#: ``weights`` of a spec that asks for timm's default pretrained weights (no local file).
PRETRAINED = "pretrained"
_HUB_FORMS = ("hf-hub:", "hf_hub:")


def _timm_name(name: str) -> str:
    """``name`` if timm knows it (hub ids are resolved by timm when built), else the closest."""
    import timm

    if name.startswith(_HUB_FORMS) or timm.is_model(name):
        return name
    known = timm.list_models()
    raise UnknownPrototypeError(f"unknown timm model {name!r}{closest_match(name.split('.')[0], known)}; "
                                f"timm.list_models() lists the {len(known)} names")


def _parse_timm(body: str) -> tuple[str, str | None]:
    name, at, path = body.partition("@")
    if at and not path:
        raise ValueError(f"timm spec 'timm:{body}': empty checkpoint path after '@'")
    return _timm_name(name), (path if at else PRETRAINED)


def _timm_arch(body: str) -> str:
    if "@" in body:
        raise ValueError(f"random:timm:{body}: random init takes an architecture without weights, "
                         f"e.g. random:timm:{body.partition('@')[0]}")
    return _timm_name(body)


def _create(name: str, weights: str | None, image_size: int | None):
    import timm

    kwargs = {"num_classes": 0}
    if weights not in (None, PRETRAINED):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"timm checkpoint {weights!r} (spec timm:{name}@{weights}) does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    pretrained = weights is not None
    if image_size:
        try:  # ViTs are built for their input size (timm resamples the position embedding)
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError:  # CNNs take any size and no img_size argument
            pass
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as err:
        if weights != PRETRAINED:
            raise
        raise RuntimeError(f"timm:{name}: could not fetch its pretrained weights ({err}); on a machine "
                           f"without network use timm:{name}@/path/to/checkpoint.safetensors, or "
                           f"random:timm:{name} for a random-init ablation") from err


@register_family(
    "timm",
    parse=_parse_timm,
    forms=("timm:NAME", "timm:NAME@/path/to/checkpoint.(safetensors|pth)", "timm:hf-hub:ORG/REPO"),
    parse_arch=_timm_arch,
)
def _build_timm(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    import timm

    model = _create(spec.name, spec.weights, image_size)
    cfg = timm.data.resolve_model_data_config(model)  # the pretrained config: its native size
    native = int(cfg["input_size"][-1])
    size = image_size or native
    preprocess = Preprocess.from_unit_stats(cfg["mean"], cfg["std"], crop_fraction=cfg.get("crop_pct", 1.0),
                                            interpolation=cfg.get("interpolation", "bicubic"))
    dev = torch_device(device)
    return TorchPrototype(spec, model.to(dev), native_size=native, image_size=size, preprocess=preprocess,
                          device=dev)
