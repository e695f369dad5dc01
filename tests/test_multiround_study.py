"""The multi-round study's config: optional keys take the app's value, bad keys are named."""

import pytest

from simulations.multiround_study import DEFAULT_CONFIG, load_config


def test_committed_configs_load_and_the_student_size_is_optional(tmp_path):
    assert load_config(DEFAULT_CONFIG)["student_image_size"] == 0  # the app's: the data's size
    budget = load_config(DEFAULT_CONFIG.parent / "multiround-budget.yaml")
    assert budget["student_image_size"] == 32 and budget["num_samples"] == 10000
    assert budget["policies"] == ["switch", "static"]


def test_unknown_and_missing_keys_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_CONFIG.read_text() + "studnet_image_size: 32\n")
    with pytest.raises(ValueError, match="'studnet_image_size'.*'student_image_size'"):
        load_config(bad)
    cut = tmp_path / "cut.yaml"
    cut.write_text("rounds: 2\n")
    with pytest.raises(ValueError, match="missing study keys .*num_samples"):
        load_config(cut)


def test_a_stopped_study_is_tabulated_from_its_checkpoints(tmp_path):
    import json

    from simulations.multiround_study import main

    def round_(acc, ref, encoders):
        return {"student": None if acc is None else {"probe_accuracy": acc},
                "reference_prototype": ref, "student_in": None,
                "participants": [{"encoder": e, "uniform_value": -2.0 - i / 10}
                                 for i, e in enumerate(encoders)]}

    runs = {"switch": {"1": round_(0.86, "lite0", ["own", "own"]),
                       "2": round_(0.87, "student:round-001", ["student", "own"]),
                       "3": round_(None, "student:round-002", ["student", "student"])},  # cut
            "static": {"1": round_(0.86, "lite0", ["own", "own"])}}
    for policy, rounds in runs.items():
        (tmp_path / "work" / f"default-{policy}").mkdir(parents=True)
        (tmp_path / "work" / f"default-{policy}" / "checkpoint.json").write_text(
            json.dumps({"refinement": policy, "rounds": rounds}))
    out = tmp_path / "out"
    main(["--config", str(DEFAULT_CONFIG), "--only-pools", "default", "--rounds", "3",
          "--workdir", str(tmp_path / "work"), "--out", str(out), "--from-checkpoints"])
    md = (out / "multiround.md").read_text()
    assert "default/switch finished 2 of 3 rounds; default/static finished 1 of 3 rounds" in md
    assert "| default | switch | - | 0.860 / 0.870 | lite0 / student | 0 / 1 | - |" in md
    results = json.loads((out / "multiround.json").read_text())["results"]
    assert [r["rounds_finished"] for r in results] == [2, 1]


def test_resume_continues_the_runs_in_the_workdir_instead_of_overwriting(tmp_path, monkeypatch):
    import json
    import types

    import simulations.local_run as local_run
    from simulations.multiround_study import main

    configs = []

    def fake_run(config, **kw):  # the app, resumed or not, leaves a finished checkpoint
        configs.append(config)
        out = tmp_path / "work" / "default-switch"
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint.json").write_text(json.dumps({"rounds": {"1": {
            "student": {"probe_accuracy": 0.8}, "reference_prototype": "lite0", "student_in": None,
            "participants": [{"encoder": "own", "uniform_value": -2.0}]}}}))
        return types.SimpleNamespace(returncode=0, output="")

    monkeypatch.setattr(local_run, "run_local_simulation", fake_run)
    common = ["--config", str(DEFAULT_CONFIG), "--only-pools", "default", "--only-policies",
              "switch", "--rounds", "1", "--workdir", str(tmp_path / "work")]
    main(common + ["--out", str(tmp_path / "a")])
    main(common + ["--out", str(tmp_path / "b"), "--resume"])
    assert [c["overwrite"] for c in configs] == [True, False]
    with pytest.raises(SystemExit):
        main(common + ["--resume", "--from-checkpoints"])
    # A run that exits cleanly short of its rounds is an error that says how to continue.
    with pytest.raises(RuntimeError, match="ended after 1 of 2 rounds; .*--resume"):
        main(common[:-4] + ["--rounds", "2", "--workdir", str(tmp_path / "work"),
                            "--out", str(tmp_path / "c")])


def test_the_in_process_driver_runs_seeds_and_pairs_each_policy_with_static(tmp_path):
    """driver: in-process runs the engine's multi-round loop here (no Flower) for every seed,
    and the report pairs distill with static per pool and seed and times every round."""
    import json

    import yaml

    from simulations.multiround_study import main

    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "driver": "in-process", "rounds": 2, "num_samples": 120, "shared_size": 32, "image_size": 32,
        "target_dim": 16, "train_epochs": 1, "probe_train": 100, "probe_test": 100, "seed": 0, "seeds": [4, 5],
        "student_image_size": 0, "run_config": {"device": "cpu", "refine-epochs": 2, "refine-samples": 20,
                                                "refine-hidden": 16, "page-size": 40},
        "pools": {"weak": {"prototypes": ["random:efficientnet-lite0", "random:efficientnet-lite1"],
                           "run_config": {"partitioner": "dirichlet:1.0"}}},
        "policies": ["distill", "static"]}))
    out = tmp_path / "out"
    assert main(["--config", str(config), "--workdir", str(tmp_path / "work"), "--out", str(out)]) == 0
    results = json.loads((out / "multiround.json").read_text())["results"]
    assert [(r["policy"], r["seed"], r["rounds_finished"]) for r in results] == [
        ("distill", 4, 2), ("static", 4, 2), ("distill", 5, 2), ("static", 5, 2)]
    assert results[0]["switched"] == [0, 2] and results[1]["switched"] == [0, 0]
    assert results[0]["round_seconds"][1]["refine_s"] > 0 and results[1]["round_seconds"][1]["refine_s"] == 0
    # Round 1 has no student: distill and static build the very same first round.
    assert results[0]["probe_accuracy"][0] == results[1]["probe_accuracy"][0]
    manifest = json.loads((tmp_path / "work" / "weak-distill-seed4" / "round-001" / "manifest.json").read_text())
    assert manifest["settings"]["partitioner"] == "dirichlet:1"  # as the run config normalizes it
    md = (out / "multiround.md").read_text()
    assert "| weak | distill | 4 | +0.00 / " in md and "refine / encode / round / train per round" in md
    assert (out / "multiround_probe.png").stat().st_size > 0


def test_a_policy_may_name_its_refine_layer_group():
    from simulations.multiround_study import policy_keys, run_name

    assert policy_keys("distill:last-stage") == {"refinement": "distill", "refine-layers": "last-stage"}
    assert policy_keys("static") == {"refinement": "static"}
    assert run_name("weak", "distill:last-stage") == "weak-distill-last-stage"
    assert run_name("weak", "distill:last-stage", 2) == "weak-distill-last-stage-seed2"
