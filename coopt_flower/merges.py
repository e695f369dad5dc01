"""How participants' targets become one dataset: the run-config key ``merge``, as one enum.

Every module that asks "was this dataset aligned?" or "does the student need one head per
participant?" compares against :class:`Merge`, so the values are spelled once.
"""

from __future__ import annotations

from enum import StrEnum


class Merge(StrEnum):
    """The ``merge`` values (a ``str``: ``Merge.HEADS == "heads"`` and JSON holds the value).

    ``align-*`` map every participant into the reference's space with a map fitted on the
    shared subset S; ``heads`` writes every participant's targets in its own space and the
    student learns one head per participant; ``multi-teacher`` writes the same per-owner
    spaces, and the student learns every head on every sample: its owner's exact target and
    the others predicted from it by ridge maps between every pair of participants, fitted on
    S (:mod:`coopt_flower.multi_teacher`); ``none`` merges the targets as they are (the
    "no alignment" ablation: the paper's "target distribution inconsistency", measured).
    """

    ALIGN_RIDGE = "align-ridge"
    ALIGN_PROCRUSTES = "align-procrustes"
    ALIGN_CCA = "align-cca"
    HEADS = "heads"
    MULTI_TEACHER = "multi-teacher"
    NONE = "none"

    @property
    def fits_maps(self) -> bool:
        """Whether the merge fits a map into the reference's space (an ``align-*`` value)."""
        return self in ALIGN_METHODS

    @property
    def per_owner_spaces(self) -> bool:
        """Whether row ``i``'s target stays in the space of its owner (``heads``,
        ``multi-teacher``): the student has one head per participant."""
        return self in (Merge.HEADS, Merge.MULTI_TEACHER)


#: The merges that fit an affine map on S (:func:`coopt_flower.alignment.fit_alignment`).
ALIGN_METHODS = (Merge.ALIGN_RIDGE, Merge.ALIGN_PROCRUSTES, Merge.ALIGN_CCA)

#: The order in which the values are listed to users.
MERGE_CHOICES = tuple(m.value for m in Merge)

#: What a dataset written before the manifest recorded its merge was.
LEGACY_MERGE = Merge.ALIGN_RIDGE


def parse_merge(value: str) -> Merge:
    """``value`` as a :class:`Merge`; one line naming every choice otherwise."""
    try:
        return Merge(str(value))
    except ValueError:
        raise ValueError(f"merge must be one of {', '.join(MERGE_CHOICES)}, got {value!r}") from None
