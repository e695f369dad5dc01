"""The BYOL-recipe study: each recipe's BYOL row against the random-init student."""

import json

from simulations import byol_recipes as S


def test_healthy_means_the_final_full_probe_beats_the_random_init_student():
    init = {"acc": 0.80, "full_acc": 0.81}
    collapsing = S.healthy(init, [0.82, 0.79, 0.70], final=0.72)
    assert not collapsing["healthy"] and not collapsing["above_init_every_epoch"]
    assert (collapsing["peak_epoch"], round(collapsing["final_drop"], 2)) == (1, 0.12)
    rising = S.healthy(init, [0.81, 0.83, 0.85], final=0.86)
    assert rising["healthy"] and rising["above_init_every_epoch"]
    assert not S.healthy(init, [0.82], final=0.81)["healthy"]  # equal is not above


def test_tiny_study_end_to_end_reuses_stored_runs(tmp_path):
    args = ["--config", "simulations/configs/benchmark-tiny.yaml", "--students", "small-cnn",
            "--recipes", "shared,lars-cosine", "--epochs", "1", "--workdir", str(tmp_path / "w"),
            "--out", str(tmp_path / "out")]
    assert S.main(args) == 0
    results = json.loads((tmp_path / "out" / "byol_recipes.json").read_text())
    runs = results["students"]["small-cnn"]["recipes"]
    assert set(runs) == {"shared", "lars-cosine"} and len(runs["lars-cosine"]["probe_acc"]) == 1
    md = (tmp_path / "out" / "byol_recipes.md").read_text()
    assert "| small-cnn |" in md and "lars-cosine" in md and (tmp_path / "out" / "byol_recipes.png").exists()
    assert "full_val_probe_acc" in runs["shared"] and "Chosen on the validation split" in md
    stored = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert len(stored) == 3  # random init + two recipes
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "w").iterdir()}
    assert S.main(args) == 0  # a second invocation trains nothing
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "w").iterdir()} == mtimes


def test_from_runs_tabulates_only_what_is_stored(tmp_path):
    common = ["--config", "simulations/configs/benchmark-tiny.yaml", "--students", "small-cnn",
              "--epochs", "1", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "out")]
    S.main(common + ["--recipes", "shared", "--from-runs"])  # nothing stored: an empty table
    assert "| small-cnn |" not in (tmp_path / "out" / "byol_recipes.md").read_text()
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
    S.main(common + ["--recipes", "shared"])
    S.main(common + ["--recipes", "shared,sgd-cosine", "--from-runs"])
    results = json.loads((tmp_path / "out" / "byol_recipes.json").read_text())
    assert list(results["students"]["small-cnn"]["recipes"]) == ["shared"]
    assert len(list((tmp_path / "w").iterdir())) == 2  # sgd-cosine was not trained


def test_the_recipe_is_chosen_on_validation_among_the_healthy_ones():
    init = {"acc": 0.8, "full_acc": 0.8, "val_acc": 0.7, "full_val_acc": 0.7}
    runs = {"best-on-test": {"full_probe_acc": 0.95, "full_val_probe_acc": 0.71},
            "best-on-val": {"full_probe_acc": 0.85, "full_val_probe_acc": 0.76},
            "unhealthy": {"full_probe_acc": 0.99, "full_val_probe_acc": 0.69}}
    assert S.choose(init, runs) == "best-on-val"
    assert S.choose(init, {"unhealthy": runs["unhealthy"]}) is None
    assert S.choose({"acc": 0.8, "full_acc": 0.8}, runs) is None  # runs made without validation
