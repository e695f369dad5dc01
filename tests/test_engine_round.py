"""The Flower-free round engine (coopt_flower.engine.round), driven in-process: the product's round
without Flower."""

import json

import numpy as np
import pytest
import torch

from coopt_flower.config import RunSettings
from coopt_flower.data import open_source, select_samples
from coopt_flower.dataset_format import load_optimized_dataset
from coopt_flower.participant import NodeSettings, PrototypeParticipant
from coopt_flower.protocol import Description, EncodeReply, pixels_digest
from coopt_flower.engine import RoundFailed, run_in_process
from simulations.check_identical import TINY_RUN_CONFIG, compare


@pytest.fixture(scope="module")
def fashion():
    return open_source("fashion-mnist")


class LinearParticipant:
    """Targets = a fixed random linear map of the pixels; misbehaves on request."""

    def __init__(self, source, index, fault=None, fault_page=1, name_prefix="linear"):
        self.source, self.index, self.fault, self.fault_page = source, index, fault, fault_page
        self.name = f"{name_prefix}-{index}"
        self.pages = 0

    def describe(self, config):
        return Description(prototype=self.name, output_dim=16, partition_id=self.index)

    def encode(self, request, student=None):
        images = request.pixels if request.pixels is not None else self.source.images(request.ids)
        weight = np.random.default_rng(self.index).normal(size=(images[0].size, request.config.target_dim))
        targets = (images.reshape(len(images), -1) / 255.0) @ weight
        ids = np.full(len(images), -1) if request.ids is None else request.ids.copy()
        digest = pixels_digest(request.pixels) if request.pixels is not None else ""
        if request.ids is not None:
            self.pages += 1
            if self.pages == self.fault_page:
                if self.fault == "raise":
                    raise RuntimeError("disk on fire")
                if self.fault == "nan":
                    targets[0, 0] = np.nan
        if request.pixels is not None and self.fault == "shared":
            digest = "0" * 64
        return EncodeReply(targets=targets.astype(np.float32), ids=ids, encode_seconds=0.1,
                           num_images=len(images), prototype=self.name, pixels_sha256=digest)


def settings(tmp_path, **overrides):
    values = {"prototypes": "a,b,c", "num-samples": 300, "shared-size": 32, "target-dim": 16,
              "page-size": 40, "seed": 1, "output-dir": str(tmp_path / "out"), **overrides}
    return RunSettings.from_run_config(values)


def test_in_process_round_equals_the_recorded_flower_run(tmp_path, fashion):
    """PrototypeParticipants in this process give the very bytes `flwr run .` gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        s = RunSettings.from_run_config(dict(TINY_RUN_CONFIG, **{"output-dir": str(tmp_path / "out")}))
        participants = [PrototypeParticipant(NodeSettings(spec, device="cpu", partition_id=i))
                        for i, spec in enumerate(s.prototypes)]
        result = run_in_process(s, fashion, participants)
    finally:
        torch.set_num_threads(threads)
    assert compare(result.dataset_path) == []
    assert [p.prototype for p in result.manifest.participants] == s.prototypes


def test_every_sample_once_and_reference_rows_unaligned(tmp_path, fashion):
    s = settings(tmp_path)
    result = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    ds = load_optimized_dataset(result.dataset_path)
    assert np.array_equal(ds.sample_ids, select_samples(len(fashion), 300, 1))
    assert np.bincount(np.asarray(ds.owners)).tolist() == [100, 100, 100]
    assert result.manifest.missing_samples == 0 and not result.failures
    names = result.manifest.participant_names
    plan = result.plan.alignment
    assert names == ["p0", "p1", "p2"] and plan.reference in names
    assert plan.maps[plan.reference].is_identity
    assert json.loads((result.dataset_path / "report.json").read_text())["reference"] == plan.reference


@pytest.mark.parametrize("partitioner", ["dirichlet:0.1", "classes:2"])
def test_a_non_iid_round_records_who_holds_which_classes(tmp_path, fashion, partitioner):
    s = settings(tmp_path, partitioner=partitioner)
    result = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    ds = load_optimized_dataset(result.dataset_path)
    report = json.loads((result.dataset_path / "report.json").read_text())
    counts = {p["name"]: p["label_counts"] for p in report["participants"]}
    owners = np.asarray(ds.owners)
    labels = fashion.labels(ds.sample_ids)
    for k, name in enumerate(result.manifest.participant_names):  # each owner's rows are its shard
        assert np.bincount(labels[owners == k], minlength=10).tolist() == counts[name]
    assert result.manifest.missing_samples == 0 and report["settings"]["partitioner"] == partitioner
    assert "labels_per_participant.png" in report["plots"]
    assert f"partition of the samples among participants: `{partitioner}`" in \
        (result.dataset_path / "report.md").read_text()


@pytest.mark.parametrize("fault, step", [("raise", "optimize"), ("nan", "optimize")])
def test_a_failed_page_is_refused_and_reassigned(tmp_path, fashion, fault, step):
    s = settings(tmp_path)
    participants = [LinearParticipant(fashion, 0), LinearParticipant(fashion, 1, fault=fault, fault_page=2),
                    LinearParticipant(fashion, 2)]
    result = run_in_process(s, fashion, participants)
    ds = load_optimized_dataset(result.dataset_path)
    assert len(ds) == 300 and result.manifest.missing_samples == 0
    [failure] = result.failures
    assert failure.participant == "p1" and failure.step == step
    assert ("disk on fire" if fault == "raise" else "NaN") in failure.reason
    # p1 merged its first page only; the rest of its shard went to the others.
    assert np.bincount(np.asarray(ds.owners)).tolist()[1] == 40
    assert failure.samples_affected == 60 and failure.action.startswith("reassigned")


def test_drop_lists_exactly_the_unfinished_samples(tmp_path, fashion):
    s = settings(tmp_path, **{"on-failure": "drop"})
    participants = [LinearParticipant(fashion, 0), LinearParticipant(fashion, 1, fault="raise", fault_page=1),
                    LinearParticipant(fashion, 2)]
    result = run_in_process(s, fashion, participants)
    ds = load_optimized_dataset(result.dataset_path)
    assert len(ds) == 200 and result.manifest.missing_samples == 100
    missing = np.array(result.manifest.missing_sample_ids)
    assert not np.isin(missing, ds.sample_ids).any()


def test_too_few_participants_fail_the_round_and_publish_nothing(tmp_path, fashion):
    s = settings(tmp_path, **{"min-participants": 3})
    participants = [LinearParticipant(fashion, 0), LinearParticipant(fashion, 1, fault="shared"),
                    LinearParticipant(fashion, 2)]
    with pytest.raises(RoundFailed, match="after the shared subset only 2 participant"):
        run_in_process(s, fashion, participants)
    assert not (tmp_path / "out" / "round-001").exists()
    assert not list((tmp_path / "out").glob(".round-001.tmp-*"))  # nothing half-written either


def test_without_alignment_every_map_is_the_identity(tmp_path, fashion):
    s = settings(tmp_path)
    aligned = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    s2 = settings(tmp_path / "unaligned")
    unaligned = run_in_process(s2, fashion, [LinearParticipant(fashion, i) for i in range(3)], merge="none")
    assert all(m.is_identity for m in unaligned.plan.alignment.maps.values())
    assert aligned.plan.alignment.reference == unaligned.plan.alignment.reference
    assert unaligned.manifest.merge == "none" and load_optimized_dataset(unaligned.dataset_path).merge == "none"
    a, u = load_optimized_dataset(aligned.dataset_path), load_optimized_dataset(unaligned.dataset_path)
    ref = aligned.manifest.participant_names.index(aligned.plan.alignment.reference)
    rows = np.asarray(a.owners) == ref
    np.testing.assert_array_equal(np.asarray(a.targets)[rows], np.asarray(u.targets)[rows])
    assert not np.array_equal(np.asarray(a.targets)[~rows], np.asarray(u.targets)[~rows])


def test_an_existing_round_is_not_overwritten_unless_asked(tmp_path, fashion):
    s = settings(tmp_path)
    run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])


class StudentEchoParticipant(LinearParticipant):
    """Returns the student's embeddings of S as 'computed' with its precision (noise), or
    claims other student weights."""

    def __init__(self, source, index, precision="fp32", device="cpu", noise=0.0, digest=None):
        super().__init__(source, index)
        self.precision, self.device, self.noise, self.digest = precision, device, noise, digest

    def describe(self, config):
        info = super().describe(config)
        info.precision, info.device = self.precision, self.device
        return info

    def encode(self, request, student=None):
        reply = super().encode(request, student)
        if request.pixels is not None and request.student is not None:
            clean = LinearParticipant(self.source, 99).encode(request).targets  # the "student"
            noise = np.random.default_rng(self.index).normal(size=clean.shape).astype(np.float32)
            scale = self.noise * np.linalg.norm(clean) / np.linalg.norm(noise)
            reply.extra["student-targets"] = clean + scale * noise
            reply.student_digest = self.digest or request.student[1]["digest"]
        return reply


def _student_round(tmp_path, fashion, participants):
    s = settings(tmp_path, **{"refinement": "join", "num-server-rounds": 2, "train-epochs": 1})
    student = ({"w": np.ones(3, np.float32)}, {"digest": "abc123", "arch": "small-cnn"})
    return run_in_process(s, fashion, participants, student=student)


def test_a_bf16_node_agrees_with_a_cpu_node_on_the_students_embeddings(tmp_path, fashion):
    result = _student_round(tmp_path, fashion, [
        StudentEchoParticipant(fashion, 0),
        StudentEchoParticipant(fashion, 1, precision="bf16", device="cuda", noise=0.01),
        StudentEchoParticipant(fashion, 2, device="cuda", noise=0.004)])  # TF32-like
    assert not result.failures and "student" in result.plan.alignment.uniform_values


def test_a_corrupted_student_is_still_refused(tmp_path, fashion):
    result = _student_round(tmp_path, fashion, [
        StudentEchoParticipant(fashion, 0),
        StudentEchoParticipant(fashion, 1, precision="bf16", device="cuda", noise=0.3),
        StudentEchoParticipant(fashion, 2, digest="ffff000011112222")])
    reasons = {f.participant: f.reason for f in result.failures}
    assert set(reasons) == {"p1", "p2"}
    assert "differ from the other participants' by 30.0% (tolerance 5.0% for bf16 on cuda)" in reasons["p1"]
    assert "other student weights than were sent (digest ffff000011112222 instead of abc123)" in reasons["p2"]


@pytest.mark.parametrize("merge, score", [("align-procrustes", "rankme"), ("align-cca", "consensus")])
def test_merge_and_reference_score_reach_the_plan_and_the_report(tmp_path, fashion, merge, score):
    s = settings(tmp_path, merge=merge, **{"reference-score": score})
    result = run_in_process(s, fashion, [LinearParticipant(fashion, i) for i in range(3)])
    plan = result.plan.alignment
    assert plan.merge == merge and plan.reference_score == score
    best = max(sorted(plan.scores[score]), key=lambda name: plan.scores[score][name])
    assert plan.reference == best
    assert {m.method for n, m in plan.maps.items() if n != plan.reference} == {merge}
    summary = json.loads((result.dataset_path / "report.json").read_text())
    assert summary["merge"] == merge and summary["reference_score"] == score
    assert set(summary["scores"]) == {"uniform", "rankme", "consensus", "knn"}
    report = (result.dataset_path / "report.md").read_text()
    assert f"merge: `{merge}`" in report and f"highest {score} score" in report
    assert f"{score} (picks)" in report


def test_an_unknown_merge_or_score_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="merge must be one of align-ridge, align-procrustes"):
        settings(tmp_path, merge="average")
    with pytest.raises(ValueError, match="reference-score must be one of uniform, rankme"):
        settings(tmp_path, **{"reference-score": "vibes"})
