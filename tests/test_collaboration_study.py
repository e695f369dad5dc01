"""The collaboration study (simulations.collaboration_study): each participant alone vs merged."""

import json

import pytest

from simulations import collaboration_study as C


def test_a_participant_alone_gets_as_many_steps_as_the_merged_rows():
    assert C.equal_step_epochs(3, 10000, 2500, 64) == 12   # 3 x 157 steps over 40 a pass
    assert C.equal_step_epochs(3, 10000, 10000, 64) == 3
    assert C.equal_step_epochs(3, 10000, 30, 64) == 471     # one step a pass
    assert C.equal_step_epochs(1, 100, 5000, 64) == 1


def test_a_bad_partitioner_is_refused_before_any_encoding(capsys):
    from coopt_flower.partitions import PartitionError

    with pytest.raises(PartitionError, match="alpha must be a number > 0"):
        C.parse_args(["--tiny", "--partitioners", "iid,dirichlet:0"])


@pytest.mark.slow
def test_tiny_study_writes_every_row_in_the_results_layout(tmp_path):
    out = tmp_path / "out"
    C.main(["--tiny", "--partitioners", "dirichlet:0.5", "--out-dir", str(out),
            "--work-dir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache")])
    results = json.loads((out / C.JSON_NAME).read_text())
    rows = {(r["partitioner"], r["row"]): r for r in results["rows"]}
    assert {("dirichlet:0.5", "alone:p0"), ("dirichlet:0.5", "alone:p1"), ("dirichlet:0.5", "CoOpt (aligned)"),
            ("dirichlet:0.5", "CoOpt (no alignment)"), ("dirichlet:0.5", C.ALONE_MEAN),
            ("dirichlet:0.5", C.ALONE_BEST), ("dirichlet:0.5", "CoOpt (heads)"),
            ("dirichlet:0.5", "CoOpt (multi-teacher)")} <= set(rows)
    assert set(results["merge_differences"]["dirichlet:0.5"]) == {"CoOpt (heads)", "CoOpt (multi-teacher)"}
    assert [k for k, r in rows.items() if r["default"]] == [("dirichlet:0.5", "CoOpt (aligned)")]
    [single] = [r for r in results["rows"] if r["partitioner"] == C.ALL_DATA]
    assert single["row"] == "single:" + results["seeds"]["0"]["best_single"]
    for r in results["rows"]:
        assert {"partitioner", "pool", "row", "acc_mean", "acc_std", "seeds"} <= set(r) and r["seeds"] == [0]
        assert 0.0 <= r["acc_mean"] <= 1.0
    alone = [rows[("dirichlet:0.5", f"alone:p{k}")]["acc_mean"] for k in range(2)]
    assert rows[("dirichlet:0.5", C.ALONE_MEAN)]["acc_mean"] == pytest.approx(sum(alone) / 2)
    participants = results["seeds"]["0"]["partitions"]["dirichlet:0.5"]["participants"]
    assert sum(sum(p["label_counts"]) for p in participants) == results["config"]["num_train"]
    assert len(results["targets"]) == 0  # the targets are on dirichlet:0.1, not run here
    assert (out / C.MD_NAME).read_text().count("| dirichlet:0.5 |") >= 11 and (out / C.PLOT_NAME).exists()
    # Every trained row keeps its validation accuracy: the merge is chosen on those.
    for key in [k for k in rows if not k[1].startswith(C.ALONE)]:
        assert set(rows[key]["val_per_seed"]) == {"0"} and 0.0 <= rows[key]["val_mean"] <= 1.0
    chosen = results["merge_validation"]["dirichlet:0.5"]
    assert set(chosen) == {"CoOpt (aligned)", "CoOpt (heads)", "CoOpt (multi-teacher)"}
    assert chosen["CoOpt (aligned)"]["vs default merge"] == [0.0]
    teacher = rows[("dirichlet:0.5", "CoOpt (multi-teacher)")]["val_mean"]
    aligned = rows[("dirichlet:0.5", "CoOpt (aligned)")]["val_mean"]
    assert chosen["CoOpt (multi-teacher)"]["vs default merge"] == [pytest.approx(100 * (teacher - aligned))]
    assert "The merges on the validation split" in (out / C.MD_NAME).read_text()
    assert set(results["merge_verdict"]) == {"CoOpt (heads)", "CoOpt (multi-teacher)"}
    # Choosing a merge needs no participant alone: --no-alone leaves those rows out.
    merges_only = tmp_path / "merges-only"
    C.main(["--tiny", "--partitioners", "dirichlet:0.5", "--out-dir", str(merges_only), "--no-alone",
            "--report-only", "--work-dir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache")])
    kept = {r["row"] for r in json.loads((merges_only / C.JSON_NAME).read_text())["rows"]}
    assert not any(row.startswith(C.ALONE) for row in kept) and "CoOpt (multi-teacher)" in kept
    assert "Paired differences of the default merge" not in (merges_only / C.MD_NAME).read_text()


def test_another_pool_needs_its_prototypes_and_merges_name_rows_this_study_has():
    with pytest.raises(SystemExit):
        C.parse_args(["--tiny", "--pool", "heterogeneous"])
    with pytest.raises(SystemExit):
        C.parse_args(["--tiny", "--merges", "align-cca"])
    cfg, args = C.parse_args(["--tiny", "--pool", "mine", "--prototypes", "efficientnet-lite0,random:efficientnet-lite0",
                              "--merges", ""])
    assert cfg.prototypes == ("efficientnet-lite0", "random:efficientnet-lite0") and args.merges == []
    assert C.result_names("default") == (C.JSON_NAME, C.MD_NAME, C.PLOT_NAME)
    assert C.result_names("mine")[0] == "collaboration-mine.json"


def test_a_stored_run_of_other_settings_is_refused_not_reused(tmp_path):
    trained = []

    def train():
        trained.append(1)
        return {"acc": 0.5, "val_acc": 0.5, "epochs": 1, "steps": 1, "train_seconds": 0.0}

    store = C.RunStore(tmp_path, settings={"lr": 0.004, "batch_size": 64})
    first = store.get("seed0-3ep-iid-CoOpt (aligned)", train)
    assert first["settings"] == {"lr": 0.004, "batch_size": 64} and trained == [1]
    assert store.get("seed0-3ep-iid-CoOpt (aligned)", train) == first and trained == [1]  # reused
    other = C.RunStore(tmp_path, settings={"lr": 0.008, "batch_size": 64})
    with pytest.raises(SystemExit, match=r"lr: 0.004 there, 0.008 here"):
        other.get("seed0-3ep-iid-CoOpt (aligned)", train)
    # A run stored before runs recorded their settings is taken as it is.
    (tmp_path / "old.json").write_text(json.dumps({"acc": 0.4}))
    assert other.get("old", train) == {"acc": 0.4} and trained == [1]


def test_a_merge_leads_only_if_never_below_the_default_and_above_it_on_every_seed_somewhere():
    def rows(diffs):
        return {"CoOpt (multi-teacher)": {"validation accuracy": [0.0] * len(diffs), "vs default merge": diffs}}

    skewed_win = {"dirichlet:0.1": rows([0.5, 0.2, 0.8]), "iid": rows([-0.1, 0.3, 0.0])}
    verdict = C.merge_verdict(skewed_win)["CoOpt (multi-teacher)"]
    assert verdict["leads"] and verdict["seeds_above"] == {"dirichlet:0.1": 3, "iid": 1}
    assert verdict["mean_vs_default"]["iid"] == pytest.approx(0.2 / 3)
    below_somewhere = {"dirichlet:0.1": rows([0.5, 0.2, 0.8]), "iid": rows([-0.4, 0.1, 0.0])}
    assert not C.merge_verdict(below_somewhere)["CoOpt (multi-teacher)"]["leads"]
    never_every_seed = {"dirichlet:0.1": rows([0.5, -0.1, 0.8]), "iid": rows([0.1, 0.3, -0.1])}
    assert not C.merge_verdict(never_every_seed)["CoOpt (multi-teacher)"]["leads"]
    assert C.merge_verdict({"iid": {}}) == {}


def test_each_pool_is_held_to_its_own_targets():
    differences = {"iid": {"vs best single on all data": [1.2, 0.8], "vs no alignment": [3.3, 3.6]},
                   "dirichlet:0.1": {"vs best alone": [3.1, 3.5], "vs mean alone": []}}
    het = C.targets(differences, "heterogeneous")
    assert [(t["target"], t["met"]) for t in het] == [("iid: merged vs best single on all data >= +1 points", False),
                                                     ("iid: merged vs no alignment >= +2 points", True)]
    assert het[1]["mean"] == pytest.approx(3.45)
    [skew] = C.targets(differences)  # the default pool's; vs mean alone did not run
    assert skew["met"] and skew["per_seed"] == [3.1, 3.5]
    assert C.targets(differences, "another") == []
