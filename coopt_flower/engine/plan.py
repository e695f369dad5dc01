"""The round's plan, a pure function of the embeddings of the shared subset S.

:func:`plan_round` scores every prototype (and the refined student, if any) on S, lets the
student replace worse prototypes (``refinement = "switch"``), picks the reference by the
``reference-score`` and fits every participant's map into the reference's space as the
``merge`` says. Nothing here moves a message or touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coopt_flower.alignment import AlignmentMap, fit_alignment
from coopt_flower.merges import Merge
from coopt_flower.refinement import REFINEMENT_POLICIES
from coopt_flower.scores import HIGHER_IS_BETTER, score_prototypes, select_reference, uniform_value

STUDENT = "student"  # the refined student's name among the reference candidates


@dataclass
class AlignmentPlan:
    """Scores per participant, the reference, and each participant's map to it.

    ``scores`` holds every reference score (:data:`coopt_flower.scores.REFERENCE_SCORES`) of
    every participant and candidate; ``reference_score`` is the one that chose the reference
    and ``merge`` the merge the maps serve.
    """

    uniform_values: dict[str, float]
    reference: str
    maps: dict[str, AlignmentMap] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    merge: Merge = Merge.ALIGN_RIDGE
    reference_score: str = "uniform"


@dataclass
class RoundPlan:
    """What a round decided from S before any page is encoded.

    Attributes
    ----------
    own_values : dict
        Every participant's uniform value on S with its own prototype.
    student_value : float or None
        The refined student's uniform value on S (None without a student).
    encoders : dict
        Participant -> ``"own"`` or ``"student"`` (who encodes its shard with the student).
    shared : dict
        Participant -> the embeddings of S that represent it (the student's for those that
        switched): what its map was fitted on, and what the dataset stores.
    alignment : AlignmentPlan
        Scores, the reference and every map.
    """

    own_values: dict[str, float]
    student_value: float | None
    encoders: dict[str, str]
    shared: dict[str, np.ndarray]
    alignment: AlignmentPlan


def choose_encoders(policy: str, own_values: dict[str, float], student_value: float | None) -> dict[str, bool]:
    """Which participants encode with the student (True) rather than their own prototype."""
    if policy not in REFINEMENT_POLICIES:
        raise ValueError(f"refinement must be one of {REFINEMENT_POLICIES}, got {policy!r}")
    if policy != "switch" or student_value is None:
        return {name: False for name in own_values}
    return {name: student_value < value for name, value in own_values.items()}


def plan_round(own: dict[str, np.ndarray], student: np.ndarray | None, *, refinement: str, merge: Merge,
               reference_score: str, seed: int) -> RoundPlan:
    """Uniform values, who encodes with the student, the reference and every map.

    Parameters
    ----------
    own : dict
        Participant name -> its ``(|S|, n)`` projected embeddings of S (rows in the shared ids'
        order for everyone).
    student : np.ndarray, optional
        The refined student's embeddings of S.
    refinement, merge, reference_score : str
        The run config's policies (:mod:`coopt_flower.refinement`, :class:`Merge`,
        :mod:`coopt_flower.scores`).
    seed : int
        Seeds the held-out split of S that picks each map's regularizer.
    """
    own_values = {name: uniform_value(emb) for name, emb in own.items()}
    student_value = uniform_value(student) if student is not None else None
    switch = choose_encoders(refinement, own_values, student_value)
    # Participants that switched are represented by the student's embeddings of S.
    shared = {name: student if switch[name] else emb for name, emb in own.items()}
    candidates = {STUDENT: student} if student is not None else None
    alignment = plan_alignment(shared, seed=seed, candidates=candidates, merge=merge,
                               reference_score=reference_score)
    encoders = {name: STUDENT if switch[name] else "own" for name in own}
    return RoundPlan(own_values, student_value, encoders, shared, alignment)


def plan_alignment(shared_embeddings: dict[str, np.ndarray], *, seed: int = 0,
                   candidates: dict[str, np.ndarray] | None = None, merge: Merge = Merge.ALIGN_RIDGE,
                   reference_score: str = "uniform") -> AlignmentPlan:
    """Score prototypes on the shared subset S and fit every map to the best-scoring one.

    Parameters
    ----------
    shared_embeddings : dict
        Participant name -> ``(|S|, n)`` projected embeddings of S, rows in the same order
        (the shared ids) for everyone.
    seed : int
        Seeds the held-out split of S used to pick each map's regularizer.
    candidates : dict, optional
        Extra reference candidates that encode no shard themselves (multi-round: the
        platform's refined student). They are scored, may become the reference, get no map.
    merge : Merge
        An ``align-*`` merge fits the maps with that method; ``heads`` and ``none`` give every
        participant the identity map (targets are merged as they are). Scores and the
        reference are computed all the same.
    reference_score : str
        The score that picks the reference (:data:`coopt_flower.scores.REFERENCE_SCORES`);
        every score is computed and reported either way.

    A participant whose embeddings are the reference's (it runs the reference's encoder)
    gets the identity map.
    """
    if not shared_embeddings:
        raise ValueError("no participant returned shared-subset embeddings")
    if reference_score not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown reference score {reference_score!r}: use one of "
                         f"{', '.join(HIGHER_IS_BETTER)}")
    merge = Merge(merge)
    pool = {**shared_embeddings, **(candidates or {})}
    shapes = {name: emb.shape for name, emb in pool.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"shared-subset embeddings disagree in shape: {shapes}")
    scores = score_prototypes(pool, seed=seed)
    reference = select_reference(scores[reference_score], HIGHER_IS_BETTER[reference_score])
    target = pool[reference]
    maps = {
        name: AlignmentMap.identity(emb.shape[1]) if not merge.fits_maps or np.array_equal(emb, target)
        else fit_alignment(emb, target, method=merge, seed=seed)
        for name, emb in shared_embeddings.items()
    }
    return AlignmentPlan(scores["uniform"], reference, maps, scores, merge, reference_score)
