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
                 | "open_clip:hf-hub:" ORG "/" REPO  # config + weights from the HF Hub
                 | "open_clip:local-dir:" DIR        # the same, from a local directory
    timm        := "timm:" NAME                      # timm's default weights, downloads
                 | "timm:" NAME "@" PATH             # local checkpoint file
                 | "timm:hf-hub:" ORG "/" REPO
    torchvision := "torchvision:" NAME ["/" WEIGHTS] # DEFAULT or a named weights entry
                 | "torchvision:" NAME "@" PATH      # local state dict
    efficientnet-lite (bare names)
                := "efficientnet-lite0" | "efficientnet-lite1" | "efficientnet-lite2"
    onnx        := "onnx:" ONNX_NAME                  # "open-nsfw"
    random      := "random:" ARCH                     # same architecture, random init
    ARCH        := "efficientnet-lite0|1|2" | "open_clip:" MODEL | "timm:" NAME | "torchvision:" NAME
    student     := "student:" PATH                    # a checkpoint of this project

Examples: ``open_clip:ViT-B-32/laion2b_s34b_b79k``,
``open_clip:ViT-B-32@/models/vit_b_32.safetensors``, ``efficientnet-lite0``,
``onnx:open-nsfw``, ``random:efficientnet-lite0``, ``random:open_clip:ViT-B-32``,
``open_clip:hf-hub:timm/ViT-B-16-SigLIP``, ``timm:convnext_tiny.fb_in22k``,
``torchvision:resnet50/IMAGENET1K_V2``, ``random:timm:resnet18``.

* Unknown timm / torchvision names are refused with the closest known name; the weights
  that download (open_clip tags, ``hf-hub:``, ``timm:NAME``, ``torchvision:NAME``) say, when
  the machine has no network, which local form to use instead.
* Another installed package adds a family through the entry-point group
  ``coopt_flower.prototypes`` (:data:`ENTRY_POINT_GROUP`): its module calls
  :func:`register_family` when imported.

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
* ``student:PATH`` is a model trained by this project (``coopt_flower.student_training``
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
smaller one trades feature quality for CPU time. Nothing is cached at module level:
callers keep the prototype they build.

Modules
-------
``spec`` (:class:`PrototypeSpec`), ``factory`` (spec parsing, the family registry
:data:`PROTOTYPE_FAMILIES`, :func:`create_prototype`), ``preprocess``, ``base``
(:class:`Prototype`, :class:`TorchPrototype`), and one module per family:
``efficientnet_lite``, ``open_clip``, ``onnx``, ``timm_family``, ``torchvision_family``,
``random_init``, ``student``.
"""

from __future__ import annotations

# Family modules register themselves on import; their order is the order of
# available_prototypes() and of the forms listed in error messages.
from coopt_flower.prototypes import (  # noqa: F401
    efficientnet_lite, open_clip, onnx, timm_family, torchvision_family, random_init, student)
from coopt_flower.prototypes.base import DEFAULT_MAX_BATCH, PRECISIONS, Prototype, TorchPrototype
from coopt_flower.prototypes.factory import (
    ENTRY_POINT_GROUP,
    PROTOTYPE_FAMILIES,
    UnknownPrototypeError,
    available_prototypes,
    create_prototype,
    load_plugin_families,
    parse_prototype_spec,
    register_family,
)
from coopt_flower.prototypes.onnx import OnnxPrototype
from coopt_flower.prototypes.preprocess import Preprocess, preprocess_batch
from coopt_flower.prototypes.random_init import RANDOM_INIT_SEED
from coopt_flower.prototypes.spec import PrototypeSpec
from coopt_flower.prototypes.student import student_prototype

# Families other packages register through entry points, after the built-in ones.
load_plugin_families()

__all__ = [
    "DEFAULT_MAX_BATCH",
    "ENTRY_POINT_GROUP",
    "PRECISIONS",
    "PROTOTYPE_FAMILIES",
    "RANDOM_INIT_SEED",
    "OnnxPrototype",
    "Preprocess",
    "Prototype",
    "PrototypeSpec",
    "TorchPrototype",
    "UnknownPrototypeError",
    "available_prototypes",
    "create_prototype",
    "load_plugin_families",
    "parse_prototype_spec",
    "preprocess_batch",
    "register_family",
    "student_prototype",
]
