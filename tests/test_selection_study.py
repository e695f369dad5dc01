"""The selection study's helpers (the study itself is a long run: simulations/selection_study.py)."""

import numpy as np
import pytest

from simulations.selection_study import parse_entry, spearman, write_digits_folder


def test_pool_entries_carry_their_image_size():
    assert parse_entry("efficientnet-lite0@32") == ("efficientnet-lite0", 32)
    assert parse_entry("random:open_clip:ViT-B-32@224") == ("random:open_clip:ViT-B-32", 224)
    with pytest.raises(ValueError, match="SPEC@IMAGE_SIZE"):
        parse_entry("efficientnet-lite0")


def test_spearman_follows_the_ranks():
    pytest.importorskip("scipy")
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_digits_are_written_as_a_labeled_image_folder(tmp_path):
    pytest.importorskip("sklearn")
    from coopt_flower.data import open_source

    write_digits_folder(tmp_path / "digits")
    train, test = (open_source(f"folder:{tmp_path / 'digits' / s}") for s in ("train", "test"))
    assert len(train) + len(test) == 1797 and len(train) == 1198
    labels = train.labels(np.arange(len(train)))
    assert set(labels.tolist()) == set(range(10))
    images = train.images(np.arange(2))
    assert images.shape[0] == 2 and images.shape[-1] == 3 and images.dtype == np.uint8


def test_the_sweep_alone_runs_end_to_end(tmp_path):
    """`parts: [sweep]` (the real-budget alignment sweep's config) runs only the sweep."""
    import json

    import yaml

    from simulations.selection_study import main

    config = {"sources": [{"name": "fashion-mnist", "train": "fashion-mnist", "test": "fashion-mnist:test",
                           "num_train": 200, "num_test": 100}],
              "pool": ["efficientnet-lite0@32", "random:efficientnet-lite0@32"],
              "merge_pool": ["efficientnet-lite0@32", "random:efficientnet-lite0@32"],
              "shared_size": 32, "target_dim": 32, "sweep": [32, 64], "parts": ["sweep"], "threads": 1,
              "sweep_students": ["align-ridge"], "student": {"epochs": 1, "image_size": 16}, "probe_min_steps": 50}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((tmp_path / "out" / "selection.json").read_text())["results"]["fashion-mnist"]
    assert "scores" not in result and {(r["shared_size"], r["merge"]) for r in result["sweep"]} == {
        (s, m) for s in (32, 64) for m in ("align-ridge", "align-procrustes", "align-cca")}
    assert all(0.0 <= r["test_residual"] < 2.0 for r in result["sweep"])
    text = (tmp_path / "out" / "selection.md").read_text()
    assert "Shared-size sweep" in text and "Spearman" not in text
    students = [r for r in result["sweep"] if "student" in r]
    assert [(r["shared_size"], r["merge"]) for r in students] == [(32, "align-ridge"), (64, "align-ridge")]
    assert all(10.0 < r["student"]["acc"] <= 100.0 for r in students)


def test_an_unknown_part_is_refused(tmp_path):
    import yaml

    from simulations.selection_study import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sources": [], "pool": [], "merge_pool": [], "parts": ["sweeps"]}))
    with pytest.raises(SystemExit, match="parts must be"):
        main(["--config", str(path)])
