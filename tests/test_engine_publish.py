"""The publish phase (coopt_flower.engine.publish): the reference's spec, the exposed head, the
manifest a round writes, and a round published atomically."""

import json

import numpy as np

from coopt_flower.alignment import AlignmentMap
from coopt_flower.data import open_source
from coopt_flower.dataset_format import read_manifest
from coopt_flower.engine import run_in_process
from coopt_flower.engine.enrollment import Participant
from coopt_flower.engine.plan import AlignmentPlan
from coopt_flower.engine.publish import exposed_head, reference_prototype
from tests.test_engine_round import LinearParticipant, settings


def plan(reference, values):
    return AlignmentPlan(values, reference, {n: AlignmentMap.identity(2) for n in values if n != "student"})


def test_the_reference_prototype_names_the_student_when_its_space_is_the_students():
    people = [Participant("p0", 0, prototype="a"), Participant("p1", 1, prototype="b", encoder="student")]
    student = ({}, {"digest": "ab12"})
    assert reference_prototype(plan("p0", {"p0": -2.0, "p1": -1.0}), people, student) == "a"
    assert reference_prototype(plan("p1", {"p0": -2.0, "p1": -1.0}), people, student) == "student:ab12"
    assert reference_prototype(plan("student", {"p0": -2.0, "p1": -1.0, "student": -3.0}), people,
                               student) == "student:ab12"


def test_the_exposed_head_is_the_reference_or_the_most_uniform_participant():
    assert exposed_head(plan("p1", {"p0": -2.0, "p1": -1.0}), ["p0", "p1"]) == "p1"
    assert exposed_head(plan("student", {"p0": -1.0, "p1": -2.5, "student": -3.0}), ["p0", "p1"]) == "p1"


def test_a_published_round_holds_its_manifest_report_plots_and_shared_embeddings(tmp_path):
    fashion = open_source("fashion-mnist")
    result = run_in_process(settings(tmp_path), fashion, [LinearParticipant(fashion, i) for i in range(3)])
    path = result.dataset_path
    manifest = read_manifest(path)
    assert manifest.participant_names == ["p0", "p1", "p2"] and manifest.files.keys() >= {"targets.npy"}
    assert manifest.plots == [] and manifest.dataset_path == ""  # report-only keys stay out
    report = json.loads((path / "report.json").read_text())
    assert report["dataset_path"] == str(path) and report["plots"] and "shared_ids" not in report
    assert all((path / name).is_file() for name in report["plots"])
    shared = np.load(path / "shared_embeddings.npy")
    assert shared.shape == (3, len(manifest.shared_ids), 16)
    assert not list(tmp_path.glob("out/.round-001.*"))  # the temporary directory was renamed
