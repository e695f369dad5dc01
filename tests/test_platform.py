import numpy as np

from coopt_flower.platform import plan_alignment, render_report
from coopt_flower.uniformity import uniform_value


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


def test_report_names_reference_and_every_participant():
    summary = {
        "round": 1, "source": "fashion-mnist", "num_samples": 10, "target_dim": 4,
        "target_dtype": "float16", "shared_size": 2, "reference": "p1",
        "reference_prototype": "onnx:open-nsfw", "dataset_path": "/x",
        "participants": [
            {"name": n, "prototype": p, "output_dim": 8, "num_samples": 5, "uniform_value": -1.0,
             "fit_residual": 0.1, "holdout_residual": 0.2, "alpha": 0.1, "images_per_second": 3.0}
            for n, p in (("p0", "efficientnet-lite0"), ("p1", "onnx:open-nsfw"))
        ],
        "timings": {"describe": 1.0},
    }
    text = render_report(summary)
    assert "**p1** (`onnx:open-nsfw`)" in text and "| p1 (reference) |" in text
    assert "`efficientnet-lite0`" in text and "| describe | 1.0 s |" in text


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
