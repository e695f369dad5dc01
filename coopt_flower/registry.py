"""One small name -> factory registry, shared by prototypes, students and data sources.

In the style of ``timm.create_model`` and ``open_clip.create_model``: users name a thing
with one string, and the string is looked up in a table. A string is either

* a plain *name* registered as such (``small-cnn``, ``efficientnet-lite0``), or
* ``prefix:body`` for a *prefix family* (``timm:resnet18``, ``open_clip:ViT-B-32/openai``,
  ``folder:/data/images``): the prefix selects the factory and the body is handed to it.

Unknown strings raise the registry's error class with a message that lists what exists
(``unknown student 'foo'. Known: resnet18-small, small-cnn; forms: timm:<model name>``),
so a typo in a config file is fixed from the message alone. The first sentence says what
is wrong and the second what exists, so a caller may keep only the first for one-line
reports.

Example
-------
>>> sources = Registry("data source")
>>> @sources.register("folder", prefix=True, forms=("folder:/absolute/path",))
... def _open_folder(path):
...     return f"images under {path}"
>>> sources.create("folder:/data")
'images under /data'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Entry", "Registry", "SEPARATOR", "closest_match"]

#: Separates a prefix family from its body, as in ``timm:resnet18``.
SEPARATOR = ":"

T = TypeVar("T")


def closest_match(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to a misspelt ``name``, or ``""``.

    Libraries with thousands of names (timm, torchvision) cannot list them in a message; the
    nearest one is what fixes a typo.
    """
    found = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name.

    Attributes
    ----------
    name : str
        The plain name, or the prefix of a family (without the separator).
    value : T
        The factory (or any object the owner of the registry keeps per name).
    prefix : bool
        ``True`` for a prefix family, matched by ``name:body``.
    forms : tuple of str
        Human-readable forms shown in listings and error messages.
    body_required : bool
        For a prefix family: whether ``name`` alone (empty body) is refused.
    """

    name: str
    value: T
    prefix: bool
    forms: tuple[str, ...]
    body_required: bool = True


class Registry(Generic[T]):
    """A table of plain names and prefix families, each mapped to a value.

    Parameters
    ----------
    kind : str
        What is registered, for messages: ``"student"``, ``"prototype"``, ``"data source"``.
    error : type of Exception
        Raised for a string that names nothing registered.
    malformed_error : type of Exception, optional
        Raised for a known prefix with an empty body; defaults to ``error``.
    prefix_noun : str
        What a prefix is called in messages (``"prefix"``, ``"family"``).
    """

    def __init__(
        self,
        kind: str,
        *,
        error: type[Exception] = ValueError,
        malformed_error: type[Exception] | None = None,
        prefix_noun: str = "prefix",
    ) -> None:
        self.kind = kind
        self.error = error
        self.malformed_error = malformed_error or error
        self.prefix_noun = prefix_noun
        # One table in registration order, so listings read in the order the owner wrote
        # them; keyed by (is_prefix, name) because a name may be both ("fashion-mnist").
        self._entries: dict[tuple[bool, str], Entry[T]] = {}

    # ------------------------------------------------------------------ registration

    def add(
        self,
        name: str,
        value: T,
        *,
        prefix: bool = False,
        forms: tuple[str, ...] | None = None,
        body_required: bool = True,
        replace: bool = False,
    ) -> Entry[T]:
        """Register ``value`` under a plain name or a prefix.

        Parameters
        ----------
        name : str
            Plain name, or the prefix of a family (without the separator).
        value : T
            What :meth:`resolve` returns for the name.
        prefix : bool
            Register a prefix family matched by ``name:body``.
        forms : tuple of str, optional
            Forms for listings; default ``(name,)`` for a plain name and
            ``("name:NAME",)`` for a prefix. Give ``()`` to list nothing (e.g. an alias
            already covered by another entry's forms).
        body_required : bool
            For a prefix family: refuse ``name`` alone. With ``False``, ``name`` alone is
            accepted and resolves with an empty body.
        replace : bool
            Overwrite an existing registration instead of refusing it.

        Returns
        -------
        Entry

        Raises
        ------
        ValueError
            The name is empty, contains the separator, or is already registered (and
            ``replace`` is false).
        """
        self._check_name(name)
        if (prefix, name) in self._entries and not replace:
            what = f"{self.kind} {self.prefix_noun}" if prefix else self.kind
            raise ValueError(f"{what} {name!r} is already registered")
        if forms is None:
            forms = (f"{name}{SEPARATOR}NAME",) if prefix else (name,)
        entry = Entry(name, value, prefix, tuple(forms), body_required)
        self._entries[prefix, name] = entry
        return entry

    def register(self, name: str, **options: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the decorated object unchanged.

        Parameters
        ----------
        name : str
            Plain name or prefix.
        **options
            Keyword arguments of :meth:`add` (``prefix``, ``forms``, ``body_required``,
            ``replace``).
        """

        self._check_name(name)  # fail where the decorator is written, not where it is applied

        def decorator(value: T) -> T:
            self.add(name, value, **options)
            return value

        return decorator

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name or SEPARATOR in name:
            raise ValueError(
                f"{self.kind} names must be non-empty and must not contain {SEPARATOR!r} "
                f"(got {name!r}): {SEPARATOR!r} separates a prefix family from its body"
            )

    def unregister(self, name: str, *, prefix: bool = False) -> Entry[T]:
        """Remove and return a registration (for tests and plugins that clean up)."""
        if (prefix, name) not in self._entries:
            raise self.unknown(name)
        return self._entries.pop((prefix, name))

    # ------------------------------------------------------------------ lookup

    def resolve(self, spec: str) -> tuple[Entry[T], str]:
        """Find the entry a string names.

        Plain names win over prefixes, so a registered name may look like ``a:b``'s
        prefix without being one. Surrounding whitespace is ignored.

        Parameters
        ----------
        spec : str
            ``name`` or ``prefix:body``.

        Returns
        -------
        Entry, str
            The entry and its body: the text after ``prefix:`` for a prefix family, the
            whole (stripped) name for a plain name.

        Raises
        ------
        error
            Nothing is registered under the name or prefix; the message lists what is.
        malformed_error
            A known prefix with an empty body where one is required.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise self.malformed_error(f"empty {self.kind} spec {spec!r}. {self.describe()}")
        spec = spec.strip()
        if (False, spec) in self._entries:
            return self._entries[False, spec], spec
        head, _, body = spec.partition(SEPARATOR)
        entry = self._entries.get((True, head))
        if entry is None:
            raise self.unknown(spec)
        if entry.body_required and not body:
            raise self.malformed_error(
                f"{self.kind} spec {spec!r} is missing a name after {head + SEPARATOR!r}. "
                f"{self.describe()}"
            )
        return entry, body

    def create(self, spec: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory a string names.

        A prefix family's factory receives the body first: ``factory(body, *args,
        **kwargs)``; a plain name's factory receives ``factory(*args, **kwargs)``.
        """
        entry, body = self.resolve(spec)
        factory: Callable[..., Any] = entry.value  # type: ignore[assignment]
        return factory(body, *args, **kwargs) if entry.prefix else factory(*args, **kwargs)

    def get(self, name: str, *, prefix: bool = False) -> T:
        """The value registered under a plain name (or, with ``prefix=True``, a prefix)."""
        if (prefix, name) not in self._entries:
            raise self.unknown(name)
        return self._entries[prefix, name].value

    def __contains__(self, spec: object) -> bool:
        if not isinstance(spec, str):
            return False
        spec = spec.strip()
        return (False, spec) in self._entries or (True, spec.partition(SEPARATOR)[0]) in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        """Entries in registration order."""
        return iter(list(self._entries.values()))

    # ------------------------------------------------------------------ listings

    def names(self) -> list[str]:
        """Registered plain names, sorted."""
        return sorted(name for prefix, name in self._entries if not prefix)

    def prefixes(self) -> list[str]:
        """Registered prefixes, in registration order."""
        return [name for prefix, name in self._entries if prefix]

    def forms(self) -> list[str]:
        """Every entry's forms, in registration order, without repeats."""
        return list(dict.fromkeys(form for entry in self._entries.values() for form in entry.forms))

    def describe(self) -> str:
        """``"Known: a, b; forms: p:NAME, q:PATH"``: what a spec may be, for messages.

        Forms equal to a plain name are not repeated after ``forms:``.
        """
        names = self.names()
        forms = [form for form in self.forms() if form not in names]
        parts = [f"known: {', '.join(names)}"] if names else []
        if forms:
            parts.append(f"forms: {', '.join(forms)}")
        text = "; ".join(parts) or f"no {self.kind} is registered"
        return text[0].upper() + text[1:]

    def unknown(self, spec: str, detail: str = "") -> Exception:
        """The error for a string that names nothing registered (returned, not raised).

        Parameters
        ----------
        spec : str
            The offending string.
        detail : str
            Extra advice appended to the message.
        """
        head, sep, _ = spec.partition(SEPARATOR)
        if sep and (True, head) not in self._entries:
            what = f"unknown {self.kind} {self.prefix_noun} {head!r} in {spec!r}"
        else:
            what = f"unknown {self.kind} {spec!r}"
        return self.error(f"{what}. {self.describe()}" + (f". {detail}" if detail else ""))
