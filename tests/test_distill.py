"""refinement = distill (coopt_flower.distill): a participant refines its own prototype towards
the round's student, and the next round encodes with it."""

import json

import numpy as np
import pytest
import torch

from coopt_flower.config import ConfigError, RunSettings
from coopt_flower.data import open_source
from coopt_flower.distill import RefineBudget, RefinedPrototype, fit_head, refine_prototype
from coopt_flower.round_student import payload_digest
from coopt_flower.engine import progress, run_rounds_in_process
from coopt_flower.participant import NodeSettings, PrototypeParticipant, _REFINED


def test_head_learns_a_nonlinear_map_and_is_deterministic():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 12)).astype(np.float32)
    targets = np.tanh(features @ rng.normal(size=(12, 8)) / np.sqrt(12)).astype(np.float32) * 3 + 1
    budget = RefineBudget(epochs=60, hidden=64, lr=3e-3, batch_size=64)
    fit = fit_head(features[:500], targets[:500], budget, seed=1)
    again = fit_head(features[:500], targets[:500], budget, seed=1)
    assert fit.config["digest"] == again.config["digest"] == payload_digest(fit.state)
    assert fit.losses[-1] < 0.5 * fit.losses[0]
    # On held-out rows the head points where the targets do (after the loss's z-score).
    class Base:  # the features themselves are the "prototype"
        spec, parsed, output_dim, native_size, image_size = "identity", None, 12, 1, 1
        device, preprocess, max_batch = "cpu", None, 256
    refined = RefinedPrototype(Base(), fit.state, fit.config)
    predicted, want = refined.map_features(features[500:]), targets[500:]
    assert 1 - ((predicted - want) ** 2).sum() / ((want - want.mean(0)) ** 2).sum() > 0.8
    # A tampered weight no longer matches its digest: refused, not used.
    tampered = {k: v.copy() for k, v in fit.state.items()}
    tampered["feature_mean"][0] += 1
    with pytest.raises(ValueError, match="digest"):
        RefinedPrototype(Base(), tampered, fit.config)


def test_a_linear_head_and_bad_input_get_one_line():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    assert "head.weight" in fit_head(x, x @ rng.normal(size=(4, 3)), RefineBudget(epochs=2, hidden=0), seed=0).state
    with pytest.raises(ValueError, match="NaN"):
        fit_head(np.full((4, 2), np.nan, np.float32), np.ones((4, 3), np.float32), RefineBudget(epochs=1), seed=0)
    with pytest.raises(ValueError, match="matching"):
        fit_head(x, x[:10], RefineBudget(epochs=1), seed=0)
    for key, value, words in (("refine-epochs", 0, "refine-epochs must be >= 1"),
                              ("refine-layers", "everything", "refine-layers must be one of head"),
                              ("refine-hidden", -1, "refine-hidden must be >= 0"),
                              ("refine-lr", "fast", "refine-lr must be a number"),
                              ("refine-lr", 0, "refine-lr must be > 0")):
        with pytest.raises(ConfigError, match=words):
            RunSettings.from_run_config({"refinement": "distill", key: value, "output-dir": "/tmp/x"})
    # Other policies never read the budget.
    RunSettings.from_run_config({"refinement": "static", "refine-epochs": 0, "output-dir": "/tmp/x"})


@pytest.fixture(scope="module")
def fashion():
    return open_source("fashion-mnist")


def test_refining_a_random_network_towards_a_teacher_beats_aligning_it_on_s(fashion):
    """A random-init CNN refined towards a pretrained teacher on its shard sample predicts the
    teacher's embeddings of unseen images better than the ridge map a static round fits on S."""
    from coopt_flower.alignment import fit_alignment
    from coopt_flower.prototypes import create_prototype

    torch.manual_seed(0)
    base = create_prototype("random:efficientnet-lite0", image_size=32, device="cpu")
    teacher = create_prototype("efficientnet-lite0", image_size=32, device="cpu")
    images = fashion.images(np.arange(900))
    shared, shard, held_out = images[:64], images[64:700], images[700:]
    refinement = refine_prototype(base, teacher, [shard, shared], RefineBudget(epochs=40, hidden=256), seed=0)
    assert refinement.prototype.output_dim == teacher.output_dim and refinement.seconds > 0
    assert refinement.config["samples"] == 700

    def explained(got, want):  # R^2 of the teacher's embeddings
        return float(1 - ((got - want) ** 2).sum() / ((want - want.mean(0)) ** 2).sum())

    want = teacher.encode(held_out)
    aligned = fit_alignment(base.encode(shared), teacher.encode(shared), seed=0).apply(base.encode(held_out))
    refined = refinement.prototype.encode(held_out)
    assert explained(refined, want) > explained(aligned, want) + 0.05, (explained(refined, want),
                                                                        explained(aligned, want))


@pytest.mark.parametrize("spec", ["efficientnet-lite0", "random:efficientnet-lite2", "student:small-cnn+head"])
def test_the_last_stage_split_encodes_like_the_whole_network(spec, fashion):
    from torch import nn

    from coopt_flower.distill_stage import RefinedStage, split_last_stage
    from coopt_flower.prototypes import create_prototype, student_prototype
    from coopt_flower.students import SmallCNN

    if spec.startswith("student:"):  # a student fed back with its target head
        torch.manual_seed(0)
        base = student_prototype(nn.Sequential(SmallCNN(), nn.Linear(256, 8)),
                                 {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}, spec=spec)
    else:
        base = create_prototype(spec, image_size=32, device="cpu")
    images = fashion.images(np.arange(20))
    state = {f"stage.{k}": v.numpy() for k, v in split_last_stage(base)[1].state_dict().items()}
    np.testing.assert_allclose(RefinedStage(base, state).features(images), base.encode(images), rtol=1e-5, atol=1e-6)


def test_refining_the_last_stage_trains_a_copy_and_rebuilds_from_its_weights(fashion):
    """last-stage: the stage's weights change (a copy: the participant's prototype does not),
    the fit is deterministic, the weights rebuild the same encoder, and it predicts the teacher on
    unseen images better than the ridge map a static round fits on S."""
    from coopt_flower.alignment import fit_alignment
    from coopt_flower.distill_stage import STAGE_LR_SCALE
    from coopt_flower.prototypes import create_prototype

    torch.set_num_threads(1)
    base = create_prototype("random:efficientnet-lite0", image_size=32, device="cpu")
    teacher = create_prototype("efficientnet-lite0", image_size=32, device="cpu")
    images = fashion.images(np.arange(700))
    shared, shard, held_out = images[:64], images[64:500], images[500:]
    before = base.encode(held_out)
    budget = RefineBudget(epochs=15, hidden=256, layers="last-stage")
    refinement = refine_prototype(base, teacher, [shard, shared], budget, seed=0)
    again = refine_prototype(base, teacher, [shard, shared], budget, seed=0)
    np.testing.assert_array_equal(base.encode(held_out), before)  # the base is untouched
    assert refinement.config["layers"] == "last-stage" and refinement.config["stage_lr_scale"] == STAGE_LR_SCALE
    assert refinement.prototype.digest == again.prototype.digest
    assert any(k.startswith("stage.") for k in refinement.state)
    rebuilt = RefinedPrototype(base, refinement.state, refinement.config)
    refined = refinement.prototype.encode(held_out)
    np.testing.assert_array_equal(rebuilt.encode(held_out), refined)
    frozen = refine_prototype(base, teacher, [shard, shared], RefineBudget(epochs=15, hidden=256), seed=0)
    assert not np.allclose(frozen.prototype.encode(held_out), refined)  # the stage moved

    def explained(got, want):
        return float(1 - ((got - want) ** 2).sum() / ((want - want.mean(0)) ** 2).sum())

    want = teacher.encode(held_out)
    aligned = fit_alignment(base.encode(shared), teacher.encode(shared), seed=0).apply(base.encode(held_out))
    assert explained(refined, want) > explained(aligned, want) + 0.05


def test_last_stage_on_a_prototype_without_one_gets_one_line(fashion):
    class Flat:  # encodes, but names no stage
        spec, output_dim, image_size, max_batch = "flat-net", 4, 8, 16

    with pytest.raises(ValueError, match="prototype flat-net has no last stage to train .* use refine-layers = head"):
        refine_prototype(Flat(), Flat(), [np.zeros((4, 8, 8, 3), np.uint8)], RefineBudget(epochs=1, layers="last-stage"),
                         seed=0)


def tiny(tmp_path, **overrides):
    values = {"prototypes": "random:efficientnet-lite0,efficientnet-lite0", "num-samples": 240,
              "shared-size": 48, "image-size": 32, "target-dim": 32, "page-size": 60, "seed": 3,
              "num-server-rounds": 2, "train-epochs": 1, "refinement": "distill", "refine-epochs": 5,
              "refine-samples": 50, "refine-hidden": 64, "probe-train-samples": 100,
              "probe-test-samples": 100, "output-dir": str(tmp_path / "out"), "device": "cpu", **overrides}
    return RunSettings.from_run_config(values)


def participants(s):
    return [PrototypeParticipant(NodeSettings(spec, device="cpu", partition_id=i))
            for i, spec in enumerate(s.prototypes)]


@pytest.mark.parametrize("layers", ["head", "last-stage"])
def test_distill_rounds_in_process_record_refined_prototypes_and_resume_the_same(tmp_path, fashion, layers):
    torch.set_num_threads(1)
    s = tiny(tmp_path, **{"refine-layers": layers})
    nodes = participants(s)
    state = run_rounds_in_process(s, fashion, nodes)
    assert sorted(state["rounds"]) == ["1", "2"]
    first = json.loads((progress.round_dir(s.output_dir, 1) / "manifest.json").read_text())
    second = json.loads((progress.round_dir(s.output_dir, 2) / "manifest.json").read_text())
    # Round 1 has no student: everyone encodes with its own prototype, no distill keys.
    assert all(p["encoder"] == "own" and "refined_digest" not in p for p in first["participants"])
    # Round 2: every participant refined towards round 1's student and encoded with it.
    digests = [p["refined_digest"] for p in second["participants"]]
    assert all(p["encoder"] == "refined" and p["refine_seconds"] > 0 for p in second["participants"])
    assert len(set(digests)) == 2 and all(len(d) == 16 for d in digests)
    assert "+distill:" in second["reference_prototype"]
    assert second["student"]["digest"] == json.loads(
        (tmp_path / "out" / "students" / "round-001" / "student.json").read_text()).get("digest",
                                                                                       second["student"]["digest"])
    assert state["rounds"]["2"]["participants"][0]["refined_digest"] == digests[0]
    assert {node.refined_payload[1]["layers"] for node in nodes} == {layers}
    assert state["rounds"]["2"]["student"]["probe_accuracy"] > 0.3
    # A platform stopped before round 2 and started again refines again from the same inputs:
    # the same heads, the same dataset bytes (CPU).
    targets = (progress.round_dir(s.output_dir, 2) / "targets.npy").read_bytes()
    kept = dict(state["rounds"])
    del kept["2"]
    (tmp_path / "out" / progress.PROGRESS_FILE).write_text(json.dumps({**state, "rounds": kept}))
    import shutil

    shutil.rmtree(progress.round_dir(s.output_dir, 2))
    shutil.rmtree(progress.student_dir(s.output_dir, 2))
    _REFINED.clear()  # a fresh process: nothing refined is held
    again = run_rounds_in_process(s, fashion, participants(s))
    assert [p["refined_digest"] for p in again["rounds"]["2"]["participants"]] == digests
    assert (progress.round_dir(s.output_dir, 2) / "targets.npy").read_bytes() == targets


def test_a_page_for_a_head_the_node_does_not_hold_is_refused(fashion):
    from coopt_flower.protocol import EncodeConfig, EncodeRequest

    node = PrototypeParticipant(NodeSettings("efficientnet-lite0", device="cpu"))
    config = EncodeConfig(target_dim=8, image_size=32, data="fashion-mnist", encoder="refined", refined="feedface00000000")
    with pytest.raises(RuntimeError, match="does not hold"):
        node.encode(EncodeRequest(config, ids=np.arange(4, dtype=np.int64)))


def test_a_participant_brings_a_new_prototype_at_round_two(tmp_path, fashion):
    """round-prototypes: the round re-scores and re-aligns with the new prototype, and the
    summary says who changed what."""
    from coopt_flower.engine import prototype_participants

    torch.set_num_threads(1)
    s = tiny(tmp_path, refinement="static", **{"train-epochs": 0,
                                               "round-prototypes": "2=efficientnet-lite1,efficientnet-lite0"})
    assert s.prototypes_for_round(1) == ["random:efficientnet-lite0", "efficientnet-lite0"]
    assert s.prototypes_for_round(2) == ["efficientnet-lite1", "efficientnet-lite0"]
    state = run_rounds_in_process(s, fashion, prototype_participants(s))
    second = json.loads((progress.round_dir(s.output_dir, 2) / "manifest.json").read_text())
    assert [p["prototype"] for p in second["participants"]] == ["efficientnet-lite1", "efficientnet-lite0"]
    first = state["rounds"]["1"]["participants"]
    assert first[0]["uniform_value"] != second["participants"][0]["uniform_value"]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "- round 2: p0 changed `random:efficientnet-lite0` -> `efficientnet-lite1`" in summary


@pytest.mark.parametrize("value, words", [
    ("1=a,b", "R from 2 to num-server-rounds"), ("3=a,b", "R from 2 to num-server-rounds"),
    ("2=a", "names 1 prototypes, prototypes has 2"), ("2=a,b;2=a,b", "round 2 twice"), ("x", "expected R=spec")])
def test_bad_round_prototypes_get_one_line(value, words):
    with pytest.raises(ConfigError, match=words):
        RunSettings.from_run_config({"prototypes": "a,b", "num-server-rounds": 2, "refinement": "static",
                                     "round-prototypes": value, "output-dir": "/tmp/x"})


def test_preflight_names_round_prototypes_for_an_unknown_spec(tmp_path):
    from coopt_flower.preflight import check_prototypes

    s = RunSettings.from_run_config({"prototypes": "efficientnet-lite0", "num-server-rounds": 2,
                                     "refinement": "static", "round-prototypes": "2=no-such-net",
                                     "output-dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="^round-prototypes: "):
        check_prototypes(s)
