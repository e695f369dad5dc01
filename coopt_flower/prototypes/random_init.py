"""``random:ARCH``: a registered architecture with random weights, for ablations.

Weak prototypes still speed up early training; a random-init prototype of the same
architecture measures how much of a prototype's value is its pretraining. Weights are
drawn under a fixed seed (:data:`RANDOM_INIT_SEED`) so that every process builds the same
ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from coopt_flower.prototypes.base import Prototype
from coopt_flower.prototypes.factory import Family, UnknownPrototypeError, family_of, register_family
from coopt_flower.prototypes.spec import PrototypeSpec

__all__ = ["RANDOM_INIT_SEED"]

#: Seed of the torch RNG while a ``random:`` prototype is constructed. Fixed so that two
#: processes (e.g. two Flower nodes, or a run and its resume) build identical weights.
RANDOM_INIT_SEED = 0

# Listed by hand: only these families declare a random-init variant (parse_arch).
_RANDOM_FORMS = ("random:efficientnet-lite0|1|2", "random:open_clip:MODEL", "random:timm:NAME",
                 "random:torchvision:NAME")


@contextlib.contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Make module construction deterministic without disturbing the caller's RNG."""
    # devices=[]: random-init modules are built on CPU; forking CUDA RNGs would
    # initialize CUDA needlessly.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _arch_family(body: str) -> tuple[Family, str, bool]:
    """``ARCH`` -> (its family, the body that family parses, whether ARCH had a prefix)."""
    try:
        family, arch = family_of(body)
    except UnknownPrototypeError:
        raise UnknownPrototypeError(
            f"random:{body}: unknown architecture {body!r}; use one of {', '.join(_RANDOM_FORMS)}"
        ) from None
    except ValueError:
        raise ValueError(
            f"random:{body}: architecture {body!r} names no model; use one of {', '.join(_RANDOM_FORMS)}"
        ) from None
    return family, arch, ":" in body


def _parse_random(body: str) -> tuple[str, str | None]:
    """``random:ARCH`` -> (ARCH, None), ARCH being ``bare-name`` or ``family:MODEL``."""
    family, arch, prefixed = _arch_family(body)
    if family.parse_arch is None:
        raise ValueError(f"random:{body}: family {family.name!r} has no random-init variant")
    name = family.parse_arch(arch)
    return (f"{family.name}:{name}" if prefixed else name), None


@register_family("random", parse=_parse_random, forms=_RANDOM_FORMS)
def _build_random(spec: PrototypeSpec, image_size: int | None, device: str) -> Prototype:
    family, arch, _ = _arch_family(spec.name)
    inner = PrototypeSpec(family=family.name, name=arch, weights=None, raw=spec.raw)
    with _seeded_init(RANDOM_INIT_SEED):
        proto = family.build(inner, image_size, device)
    proto.parsed = spec
    return proto
