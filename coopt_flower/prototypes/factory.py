"""Parsing prototype specs, the family registry and the factory :func:`create_prototype`.

Parsing is cheap and imports no model code, so a server can validate specs of models
that only its clients can build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from coopt_flower.prototypes.spec import PrototypeSpec
from coopt_flower.registry import Registry

if TYPE_CHECKING:  # builders return prototypes; the base classes never import the factory
    from coopt_flower.prototypes.base import Prototype

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROTOTYPE_FAMILIES",
    "Family",
    "UnknownPrototypeError",
    "available_prototypes",
    "create_prototype",
    "load_plugin_families",
    "parse_prototype_spec",
    "register_family",
]

#: The entry-point group through which another installed package adds prototype families:
#: ``[project.entry-points."coopt_flower.prototypes"] my-family = "my_package.prototypes"``
#: names a module (or a callable) whose import (or call) runs :func:`register_family`.
ENTRY_POINT_GROUP = "coopt_flower.prototypes"


class UnknownPrototypeError(ValueError):
    """A spec names a family or model this registry does not know."""


ParseFn = Callable[[str], tuple[str, "str | None"]]
BuildFn = Callable[[PrototypeSpec, "int | None", str], "Prototype"]


@dataclass(frozen=True)
class Family:
    """What :func:`register_family` records for one family (see its parameters)."""

    name: str
    parse: ParseFn  # body after "family:" -> (name, weights)
    build: BuildFn  # (spec, image_size or None, device) -> Prototype
    parse_arch: Callable[[str], str] | None  # body without weights -> name; enables random:


#: Every family under its prefix (``open_clip`` for ``open_clip:...``), plus the bare
#: names that select a family without a prefix (``efficientnet-lite0``).
PROTOTYPE_FAMILIES: Registry[Family] = Registry(
    "prototype", error=UnknownPrototypeError, malformed_error=ValueError, prefix_noun="family"
)


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
        taken = [bare for bare in bare_names if bare in PROTOTYPE_FAMILIES]
        if taken:  # checked first so that a refused family leaves no half registration
            raise ValueError(f"prototype names {taken} are already registered")
        family = Family(name, parse, build, parse_arch)
        PROTOTYPE_FAMILIES.add(name, family, prefix=True, forms=tuple(forms))
        for bare in bare_names:  # listed by the family's forms already
            PROTOTYPE_FAMILIES.add(bare, family, forms=())
        return build

    return decorator


def load_plugin_families() -> list[str]:
    """Import every :data:`ENTRY_POINT_GROUP` entry point of the installed packages.

    Called once when :mod:`coopt_flower.prototypes` is imported. A plugin that fails to load
    is reported with a warning that names it and its error, and the built-in families keep
    working (a spec of its family then fails as unknown).

    Returns
    -------
    list of str
        The names of the entry points that loaded.
    """
    import warnings
    from importlib.metadata import entry_points

    loaded = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = point.load()
            if callable(target):
                target()
        except Exception as err:  # noqa: BLE001 - a third-party package must not break the registry
            warnings.warn(f"prototype plugin {point.name!r} ({point.value}) failed to load: "
                          f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
            continue
        loaded.append(point.name)
    return loaded


def available_prototypes() -> list[str]:
    """Human-readable spec forms of every registered family.

    Returns
    -------
    list of str
        E.g. ``["efficientnet-lite0", ..., "open_clip:MODEL/TAG", ..., "random:open_clip:MODEL"]``.
    """
    return PROTOTYPE_FAMILIES.forms()


def parse_prototype_spec(spec: str) -> PrototypeSpec:
    """Parse a spec string into a :class:`PrototypeSpec` (grammar: :mod:`coopt_flower.prototypes`).

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
        Malformed spec of a known family. Every message ends with the known spec forms.
    """
    try:
        entry, body = PROTOTYPE_FAMILIES.resolve(spec)
    except UnknownPrototypeError as err:
        raise UnknownPrototypeError(
            f"{err}. Fix the spec, or register the family with register_family()"
        ) from None
    family = entry.value
    try:
        name, weights = family.parse(body)
    except ValueError as err:  # includes UnknownPrototypeError; keep the type, add the forms
        raise type(err)(f"{err}. {PROTOTYPE_FAMILIES.describe()}") from err
    return PrototypeSpec(family=family.name, name=name, weights=weights, raw=spec)


def family_of(spec: str) -> tuple[Family, str]:
    """The family a spec (or a ``random:`` architecture) selects, and the body it parses.

    Raises
    ------
    UnknownPrototypeError
        Nothing is registered under the spec's prefix or name.
    """
    entry, body = PROTOTYPE_FAMILIES.resolve(spec)
    return entry.value, body


def create_prototype(spec: str, *, image_size: int | None = None, device: str = "cpu") -> Prototype:
    """Build the prototype a spec names.

    Parameters
    ----------
    spec : str
        Prototype spec, see :mod:`coopt_flower.prototypes`.
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
    family = PROTOTYPE_FAMILIES.get(parsed.family, prefix=True)
    return family.build(parsed, size, str(device))
