"""One round's report (coopt_flower.report), rendered from its manifest."""

from coopt_flower.manifest import Manifest
from coopt_flower.report import render_report


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
    text = render_report(Manifest.from_json(summary))
    assert "**p1** (`onnx:open-nsfw`)" in text and "| p1 (reference) |" in text
    assert "`efficientnet-lite0`" in text and "| describe | 1.0 s |" in text


def test_report_says_which_node_hosted_which_participant():
    summary = {
        "round": 1, "source": "fashion-mnist", "num_samples": 10, "target_dim": 4,
        "target_dtype": "float16", "shared_size": 2, "reference": "p0",
        "reference_prototype": "a", "dataset_path": "/x",
        "participants": [
            {"name": f"p{i}", "node_id": 100 + i % 2, "prototype": "abcd"[i], "output_dim": 8,
             "num_samples": 5, "uniform_value": -1.0, "fit_residual": 0.1, "holdout_residual": 0.2,
             "alpha": 0.1, "images_per_second": 3.0}
            for i in range(4)
        ],
        "timings": {},
    }
    text = render_report(Manifest.from_json(summary))
    assert "| p1 | 101 | `b` |" in text
    assert "node 100: p0, p2; node 101: p1, p3" in text
