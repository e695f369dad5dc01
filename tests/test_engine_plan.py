"""The round's plan (coopt_flower.engine.plan): scores on S, the reference, the maps, who switches."""

import numpy as np
import pytest

from coopt_flower.engine.plan import choose_encoders, plan_alignment, plan_round
from coopt_flower.scores import uniform_value


def test_plan_picks_most_uniform_reference_and_aligns_others():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(300, 16))
    # A participant whose space is an affine image of the reference, but squashed together.
    squashed = good @ (0.1 * rng.normal(size=(16, 16))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0)
    assert plan.reference == "b"
    assert plan.uniform_values["b"] == uniform_value(good)
    assert plan.maps["b"].is_identity
    assert plan.maps["a"].holdout_residual < 1e-3
    assert np.allclose(plan.maps["a"].apply(squashed), good, atol=0.05)


def test_candidate_can_become_reference_and_its_users_get_identity():
    rng = np.random.default_rng(1)
    student = rng.normal(size=(200, 8))
    own = student @ (0.2 * rng.normal(size=(8, 8))) + 1.0 + 0.5   # squashed: less uniform
    plan = plan_alignment({"a": own, "b": student.copy()}, seed=0, candidates={"student": student})
    # b runs the student's encoder: a tie, either name stands for the same space.
    assert plan.reference in ("b", "student") and set(plan.maps) == {"a", "b"}
    plan = plan_alignment({"a": own}, seed=0, candidates={"student": student})
    assert plan.reference == "student" and set(plan.maps) == {"a"}
    assert not plan.maps["a"].is_identity and "student" in plan.uniform_values
    plan = plan_alignment({"a": own, "b": student.copy()}, seed=0, candidates={"student": student})
    assert plan.maps["b"].is_identity


def test_plan_without_alignment_scores_all_but_maps_nothing():
    rng = np.random.default_rng(2)
    good = rng.normal(size=(100, 8))
    squashed = good @ (0.1 * rng.normal(size=(8, 8))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0, merge="none")
    assert plan.reference == "b" and set(plan.uniform_values) == {"a", "b"}
    assert plan.maps["a"].is_identity and plan.maps["b"].is_identity


def test_plan_uses_the_requested_method_and_reference_score():
    rng = np.random.default_rng(7)
    good = rng.normal(size=(300, 16))
    squashed = good @ (0.1 * rng.normal(size=(16, 16))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0, merge="align-procrustes",
                          reference_score="rankme")
    assert plan.merge == "align-procrustes" and plan.reference_score == "rankme"
    assert plan.reference == "b" and plan.maps["a"].method == "align-procrustes"
    assert set(plan.scores) == {"uniform", "rankme", "consensus", "knn"}
    assert plan.scores["uniform"] == plan.uniform_values
    with pytest.raises(ValueError, match="unknown reference score"):
        plan_alignment({"a": good}, reference_score="vibes")



def test_heads_keep_every_space_but_still_pick_a_reference():
    rng = np.random.default_rng(3)
    good = rng.normal(size=(100, 8))
    squashed = good @ (0.1 * rng.normal(size=(8, 8))) + 5.0
    plan = plan_alignment({"a": squashed, "b": good}, seed=0, merge="heads")
    assert plan.merge == "heads" and plan.reference == "b"
    assert all(m.is_identity for m in plan.maps.values())


def test_switch_sends_worse_prototypes_to_the_student_and_represents_them_by_it():
    rng = np.random.default_rng(4)
    student = rng.normal(size=(120, 8))
    good = student @ rng.normal(size=(8, 8))
    squashed = student @ (0.1 * rng.normal(size=(8, 8))) + 3.0  # far less uniform than the student
    plan = plan_round({"a": squashed, "b": good}, student, refinement="switch", merge="align-ridge",
                      reference_score="uniform", seed=0)
    assert plan.student_value == uniform_value(student)
    switched = {n for n, e in plan.encoders.items() if e == "student"}
    assert switched == {n for n, v in plan.own_values.items() if plan.student_value < v} and "a" in switched
    assert plan.shared["a"] is student  # the map of a participant that switched is fitted on the student's S
    static = plan_round({"a": squashed, "b": good}, student, refinement="join", merge="align-ridge",
                        reference_score="uniform", seed=0)
    assert set(static.encoders.values()) == {"own"} and static.shared["a"] is squashed
    assert "student" in static.alignment.scores["uniform"]


def test_an_unknown_merge_is_refused():
    with pytest.raises(ValueError):
        plan_alignment({"a": np.ones((20, 4))}, merge="average")


def test_policies_choose_encoders():
    values = {"a": -2.0, "b": -1.0}
    assert choose_encoders("static", values, -1.5) == {"a": False, "b": False}
    assert choose_encoders("join", values, -1.5) == {"a": False, "b": False}
    assert choose_encoders("switch", values, -1.5) == {"a": False, "b": True}
    assert choose_encoders("switch", values, None) == {"a": False, "b": False}
    with pytest.raises(ValueError, match="refinement must be one of"):
        choose_encoders("evolve", values, -1.5)
