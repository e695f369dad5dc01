"""open_clip image towers: pretrained tags, local checkpoints, or random init.

Only the image side of a CLIP model is built and kept; the text tower is never
downloaded. A custom architecture must be registered in the process first with
``open_clip.add_model_config(path)``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from coopt_flower.prototypes.base import Prototype, TorchPrototype, torch_device
from coopt_flower.prototypes.factory import UnknownPrototypeError, register_family
from coopt_flower.prototypes.preprocess import Preprocess
from coopt_flower.prototypes.spec import PrototypeSpec

__all__: list[str] = []  # registers the "open_clip" family; nothing to import


#: open_clip's own schemas: the model's config and weights come from a Hugging Face Hub repo
#: (``hf-hub:ORG/REPO``) or a local directory (``local-dir:/path``) holding
#: ``open_clip_config.json`` and the weights, so the spec names no separate tag.
SCHEMAS = ("hf-hub:", "local-dir:")


def _split_open_clip(body: str) -> tuple[str, str | None]:
    """``MODEL/TAG`` or ``MODEL@PATH`` or bare ``MODEL`` -> (MODEL, TAG/PATH/None);
    ``hf-hub:ORG/REPO`` and ``local-dir:PATH`` -> (the whole body, the schema)."""
    for schema in SCHEMAS:
        if body.startswith(schema):
            if not body[len(schema):].strip("/"):
                raise ValueError(f"open_clip spec 'open_clip:{body}': nothing after {schema!r}")
            return body, schema[:-1]
    if "@" in body:
        name, _, weights = body.partition("@")
        if not weights:
            raise ValueError(f"open_clip spec {body!r}: empty checkpoint path after '@'")
    elif "/" in body:
        name, _, weights = body.partition("/")
        if not weights or "/" in weights:
            raise ValueError(
                f"open_clip spec {body!r}: expected MODEL/TAG with one '/' (model names use "
                f"'-', e.g. 'ViT-B-32', not 'ViT-B/32')"
            )
    else:
        name, weights = body, None
    if not name:
        raise ValueError(f"open_clip spec {body!r}: empty model name")
    return name, weights


def _parse_open_clip(body: str) -> tuple[str, str | None]:
    name, weights = _split_open_clip(body)
    if weights is None:
        raise ValueError(
            f"open_clip spec {'open_clip:' + body!r} names no weights: use open_clip:{name}/TAG "
            f"(pretrained tag) or open_clip:{name}@/path/to/checkpoint, or random:open_clip:{name} "
            f"for a random-init ablation"
        )
    return name, weights


def _open_clip_arch(body: str) -> str:
    name, weights = _split_open_clip(body)
    if body.startswith(SCHEMAS):
        raise ValueError(f"random:open_clip:{body}: a {weights} model brings its own weights; random init "
                         f"takes a built-in architecture, e.g. random:open_clip:ViT-B-32")
    if weights is not None:
        raise ValueError(
            f"random:open_clip:{body}: random init takes an architecture without weights, "
            f"e.g. random:open_clip:{name}"
        )
    return name


def _open_clip_preprocess(cfg: dict[str, Any]) -> Preprocess:
    """Translate open_clip's preprocess cfg (0..1 mean/std) to a :class:`Preprocess`."""
    mode = cfg.get("resize_mode", "shortest")
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bilinear", "bicubic"):
        interpolation = "bicubic"  # torch has no antialiased 'random'/'lanczos'; bicubic is closest
    return Preprocess(
        mean=tuple(float(m) * 255.0 for m in cfg["mean"]),
        std=tuple(float(s) * 255.0 for s in cfg["std"]),
        # 'longest' letterboxes; for the square images used here it equals 'squash'.
        resize_mode="crop" if mode == "shortest" else "squash",
        crop_fraction=1.0,
        interpolation=interpolation,
    )


def _square(size: Any) -> int:
    if isinstance(size, (tuple, list)):
        if size[0] != size[-1]:
            raise ValueError(f"non-square native size {tuple(size)} is not supported")
        size = size[0]
    return int(size)


@register_family(
    "open_clip",
    parse=_parse_open_clip,
    forms=("open_clip:MODEL/TAG", "open_clip:MODEL@/path/to/checkpoint.(safetensors|bin|pt)",
           "open_clip:hf-hub:ORG/REPO", "open_clip:local-dir:/path/to/dir"),
    parse_arch=_open_clip_arch,
)
def _build_open_clip(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    import open_clip

    schema = spec.name.startswith(SCHEMAS)
    config = _schema_config(spec) if schema else open_clip.get_model_config(spec.name)
    if config is None:
        raise UnknownPrototypeError(
            f"open_clip has no model config {spec.name!r} (spec {spec.raw!r}); known: "
            f"{', '.join(open_clip.list_models())}. Register custom configs first with "
            f"open_clip.add_model_config(path_to_json_or_dir)."
        )
    weights = spec.weights
    # Model names and tags never contain '@', so it marks the local-checkpoint form.
    if not schema and weights is not None and "@" in spec.raw and not os.path.isfile(weights):
        raise FileNotFoundError(f"open_clip checkpoint {weights!r} from spec {spec.raw!r} does not exist")
    native = _square(config["vision_cfg"].get("image_size", 224))
    size = image_size or native
    dev = torch_device(device)
    model = open_clip.create_model(
        spec.name,
        pretrained=None if schema else weights,
        # open_clip falls back to random weights, with a warning, when a hub repo or a local
        # directory has none: a prototype must not.
        require_pretrained=schema,
        # open_clip interpolates ViT position embeddings when loading a checkpoint into a
        # model built for another resolution.
        force_image_size=size if size != native else None,
        pretrained_text=False,  # never download a text tower: only the image side is used
        device="cpu",
    )
    preprocess = _open_clip_preprocess(open_clip.get_model_preprocess_cfg(model))
    # For CLIP and CustomTextCLIP, encode_image(x) == visual(x) (unnormalized); keeping
    # only the image tower frees the text tower's memory (~150 MB for ViT-B-32).
    encoder = model.visual if isinstance(model, (open_clip.CLIP, open_clip.CustomTextCLIP)) else _EncodeImage(model)
    return TorchPrototype(spec, encoder.to(dev), native_size=native, image_size=size, preprocess=preprocess, device=dev)


def _schema_config(spec: PrototypeSpec) -> dict[str, Any]:
    """The ``model_cfg`` of an ``hf-hub:`` / ``local-dir:`` model, read before building it (its
    native size decides whether open_clip must resize the position embedding)."""
    import json

    schema, _, where = spec.name.partition(":")
    if schema == "local-dir":
        path = os.path.join(where, "open_clip_config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{spec.raw}: {path} does not exist (a local-dir model is a directory "
                                    f"with open_clip_config.json and its weights)")
    else:
        from huggingface_hub import hf_hub_download
        try:
            path = hf_hub_download(where, "open_clip_config.json")
        except Exception as err:  # noqa: BLE001 - offline, unknown repo, no access: one message
            raise RuntimeError(f"{spec.raw}: could not fetch open_clip_config.json from the Hugging Face Hub "
                               f"({type(err).__name__}: {err}); without network, download the repo once and "
                               f"use open_clip:local-dir:/path/to/it") from err
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if "model_cfg" not in config:
        raise ValueError(f"{spec.raw}: {path} has no 'model_cfg' (not an open_clip model config)")
    return config["model_cfg"]


class _EncodeImage(nn.Module):
    """Fallback for open_clip models whose image features aren't just ``visual(x)`` (CoCa)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


