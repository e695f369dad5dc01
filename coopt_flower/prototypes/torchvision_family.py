"""``torchvision:NAME``: any torchvision classification model as a prototype, minus its classifier.

Forms: ``torchvision:NAME`` (the model's ``DEFAULT`` weights, downloaded by torchvision on first
use), ``torchvision:NAME/WEIGHTS`` (a named weights entry, ``resnet50/IMAGENET1K_V2``),
``torchvision:NAME@PATH`` (a local state dict of that architecture, with or without its
classifier) and ``random:torchvision:NAME``. The last ``nn.Linear`` (the classifier) becomes the
identity, as for ``torchvision:`` students, so the prototype outputs what the classifier read.
Preprocessing is the weights' own evaluation transform (resize, center crop, mean / std); a
local checkpoint or a random init uses the ``DEFAULT`` weights' transform of the architecture.
"""

from __future__ import annotations

import os

from coopt_flower.prototypes.base import Prototype, TorchPrototype, torch_device
from coopt_flower.prototypes.factory import UnknownPrototypeError, register_family
from coopt_flower.prototypes.preprocess import Preprocess
from coopt_flower.prototypes.spec import PrototypeSpec
from coopt_flower.registry import closest_match

__all__: list[str] = []  # registers the "torchvision" family; nothing to import

#: ImageNet statistics and the classic 224 / 256 crop, for models torchvision ships no weights for.
IMAGENET_PREPROCESS = Preprocess.from_unit_stats((0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                                 crop_fraction=224 / 256, interpolation="bilinear")


def _model_name(name: str) -> str:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        raise UnknownPrototypeError(f"unknown torchvision classification model {name!r}"
                                    f"{closest_match(name, known)}; see torchvision.models.list_models()")
    return name


def _weights_enum(name: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):  # an architecture torchvision ships no weights for
        return None


def _parse_torchvision(body: str) -> tuple[str, str | None]:
    if "@" in body:
        name, _, path = body.partition("@")
        if not path:
            raise ValueError(f"torchvision spec 'torchvision:{body}': empty checkpoint path after '@'")
        return _model_name(name), path
    name, _, weights = body.partition("/")
    name, weights = _model_name(name), weights or "DEFAULT"
    enum = _weights_enum(name)
    if enum is None:
        raise ValueError(f"torchvision:{name} has no pretrained weights in torchvision; use "
                         f"torchvision:{name}@/path/to/state_dict.pth or random:torchvision:{name}")
    if weights not in enum.__members__:
        raise ValueError(f"torchvision:{name}: unknown weights {weights!r}{closest_match(weights, enum.__members__)}; "
                         f"known: {', '.join(enum.__members__)}")
    return name, weights


def _torchvision_arch(body: str) -> str:
    if "@" in body or "/" in body:
        raise ValueError(f"random:torchvision:{body}: random init takes an architecture without weights, "
                         f"e.g. random:torchvision:{body.partition('@')[0].partition('/')[0]}")
    return _model_name(body)


def _preprocess(weights) -> tuple[Preprocess, int]:
    """(the weights' evaluation preprocessing, its crop size)."""
    if weights is None:
        return IMAGENET_PREPROCESS, 224
    t = weights.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return Preprocess.from_unit_stats(t.mean, t.std, crop_fraction=crop / resize,
                                      interpolation=t.interpolation.value), crop


def _load_state_dict(model, path: str, name: str):
    """``model`` with the state dict at ``path``, saved with its classifier or without it."""
    import torch

    from coopt_flower.students import strip_classifier

    if not os.path.isfile(path):
        raise FileNotFoundError(f"torchvision checkpoint {path!r} (spec torchvision:{name}@{path}) does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    full_keys = set(model.state_dict())
    if set(state) == full_keys:
        model.load_state_dict(state)
        return strip_classifier(model, name)
    model = strip_classifier(model, name)
    missing = set(model.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"torchvision:{name}@{path}: the checkpoint is not a state dict of {name} "
                         f"({len(missing)} keys differ, e.g. {sorted(missing)[:3]})")
    model.load_state_dict(state)
    return model


@register_family(
    "torchvision",
    parse=_parse_torchvision,
    forms=("torchvision:NAME", "torchvision:NAME/WEIGHTS", "torchvision:NAME@/path/to/state_dict.(pth|safetensors)"),
    parse_arch=_torchvision_arch,
)
def _build_torchvision(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    import torchvision

    from coopt_flower.students import strip_classifier

    enum = _weights_enum(spec.name)
    local = spec.weights is not None and "@" in spec.raw  # a path; else a weights name
    named = None if spec.weights is None or local else enum[spec.weights]
    preprocess, native = _preprocess(named or (enum.DEFAULT if enum is not None else None))
    # Inception / GoogLeNet add auxiliary classifiers in training mode; a feature extractor
    # does not want them.
    kwargs = {"aux_logits": False, "init_weights": True} if spec.name in ("inception_v3", "googlenet") else {}
    if named is not None:
        kwargs.pop("init_weights", None)
        try:
            model = torchvision.models.get_model(spec.name, weights=named, **kwargs)
        except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
            raise RuntimeError(f"{spec.raw}: could not fetch its weights ({err}); on a machine without "
                               f"network use torchvision:{spec.name}@/path/to/state_dict.pth, or "
                               f"random:torchvision:{spec.name} for a random-init ablation") from err
        model = strip_classifier(model, spec.name)
    else:
        model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
        model = _load_state_dict(model, spec.weights, spec.name) if local else strip_classifier(model, spec.name)
    dev = torch_device(device)
    return TorchPrototype(spec, model.to(dev), native_size=native, image_size=image_size or native,
                          preprocess=preprocess, device=dev)
