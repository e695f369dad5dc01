"""The CoOpt-vs-BYOL benchmark: curve helpers, and the --tiny configuration end to end."""

import json
import math

import numpy as np
import pytest

from simulations import benchmark as B


def test_time_to_reach_interpolates_and_reports_never():
    times = np.array([0.0, 10.0, 20.0])
    accs = np.array([0.5, 0.7, 0.9])
    assert B.time_to_reach(times, accs, 0.6) == pytest.approx(5.0)
    assert B.time_to_reach(times, accs, 0.9) == pytest.approx(20.0)
    assert B.time_to_reach(times, accs, 0.4) == 0.0
    assert B.time_to_reach(times, accs, 0.95) is None


def test_acc_at_time_clamps_after_the_run():
    times = np.array([0.0, 10.0, 20.0])
    accs = np.array([0.5, 0.7, 0.9])
    assert B.acc_at_time(times, accs, 15.0) == (pytest.approx(0.8), True)
    assert B.acc_at_time(times, accs, 99.0) == (0.9, False)


def _curve(times, accs):
    return {"times": np.array(times, float), "cpu_times": np.array(times, float) / 2,
            "accs": np.array(accs, float)}


def test_speedup_uses_first_time_byol_reaches_its_final_accuracy():
    byol = _curve([0, 10, 20, 30], [0.5, 0.6, 0.7, 0.7])  # final 0.7, first reached at 20 s
    coopt = _curve([0, 5, 10], [0.5, 0.7, 0.8])  # reaches 0.7 at 5 s
    sp = B.speedup(byol, coopt, (5.0, 15.0, 2.5, 7.5))
    assert sp["byol_seconds_to_final"] == pytest.approx(20.0)
    assert sp["coopt_seconds_to_reach"] == pytest.approx(5.0)
    assert sp["training_only"] == pytest.approx(4.0)
    assert sp["with_encoding_max"] == pytest.approx(2.0)
    assert sp["with_encoding_sum"] == pytest.approx(1.0)
    assert sp["training_only_cpu"] == pytest.approx(4.0)
    assert sp["coopt_epochs_to_reach"] == pytest.approx(1.0)

    never = B.speedup(_curve([0, 10], [0.5, 0.9]), coopt, (0, 0, 0, 0))
    assert not never["reached"] and never["training_only"] is None
    # BYOL below the random-init student: every curve starts above its target.
    worse = B.speedup(_curve([0, 10], [0.5, 0.4]), coopt, (0, 0, 0, 0))
    assert worse["byol_not_above_init"] and worse["training_only"] is None


def test_tiny_benchmark_end_to_end(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    B.main(["--tiny", "--out-dir", str(out), "--cache-dir", str(cache)])
    for name in (B.JSON_NAME, B.MD_NAME, B.PLOT_NAME):
        assert (out / name).stat().st_size > 0, name

    results = json.loads((out / B.JSON_NAME).read_text())
    cfg = results["config"]
    assert results["config_file"] == "simulations/configs/benchmark-tiny.yaml"
    assert "simulations/configs/benchmark-tiny.yaml" in (out / B.MD_NAME).read_text()
    assert cfg["tiny"] and len(cfg["seeds"]) == 1 and cfg["epochs"] == 1
    summary = results["summary"]
    expected = {(B.RANDOM, cfg["arch"]), (B.SUPERVISED, cfg["arch"]), (B.BYOL, cfg["arch"]),
                (B.UNALIGNED, cfg["arch"]), (B.ALIGNED, cfg["arch"]), (B.HEADS, cfg["arch"]),
                (B.PROCRUSTES, cfg["arch"]), (B.CCA, cfg["arch"]),
                (B.RANDOM, cfg["arch2"]), (B.ALIGNED, cfg["arch2"]), (B.BYOL, cfg["arch2"])}
    expected |= {(B.SINGLE + spec, cfg["arch"]) for spec in cfg["prototypes"]}
    assert cfg["byol_long_epochs"] > cfg["epochs"]
    expected.add((B.BYOL_LONG, cfg["arch"]))
    expected |= {(B.BYOL_CONVERGED, cfg["arch"]), (B.BYOL_CONVERGED, cfg["arch2"])}
    got = {(r["row"], r["arch"]) for r in summary["rows"]}
    assert got == expected
    for r in summary["rows"]:
        for key in ("acc_mean", "acc_std", "full_acc_mean", "full_acc_std", "train_seconds"):
            assert math.isfinite(r[key]), (r["row"], key)
        assert 0.0 <= r["acc_mean"] <= 1.0
        if r["row"] == B.BYOL_CONVERGED:  # stops on the validation plateau, at most its budget
            assert 1 <= r["epochs"] <= cfg["byol_converged_epochs"]
            assert len(r["curve_acc_mean"]) == r["epochs"] + 1
        elif r["row"] != B.RANDOM:
            epochs = cfg["byol_long_epochs"] if r["row"] == B.BYOL_LONG else cfg["epochs"]
            assert r["epochs"] == epochs
            assert len(r["curve_acc_mean"]) == len(r["curve_cpu_seconds"]) == epochs + 1
            assert all(math.isfinite(a) for a in r["curve_acc_mean"])
            assert r["train_seconds"] > 0
    floors = {f["name"] for f in summary["floors"]}
    assert floors == {"raw pixels"} | {f"features:{s}" for s in cfg["prototypes"]}
    # The validation split: disjoint from the seed's training images, read by every probe.
    seed_results = results["seeds"][str(cfg["seeds"][0])]
    assert seed_results["validation"]["num_val"] == cfg["num_val"] > 0
    assert all(0.0 <= f["full_val_acc"] <= 1.0 for f in seed_results["floors"].values())
    trained = seed_results["runs"][cfg["arch"]]
    assert len(trained[B.ALIGNED]["val_probe_acc"]) == cfg["epochs"] and "val_acc" in trained[B.RANDOM]
    assert all(math.isfinite(f["acc_mean"]) for f in summary["floors"])
    for arch in (cfg["arch"], cfg["arch2"]):
        assert arch in summary["speedup"] and arch in summary["equal_wall_clock"]
    assert set(summary["speedup_vs_longer_byol"]) == {cfg["arch"]}
    assert summary["encoding"]["collaborative_max_seconds"] > 0
    assert summary["targets"] and all(isinstance(c["met"], bool) for c in summary["targets"])

    markdown = (out / B.MD_NAME).read_text()
    for row, _ in expected:
        assert row in markdown

    # The students trained on real optimized datasets; the reference participant's rows are
    # identical with and without alignment (its map is the identity).
    from coopt_flower.dataset_format import load_optimized_dataset

    work, seed = cache / "work-tiny", cfg["seeds"][0]
    aligned = load_optimized_dataset(B.dataset_dir(work, seed, B.ALIGNED))
    unaligned = load_optimized_dataset(B.dataset_dir(work, seed, B.UNALIGNED))
    assert len(aligned) == cfg["num_train"]
    assert len(aligned.manifest.participants) == len(cfg["prototypes"])
    reference = aligned.manifest.reference
    ref_index = aligned.manifest.participant_names.index(reference)
    rows = np.asarray(aligned.owners) == ref_index
    assert rows.any() and not rows.all()
    np.testing.assert_array_equal(np.asarray(aligned.targets)[rows],
                                  np.asarray(unaligned.targets)[rows])
    assert not np.array_equal(np.asarray(aligned.targets)[~rows],
                              np.asarray(unaligned.targets)[~rows])
    # The heads row: the same shards, nobody aligned, trained with one head per participant.
    heads = load_optimized_dataset(B.dataset_dir(work, seed, B.HEADS))
    assert heads.merge == "heads" and heads.manifest.exposed_head == reference
    np.testing.assert_array_equal(np.asarray(heads.owners), np.asarray(aligned.owners))
    np.testing.assert_array_equal(np.asarray(heads.targets), np.asarray(unaligned.targets))
    assert any(c["target"].endswith("heads >= unaligned + 2 points") for c in summary["targets"])
    # The product's other alignment merges: the same shards, the reference's rows untouched.
    for row, merge in ((B.PROCRUSTES, "align-procrustes"), (B.CCA, "align-cca")):
        other = load_optimized_dataset(B.dataset_dir(work, seed, row))
        assert other.manifest.merge == merge
        np.testing.assert_array_equal(np.asarray(other.owners), np.asarray(aligned.owners))
        np.testing.assert_array_equal(np.asarray(other.targets)[rows], np.asarray(unaligned.targets)[rows])
    assert results["finished"] and summary["not_run"] == []
    assert not any(c.get("not_run") for c in summary["targets"])

    # A time-limited run of the same config: no second student, the best single prototype
    # only, no procrustes / cca. Its training runs are the stored ones (--resume).
    small = tmp_path / "small"
    B.main(["--tiny", "--out-dir", str(small), "--cache-dir", str(cache), "--resume", "--arch2", "",
            "--single-rows", "best", "--extra-merges", "false", "--skip-rows", B.HEADS])
    cut = json.loads((small / B.JSON_NAME).read_text())
    floors = cut["seeds"][str(seed)]["floors"]
    best = max(cfg["prototypes"], key=lambda s: (floors[f"features:{s}"]["full_acc"],
                                                 floors[f"features:{s}"]["acc"]))
    assert cut["seeds"][str(seed)]["single_rows"]["prototypes"] == [best]
    got = {(r["row"], r["arch"]) for r in cut["summary"]["rows"]}
    assert got == {(row, arch) for row, arch in expected
                   if arch == cfg["arch"] and row not in (B.PROCRUSTES, B.CCA, B.HEADS)
                   and (not row.startswith(B.SINGLE) or row == B.SINGLE + best)}
    assert len(cut["reused_runs"]) == len(got) - 1  # every trained row came from the store
    by_row = {(r["row"], r["arch"]): r for r in summary["rows"]}
    for r in cut["summary"]["rows"]:
        assert r["acc_mean"] == by_row[(r["row"], r["arch"])]["acc_mean"]
    md = (small / B.MD_NAME).read_text()
    assert "no further student" in md and f"single-prototype row = `{best}`" in md
    assert cut["summary"]["not_run"] == [f"seed {seed}, {cfg['arch']}: {B.HEADS}"]  # skipped
    assert f"{B.HEADS}" in md.split("not run (no result below uses them)")[1]


def _run(accs, full):
    """One stored training run as the benchmark records it (curve values are made up)."""
    return {"epoch_times": [1.0] * len(accs), "epoch_cpu_times": [1.0] * len(accs),
            "losses": [0.0] * len(accs), "probe_acc": accs, "full_probe_acc": full,
            "probe_seconds": [0.1] * len(accs), "wall_seconds": float(len(accs))}


def _seed_results(runs, prototypes=("p1", "p2")):
    """One seed's part of benchmark.json around the given ``{arch: {row: run}}``."""
    floors = {"raw pixels": {"acc": 0.80, "full_acc": 0.79, "dim": 784},
              "features:p1": {"acc": 0.82, "full_acc": 0.81, "dim": 8},
              "features:p2": {"acc": 0.83, "full_acc": 0.80, "dim": 8}}
    encoding = {"collaborative_max_seconds": 1.0, "collaborative_sum_seconds": 2.0,
                "collaborative_max_cpu_seconds": 1.0, "collaborative_sum_cpu_seconds": 2.0,
                "centralized_seconds": {p: 1.0 for p in prototypes},
                "collaborative_seconds": {p: 0.5 for p in prototypes}}
    return {"floors": floors, "encoding": encoding, "num_train": 10,
            "alignment": {"reference": "a", "reference_prototype": "p1", "participants": []},
            "single_rows": {"mode": "all", "prototypes": list(prototypes), "picked_by": "all"},
            "runs": runs}


def _results(cfg, seeds, *, finished=False):
    return {"config": cfg.as_dict(), "command": "python -m simulations.benchmark",
            "finished": finished, "wall_seconds": 10.0, "reused_runs": [],
            "environment": {"cpu_count": 2}, "encoding_rates": {"p1": 10.0, "p2": 10.0},
            "encoding_meta": {"p1": {"images_per_cpu_second": 10.0},
                              "p2": {"images_per_cpu_second": 10.0}},
            "seeds": seeds}


def test_a_partial_run_reports_missing_rows_as_not_run():
    """Targets that need a row nobody ran are "not run", never met; the rest still render."""
    cfg = B.Config(seeds=(0, 1), arch2="", prototypes=("p1", "p2"), num_train=10, num_test=10,
                   epochs=2)
    # Seed 0 cut after BYOL; seed 1 never started. Per-image outcomes give the +12-point gap its
    # interval (over test images: one seed).
    from simulations.benchmark.statistics import pack_outcomes

    coopt, byol = _run([0.74, 0.86], 0.86), _run([0.71, 0.75], 0.74)
    coopt["full_probe_correct"] = pack_outcomes(np.arange(200) < 172)   # 86 %
    byol["full_probe_correct"] = pack_outcomes(np.arange(200) < 148)    # 74 %, a subset
    results = _results(cfg, {"0": _seed_results({cfg.arch: {
        B.RANDOM: {"acc": 0.70, "full_acc": 0.72}, B.ALIGNED: coopt, B.BYOL: byol}})})
    summary = B.summarize(cfg, results)
    assert summary["seeds_done"] == [0]
    assert "seed 1: not started (no row of it ran)" in summary["not_run"]
    assert any(B.SUPERVISED in line and B.CCA in line for line in summary["not_run"])
    targets = {c["target"]: c for c in summary["targets"]}
    met = targets[f"{cfg.arch}: CoOpt (aligned) >= BYOL + 5 points at equal epochs"]
    assert met["met"] and not met.get("not_run") and "95 % interval [+" in met["value"]
    assert targets[f"{cfg.arch}: CoOpt (aligned) >= raw pixels"]["met"]
    for name, c in targets.items():
        needs_missing = any(k in name for k in ("supervised", "unaligned", "single", "heads"))
        if needs_missing:
            assert c["not_run"] and not c["met"] and c["value"].startswith("not run"), name
    assert [h["above_init"] for h in B.healthy_baseline(summary)] == [True]
    md = B.render_markdown(cfg, results, summary)
    assert "PARTIAL" in md and "| not run |" in md and "seed 1: not started" in md
    assert "students not run: torchvision:resnet18" in md and "seeds not run: 2" in md


def test_the_default_config_file_is_the_config_default_and_names_bad_keys(tmp_path):
    from simulations.benchmark.config import DEFAULT_CONFIG

    assert B.load_config(DEFAULT_CONFIG) == B.Config()
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_trian: 10\n")
    with pytest.raises(ValueError, match="unknown benchmark key 'num_trian'.*'num_train'"):
        B.load_config(bad)


def test_tiny_is_a_config_file_and_options_override_it():
    cfg, args = B.parse_args(["--tiny", "--epochs", "3"])
    assert cfg.tiny and cfg.epochs == 3 and args.config.name == "benchmark-tiny.yaml"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only refusal")
def test_no_benchmark_step_ignores_the_device(tmp_path):
    """Asked for a GPU this machine lacks, every step fails instead of running on the CPU."""
    import dataclasses

    import torch

    from coopt_flower.data import open_source
    from simulations.benchmark.rows import ProbeSet, train_row
    from coopt_flower.students import create_student

    cfg = dataclasses.replace(B.load_config(B.config.TINY_CONFIG), device="cuda", epochs=1)
    source = open_source("fashion-mnist")
    ids = np.arange(16)
    x, y = source.images(ids), source.labels(ids)
    refused = (RuntimeError, AssertionError, ValueError)  # "no CUDA here", in its several words
    NO_CUDA = "(?i)cuda|nvidia"
    with pytest.raises(refused, match=NO_CUDA):  # the prototypes' encode
        B.cached_features(tmp_path, "efficientnet-lite0", 32, source, ids, batch_size=8,
                          split="train", device=cfg.device)
    probes = ProbeSet(x, y, x, y, 32, 2, 10, 0, device=cfg.device)
    with pytest.raises(refused, match=NO_CUDA):  # feature extraction for the probe
        probes.probe_backbone(create_student("small-cnn", image_size=32))
    with pytest.raises(refused, match=NO_CUDA):  # the linear probe itself
        probes.probe(torch.randn(16, 4), torch.randn(16, 4))
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                                             torch.randn(16, 8))
    for row in (B.SUPERVISED, B.BYOL, B.ALIGNED):  # every training row
        with pytest.raises(refused, match=NO_CUDA):
            train_row(row, cfg.arch, cfg, 0, probes, x, y, dataset)


def test_arch2_is_a_list_of_further_students():
    cfg = B.Config(arch2="torchvision:resnet18, vit-tiny-4x4")
    assert cfg.archs() == ["small-cnn", "torchvision:resnet18", "vit-tiny-4x4"]
    assert cfg.arch_rows("vit-tiny-4x4", ["p1"]) == [B.ALIGNED, B.BYOL, B.BYOL_CONVERGED]
    assert cfg.arch_rows("vit-tiny-4x4", ["p1"], seed=1) == [B.ALIGNED, B.BYOL]  # converged: seed 0 only
    assert B.Config(byol_converged_epochs=0).arch_rows("small-cnn", [])[-2:] == [B.PROCRUSTES, B.CCA]
    assert B.Config(arch2="none").archs() == B.Config(arch2="").archs() == ["small-cnn"]
    with pytest.raises(ValueError, match="twice.*small-cnn"):
        B.Config(arch2="small-cnn")


def test_runs_of_separate_invocations_merge_into_one_report(tmp_path):
    """Seeds and students trained by separate invocations give the report one run would."""
    from simulations.benchmark.combine import combine_results

    base_cfg = B.Config(seeds=(0,), arch2="", prototypes=("p1", "p2"), num_train=10,
                        num_test=10, epochs=2, single_rows="best")
    more_cfg = B.Config(seeds=(1,), arch2="vit-tiny-4x4", prototypes=("p1", "p2"), num_train=10,
                        num_test=10, epochs=2, single_rows="best", extra_merges=False,
                        byol_long_epochs=0)
    small = {B.RANDOM: {"acc": 0.70, "full_acc": 0.70}, B.ALIGNED: _run([0.74, 0.86], 0.86),
             B.BYOL: _run([0.71, 0.75], 0.75)}
    vit = {B.RANDOM: {"acc": 0.60, "full_acc": 0.60}, B.ALIGNED: _run([0.70, 0.80], 0.80),
           B.BYOL: _run([0.62, 0.66], 0.66)}
    base = _results(base_cfg, {"0": _seed_results({"small-cnn": {
        **small, B.UNALIGNED: _run([0.72, 0.85], 0.85)}})}, finished=True)
    more = _results(more_cfg, {"1": _seed_results({"small-cnn": {
        **small, B.ALIGNED: _run([0.75, 0.84], 0.84)}, "vit-tiny-4x4": vit})}, finished=True)

    merged = combine_results(base, more, where="more.json")
    assert merged["config"]["seeds"] == [0, 1] and merged["config"]["arch2"] == "vit-tiny-4x4"
    assert merged["config"]["byol_long_epochs"] == 30 and merged["config"]["extra_merges"]
    assert list(base["config"]["seeds"]) == [0] and "1" not in base["seeds"]  # inputs untouched
    assert combine_results(merged, more, where="again") == merged  # idempotent
    cfg = B.Config.from_dict(merged["config"])
    summary = B.summarize(cfg, merged)
    rows = {(r["row"], r["arch"]): r for r in summary["rows"]}
    assert rows[(B.ALIGNED, "small-cnn")]["seeds"] == [0, 1]
    assert rows[(B.ALIGNED, "small-cnn")]["acc_mean"] == pytest.approx(0.85)
    assert rows[(B.ALIGNED, "vit-tiny-4x4")]["seeds"] == [1]
    # A comparison with a row of seed 0 only is paired on seed 0 (86 vs 85), not 3-seed mean
    # against one seed (85 vs 85).
    vs_unaligned = [c for c in summary["targets"] if "aligned clearly above unaligned" in c["target"]]
    assert vs_unaligned[0]["value"].startswith("+1.0 points") and "(on seed 0, " in vs_unaligned[0]["value"]
    every = [c for c in summary["targets"] if c["target"].startswith("every student")]
    assert len(every) == 1 and every[0]["met"]  # +10 and +14 points, BYOL above init on both
    md = B.render_markdown(cfg, merged, summary)
    assert "## (d) One optimized dataset, many students" in md and "Made of these invocations" in md
    assert "| vit-tiny-4x4 | 1 | 60.0 | 66.0 | 80.0 | +14.0 (+14.0) | yes |" in md

    # A collapsed BYOL on one student fails the every-student target even though CoOpt wins.
    collapsed = json.loads(json.dumps(merged))
    collapsed["seeds"]["1"]["runs"]["vit-tiny-4x4"][B.BYOL] = _run([0.58, 0.55], 0.55)
    every = [c for c in B.summarize(cfg, collapsed)["targets"] if c["target"].startswith("every student")]
    assert not every[0]["met"] and "BYOL not above init" in every[0]["value"]
    # Health is judged per seed: below its init on one seed of two fails though the mean is above.
    one_seed_low = json.loads(json.dumps(merged))
    one_seed_low["seeds"]["0"]["runs"]["vit-tiny-4x4"] = {
        B.RANDOM: {"acc": 0.60, "full_acc": 0.60}, B.ALIGNED: _run([0.70, 0.80], 0.80),
        B.BYOL: _run([0.55, 0.58], 0.58)}  # seed 1: 66 vs 60; seed 0: 58 vs 60; mean 62 vs 60
    low_cfg = B.Config.from_dict({**merged["config"], "seeds": [0, 1]})
    low = B.summarize(low_cfg, one_seed_low)
    every = [c for c in low["targets"] if c["target"].startswith("every student")]
    assert not every[0]["met"] and "vit-tiny-4x4 +18.0 (BYOL not above init)" in every[0]["value"]
    assert [h["above_init"] for h in B.healthy_baseline(low) if h["arch"] == "vit-tiny-4x4"] == [False]

    with pytest.raises(ValueError, match="epochs = 3 there, 2 here"):
        combine_results(base, _results(B.Config(**{**more_cfg.as_dict(), "epochs": 3}),
                                     more["seeds"], finished=True), where="x")
    with pytest.raises(ValueError, match="seed 0 is in both"):
        combine_results(base, _results(base_cfg, {"0": more["seeds"]["1"]}, finished=True), where="x")
    with pytest.raises(ValueError, match="did not finish"):
        combine_results(base, dict(more, finished=False), where="x")

    # The command line: the out dir's benchmark.json gets the other run's seeds.
    out = tmp_path / "out"
    out.mkdir()
    (out / B.JSON_NAME).write_text(json.dumps(base))
    (tmp_path / "more.json").write_text(json.dumps(more))
    B.main(["--report-only", "--out-dir", str(out), "--add-results", str(tmp_path / "more.json")])
    written = json.loads((out / B.JSON_NAME).read_text())
    assert sorted(written["seeds"]) == ["0", "1"] and "vit-tiny-4x4" in (out / B.MD_NAME).read_text()


def test_a_byol_recipe_retrains_only_the_byol_rows_of_its_students():
    shared = B.Config(byol_recipe="shared", byol_views="shared")
    rows_key, byol_key = B.run_keys(shared)
    assert rows_key == byol_key and "byol_recipe" not in rows_key  # runs stored before the key
    # BYOL's own views change only BYOL's key, as a recipe does.
    own = B.Config(byol_recipe="shared", byol_views="byol")
    assert B.run_keys(own)[0] == rows_key and '"byol_views": "byol"' in B.run_keys(own)[1]
    per = B.Config(byol_views="byol,vit-tiny-4x4=byol-noblur")
    assert per.byol_views_for("vit-tiny-4x4") == "byol-noblur" and per.byol_views_for("small-cnn") == "byol"
    with pytest.raises(ValueError, match="unknown views 'simclr'"):
        B.Config(byol_views="simclr")
    lars = B.Config(byol_recipe="lars-cosine", byol_views="shared")
    assert B.run_keys(lars)[0] == rows_key and B.run_keys(B.Config())[0] == rows_key  # CoOpt, supervised, single rows: reused
    assert B.run_keys(lars)[1] != byol_key and '"byol_recipe": "lars-cosine"' in B.run_keys(lars)[1]
    assert B.run_keys(B.Config(byol_recipe="lars-cosine", byol_views="shared", seeds=(4,)))[1] == B.run_keys(lars)[1]
    # Per student: only that student's BYOL key changes.
    mixed = B.Config(byol_recipe="shared, torchvision:resnet18=sgd-cosine", byol_views="shared")
    assert mixed.byol_recipe_for("torchvision:resnet18") == "sgd-cosine"
    assert mixed.byol_recipe_for("small-cnn") == mixed.byol_recipe_for("vit-tiny-4x4") == "shared"
    assert B.run_keys(mixed, "small-cnn") == (rows_key, rows_key)
    assert B.run_keys(mixed, "torchvision:resnet18")[1] == B.run_keys(
        B.Config(byol_recipe="sgd-cosine", byol_views="shared"), "torchvision:resnet18")[1] != rows_key
    assert B.Config(byol_recipe="vit-tiny-4x4=adamw-cosine").byol_recipe_for("small-cnn") == "shared"
    with pytest.raises(ValueError, match="unknown recipe 'lars' .*lars-cosine"):
        B.Config(byol_recipe="lars")
    with pytest.raises(ValueError, match="names small-cnn twice"):
        B.Config(byol_recipe="small-cnn=shared,small-cnn=sgd-cosine")
    assert B.parse_args(["--tiny", "--byol-recipe", "sgd-cosine"])[0].byol_recipe == "sgd-cosine"


def test_results_written_before_the_byol_recipe_key_merge_as_the_shared_recipe():
    from simulations.benchmark.combine import combine_results, results_config

    runs = {B.RANDOM: {"acc": 0.70, "full_acc": 0.70}, B.ALIGNED: _run([0.74, 0.86], 0.86),
            B.BYOL: _run([0.71, 0.75], 0.75)}
    kw = dict(arch2="", prototypes=("p1", "p2"), num_train=10, num_test=10, epochs=2,
              byol_recipe="shared")
    old = _results(B.Config(seeds=(0,), **kw), {"0": _seed_results({"small-cnn": runs})}, finished=True)
    del old["config"]["byol_recipe"]  # as a file from before the key
    assert results_config(old["config"]).byol_recipe == "shared"
    shared = _results(B.Config(seeds=(1,), **kw), {"1": _seed_results({"small-cnn": runs})}, finished=True)
    assert sorted(combine_results(old, shared, where="x")["seeds"]) == ["0", "1"]
    lars = _results(B.Config(**{**kw, "seeds": (1,), "byol_recipe": "lars-cosine"}),
                    {"1": _seed_results({"small-cnn": runs})}, finished=True)
    with pytest.raises(ValueError, match="byol_recipe = 'lars-cosine' there, 'shared' here"):
        combine_results(old, lars, where="x")
    cfg = B.Config.from_dict(lars["config"])
    md = B.render_markdown(cfg, lars, B.summarize(cfg, lars))
    assert "BYOL's optimizer recipe per student (small-cnn: `lars-cosine`; `shared` is" in md
    assert "`lars-cosine` = optimizer lars, lr_per_256 1.0" in md


def test_files_whose_byol_recipe_differs_only_for_students_one_did_not_train_merge():
    from simulations.benchmark.combine import combine_results

    small = {B.RANDOM: {"acc": 0.70, "full_acc": 0.70}, B.ALIGNED: _run([0.74, 0.86], 0.86),
             B.BYOL: _run([0.71, 0.75], 0.75)}
    kw = dict(prototypes=("p1", "p2"), num_train=10, num_test=10, epochs=2)
    alone = _results(B.Config(seeds=(0,), arch2="", byol_recipe="shared,torchvision:resnet18=sgd-cosine", **kw),
                     {"0": _seed_results({"small-cnn": small})}, finished=True)
    resnet = _results(B.Config(seeds=(1,), arch2="torchvision:resnet18",
                               byol_recipe="shared,torchvision:resnet18=sgd-cosine-lightly", **kw),
                      {"1": _seed_results({"small-cnn": small, "torchvision:resnet18": small})}, finished=True)
    merged = combine_results(alone, resnet, where="x")
    cfg = B.Config.from_dict(merged["config"])
    assert cfg.byol_recipe_for("torchvision:resnet18") == "sgd-cosine-lightly"
    assert cfg.byol_recipe_for("small-cnn") == "shared"
    vit = _results(B.Config(seeds=(2,), arch2="vit-tiny-4x4", byol_recipe="adamw-cosine", **kw),
                   {"2": _seed_results({"small-cnn": small, "vit-tiny-4x4": small})}, finished=True)
    with pytest.raises(ValueError, match="byol_recipe = 'adamw-cosine' there"):  # small-cnn differs
        combine_results(merged, vit, where="x")
    vit["config"]["byol_recipe"] = "shared,vit-tiny-4x4=adamw-cosine"
    cfg = B.Config.from_dict(combine_results(merged, vit, where="x")["config"])
    assert [cfg.byol_recipe_for(a) for a in cfg.archs()] == [
        "shared", "sgd-cosine-lightly", "adamw-cosine"]
    assert "torchvision:resnet18=sgd-cosine-lightly" in cfg.byol_recipe


def test_restored_runs_are_reused_under_equal_settings_only(tmp_path):
    runs = {B.RANDOM: {"acc": 0.70, "full_acc": 0.70}, B.ALIGNED: _run([0.74, 0.86], 0.86),
            B.BYOL: _run([0.71, 0.75], 0.75), B.BYOL_LONG: _run([0.71, 0.76, 0.77], 0.77)}
    cfg = B.Config(seeds=(0,), arch2="", prototypes=("p1", "p2"), num_train=10, num_test=10,
                   epochs=2, byol_long_epochs=3)
    results = _results(cfg, {"0": _seed_results({"small-cnn": runs})}, finished=True)
    written = B.restore_runs(results, tmp_path / "runs")
    assert sorted(written) == sorted(B.slug(n) for n in (
        "seed0-small-cnn-CoOpt (aligned)-2ep", "seed0-small-cnn-BYOL-2ep",
        "seed0-small-cnn-BYOL, longer budget-3ep"))  # random init is probed, never stored
    stored = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "runs").iterdir()}
    aligned = stored[B.slug("seed0-small-cnn-CoOpt (aligned)-2ep")]
    assert aligned["result"] == runs[B.ALIGNED]
    # A run with a new BYOL recipe reuses the aligned run and retrains both BYOL rows.
    rows_key, byol_key = B.run_keys(B.Config(**{**cfg.as_dict(), "byol_recipe": "lars-cosine"}))
    assert aligned["config"] == rows_key
    assert stored[B.slug("seed0-small-cnn-BYOL-2ep")]["config"] != byol_key
    assert B.restore_runs(results, tmp_path / "runs") == []  # present runs are left alone
    with pytest.raises(ValueError, match="finished"):
        B.restore_runs(dict(results, finished=False), tmp_path / "other")
    with pytest.raises(SystemExit):
        B.parse_args(["--tiny", "--restore-runs", "x.json"])  # without --resume


def test_the_validation_split_avoids_every_reportable_seed_and_is_one_set_for_all():
    from coopt_flower.data import select_samples
    from simulations.benchmark.validation import RESERVED_SEEDS, check_disjoint, validation_ids

    val = validation_ids(60000, 10000, 2000, 0)
    assert len(val) == 2000 and np.array_equal(val, validation_ids(60000, 10000, 2000, 0))
    for seed in RESERVED_SEEDS:
        check_disjoint(val, select_samples(60000, 10000, seed), seed)
    assert not np.array_equal(val, validation_ids(60000, 10000, 2000, 1))
    with pytest.raises(ValueError, match="holds .* validation images"):
        check_disjoint(val, val[:5], 9)
    with pytest.raises(ValueError, match="num_val=59000"):
        validation_ids(60000, 10000, 59000, 0)


def test_the_single_prototype_row_is_picked_on_validation_never_on_test():
    from simulations.benchmark.main import pick_singles

    cfg = B.Config(prototypes=("a", "b"), single_rows="best")
    floors = {"features:a": {"acc": 0.9, "full_acc": 0.95, "val_acc": 0.7, "full_val_acc": 0.72},
              "features:b": {"acc": 0.8, "full_acc": 0.85, "val_acc": 0.8, "full_val_acc": 0.81}}
    assert pick_singles(cfg, floors) == ["b"]  # the test set prefers a
    with pytest.raises(ValueError, match="needs a validation split"):
        B.Config(single_rows="best", num_val=0).check_runnable()



def test_a_plateau_is_the_best_of_the_window_not_beating_the_best_before_it():
    from simulations.benchmark.rows import Plateau

    plateau = Plateau(window=3, min_gain=0.01)
    assert not plateau.reached([0.5, 0.6, 0.7])  # not enough epochs to judge
    assert not plateau.reached([0.5, 0.6, 0.7, 0.72, 0.73, 0.74])  # still gaining
    assert plateau.reached([0.5, 0.6, 0.7, 0.705, 0.69, 0.70])  # 0.5 points over 3 epochs


def test_a_resumable_row_killed_mid_run_continues_to_the_same_curve(tmp_path, monkeypatch):
    """The converged row's parts: killed after epoch 1, run again, it trains epochs 2-3 only
    and ends with the curve an uninterrupted run gives."""
    import dataclasses

    from coopt_flower.data import open_source
    from simulations.benchmark.rows import ProbeSet, train_row

    cfg = dataclasses.replace(B.load_config(B.config.TINY_CONFIG), epochs=3)
    source = open_source("fashion-mnist")
    x, y = source.images(np.arange(64)), source.labels(np.arange(64))
    probes = ProbeSet(x, y, x[:32], y[:32], 16, 5, 20, 0, x_val=x[32:], y_val=y[32:])
    whole = train_row(B.SUPERVISED, "small-cnn", cfg, 0, probes, x, y, epochs=3)

    real = ProbeSet.probe
    calls = []

    def dies_in_epoch_two(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, *a, **k)

    monkeypatch.setattr(ProbeSet, "probe", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_row(B.SUPERVISED, "small-cnn", cfg, 0, probes, x, y, epochs=3, checkpoint_dir=tmp_path / "ck")
    monkeypatch.setattr(ProbeSet, "probe", real)
    resumed = train_row(B.SUPERVISED, "small-cnn", cfg, 0, probes, x, y, epochs=3, checkpoint_dir=tmp_path / "ck")
    assert resumed["probe_acc"] == whole["probe_acc"] and resumed["val_probe_acc"] == whole["val_probe_acc"]
    assert resumed["losses"] == whole["losses"] and len(resumed["epoch_cpu_times"]) == 3
    again = train_row(B.SUPERVISED, "small-cnn", cfg, 0, probes, x, y, epochs=3, checkpoint_dir=tmp_path / "ck")
    assert again["probe_acc"] == whole["probe_acc"]  # finished: loaded, nothing trained


def test_speedups_are_reported_per_seed_with_the_summed_encoding_and_a_sample_std():
    cfg = B.Config(seeds=(0, 1), arch2="", prototypes=("p1", "p2"), num_train=10, num_test=10, epochs=2,
                   byol_long_epochs=0, byol_converged_epochs=0)
    init = {"acc": 0.70, "full_acc": 0.70}
    # Seed 0: CoOpt reaches BYOL's final 0.80 at once (epoch 1); seed 1: half way through epoch 1.
    seeds = {"0": _seed_results({"small-cnn": {B.RANDOM: init, B.ALIGNED: _run([0.80, 0.85], 0.85),
                                               B.BYOL: _run([0.75, 0.80], 0.80)}}),
             "1": _seed_results({"small-cnn": {B.RANDOM: init, B.ALIGNED: _run([0.90, 0.91], 0.91),
                                               B.BYOL: _run([0.75, 0.80], 0.80)}})}
    results = _results(cfg, seeds, finished=True)
    results["environment"].update(loadavg_start=(3.5, 1.0, 1.0), loadavg_end=(0.5, 1.0, 1.0))
    summary = B.summarize(cfg, results)
    per = summary["speedup"]["small-cnn"]["per_seed"]
    # BYOL needs 2 s to 0.80; CoOpt 1 s (seed 0) and 0.5 s (seed 1); encoding summed: 2 s.
    assert per["seeds"]["0"]["training_only"] == pytest.approx(2.0)
    assert per["seeds"]["1"]["training_only"] == pytest.approx(4.0)
    assert per["seeds"]["0"]["with_encoding_sum"] == pytest.approx(2.0 / 3.0)
    assert per["training_only"]["mean"] == pytest.approx(3.0)
    assert per["training_only"]["std"] == pytest.approx(np.std([2.0, 4.0], ddof=1))
    assert summary["load"] == {"cpu_count": 2, "loadavg_1min": [3.5, 0.5], "flagged": True}
    markdown = B.render_markdown(cfg, results, summary)
    assert "| small-cnn | 1 | 0.80x | 4.00x | 1.33x |" in markdown and "3.00 ± 1.41x" in markdown and "Flagged: the machine was busier" in markdown


def test_differences_get_a_paired_bootstrap_interval_or_a_t_interval_over_seeds():
    from simulations.benchmark.statistics import (difference_interval, pack_outcomes, spearman_with_p,
                                                  unpack_outcomes)

    rng = np.random.default_rng(0)
    right = rng.random(1000) < 0.8
    assert np.array_equal(unpack_outcomes(pack_outcomes(right)), right)
    better = right | (rng.random(1000) < 0.5)  # A is right wherever B is, and more often
    runs_a = {s: {"full_probe_acc": better.mean(), "full_probe_correct": pack_outcomes(better)} for s in "012"}
    runs_b = {s: {"full_probe_acc": right.mean(), "full_probe_correct": pack_outcomes(right)} for s in "012"}
    boot = difference_interval(runs_a, runs_b)
    assert boot["how"].startswith("bootstrap") and boot["excludes_zero"]
    assert boot["difference"] == pytest.approx(100 * (better.mean() - right.mean()))
    assert boot["low"] < boot["difference"] < boot["high"]
    same = difference_interval(runs_b, runs_b)
    assert same["low"] == same["high"] == 0.0 and not same["excludes_zero"]
    # Runs without per-image outcomes: a t interval over the per-seed differences.
    t = difference_interval({"0": {"full_probe_acc": 0.80}, "1": {"full_probe_acc": 0.82}},
                            {"0": {"full_probe_acc": 0.70}, "1": {"full_probe_acc": 0.71}})
    assert t["how"].startswith("t over 2 seeds") and t["difference"] == pytest.approx(10.5)
    assert t["low"] == pytest.approx(10.5 - 12.706 * np.std([10.0, 11.0], ddof=1) / np.sqrt(2))
    assert difference_interval({"0": {"full_probe_acc": 0.8}}, {"0": {"full_probe_acc": 0.7}})["low"] is None
    rho, p = spearman_with_p([1, 2, 3, 4], [1, 3, 2, 4])
    assert rho == pytest.approx(0.8) and p == pytest.approx(8 / 24)  # rho 0.8 on 4 points: p = 1/3


def test_the_rows_learning_rate_retrains_byol_only_where_its_recipe_reads_it():
    for recipe, reads_lr in [("shared", True), ("adamw-cosine", False), ("sgd-cosine", False), ("lars-cosine", False)]:
        a, b = B.Config(byol_recipe=recipe, lr=0.001), B.Config(byol_recipe=recipe, lr=0.0005)
        assert B.run_keys(a)[0] != B.run_keys(b)[0]  # CoOpt, single and supervised rows retrain
        assert (B.run_keys(a)[1] != B.run_keys(b)[1]) == reads_lr, recipe
    # sgd-cosine sets its own weight decay too; the shared AdamW reads the config's.
    assert B.run_keys(B.Config(byol_recipe="sgd-cosine", weight_decay=0.1))[1] == B.run_keys(B.Config(byol_recipe="sgd-cosine"))[1]
    assert B.run_keys(B.Config(byol_recipe="shared", weight_decay=0.1))[1] != B.run_keys(B.Config(byol_recipe="shared"))[1]


def test_a_prototype_can_encode_at_its_own_size_and_runs_stored_before_the_key_are_reused():
    from simulations.benchmark.main import run_keys

    cfg = B.Config(proto_image_sizes="student:/x/last.pt=0; random:efficientnet-lite0=64")
    assert cfg.proto_size("student:/x/last.pt") == 0 and cfg.proto_size("random:efficientnet-lite0") == 64
    assert cfg.proto_size("efficientnet-lite0") == cfg.proto_image_size == 96
    with pytest.raises(ValueError, match="SPEC=SIZE"):
        B.Config(proto_image_sizes="efficientnet-lite0")
    with pytest.raises(ValueError, match="SPEC=SIZE"):
        B.Config(proto_image_sizes="efficientnet-lite0=big")
    assert '"proto_image_sizes"' not in run_keys(B.Config())[0]
    assert '"proto_image_sizes"' in run_keys(cfg)[0]


def test_private_images_avoid_every_reported_sample_and_the_validation_split():
    from coopt_flower.data import select_samples
    from simulations.benchmark.validation import RESERVED_SEEDS, private_ids, validation_ids

    private = private_ids(60000, 10000, 2000, 0, 3000)
    assert len(private) == 3000 and np.array_equal(private, private_ids(60000, 10000, 2000, 0, 3000))
    assert not np.intersect1d(private, validation_ids(60000, 10000, 2000, 0)).size
    for seed in RESERVED_SEEDS:
        assert not np.intersect1d(private, select_samples(60000, 10000, seed)).size
    with pytest.raises(ValueError, match="num_private=50000"):
        private_ids(60000, 10000, 2000, 0, 50000)
