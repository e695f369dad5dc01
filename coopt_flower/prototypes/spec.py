"""The parsed form of a prototype spec string.

Kept apart from the factory (which parses specs and builds prototypes) and from the base
classes (whose prototypes carry the spec they were built from), so that both can name it
without either importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PrototypeSpec"]


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
